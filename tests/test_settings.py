"""Settings: parsed once from the environment; bad values are refused with a clear message."""

from datetime import timedelta

import pytest

from orders_svc.settings import Settings, SettingsError, variables


def test_defaults_need_no_environment():
    settings = Settings.from_env({})
    assert settings.database_url is None
    assert settings.idempotency_ttl == timedelta(hours=1)
    assert settings.auth_mode == "dev"
    assert settings.log_format == "json"
    # Writes beyond ten wait in the service, in arrival order, rather than in PostgreSQL's scheduler and lock
    # queues; reads, which contend on nothing, may use the whole pool. Orders with items, which contend on
    # their products' rows, take stock eight at a time.
    assert (settings.pool_min, settings.pool_max, settings.pool_writers) == (2, 32, 10)
    assert settings.pool_stock_writers == 8


def test_values_are_read_from_the_environment():
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://u@h/db",
            "ORDERS_POOL_MIN": "1",
            "ORDERS_POOL_MAX": "4",
            "ORDERS_POOL_WRITERS": "3",
            "ORDERS_POOL_STOCK_WRITERS": "2",
            "ORDERS_IDEMPOTENCY_TTL_SECONDS": "60",
            "ORDERS_AUTH_MODE": "jwt",
            "ORDERS_JWT_SECRET": "s3cret",
            "ORDERS_LOG_FORMAT": "text",
        }
    )
    assert settings.database_url == "postgresql://u@h/db"
    assert (settings.pool_min, settings.pool_max, settings.pool_writers) == (1, 4, 3)
    assert settings.pool_stock_writers == 2
    assert settings.idempotency_ttl == timedelta(seconds=60)
    assert settings.jwt_algorithms == ("HS256",)
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ORDERS_POOL_MAX": "many"}, "ORDERS_POOL_MAX='many' is not an integer"),
        ({"ORDERS_POOL_MAX": "0"}, "ORDERS_POOL_MAX=0 is outside"),
        ({"ORDERS_POOL_WRITERS": "0"}, "ORDERS_POOL_WRITERS=0 is outside"),
        ({"ORDERS_POOL_STOCK_WRITERS": "0"}, "ORDERS_POOL_STOCK_WRITERS=0 is outside"),
        ({"ORDERS_POOL_MIN": "5", "ORDERS_POOL_MAX": "2"}, "exceeds ORDERS_POOL_MAX"),
        ({"ORDERS_AUTH_MODE": "open"}, "ORDERS_AUTH_MODE='open' must be one of dev, jwt"),
        ({"ORDERS_AUTH_MODE": "jwt"}, "needs exactly one of ORDERS_JWT_SECRET"),
        ({"ORDERS_AUTH_MODE": "jwt", "ORDERS_JWT_SECRET": "s", "ORDERS_JWT_ALGORITHMS": "RS256"}, "subset"),
        ({"ORDERS_LOG_LEVEL": "LOUD"}, "ORDERS_LOG_LEVEL='LOUD'"),
        ({"ORDERS_JWT_PUBLIC_KEY_FILE": "/nonexistent/key.pem"}, "ORDERS_JWT_PUBLIC_KEY_FILE"),
    ],
)
def test_bad_values_fail_fast_with_a_clear_message(env, message):
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Settings.from_env(env)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ORDERS_PORT": "99999"}, "ORDERS_PORT=99999 is outside 1..65535"),
        ({"ORDERS_WORKERS": "0"}, "ORDERS_WORKERS=0 is outside 1..64"),
        ({"ORDERS_PORT": "80.5"}, "ORDERS_PORT='80.5' is not an integer"),
        ({"DATABASE_URL": "garbage"}, "DATABASE_URL='garbage' must look like postgresql://"),
        (
            {"ORDERS_JWT_ALGORITHMS": "HS256,none"},
            "ORDERS_JWT_ALGORITHMS='HS256,none' must be a comma-separated",
        ),
        ({"ORDERS_PUBLISHER": "kafka"}, "ORDERS_PUBLISHER='kafka' must be one of log, nats"),
        (
            {"ORDERS_RELAY_BACKOFF_BASE_MS": "5000", "ORDERS_RELAY_BACKOFF_CAP_MS": "1000"},
            "ORDERS_RELAY_BACKOFF_BASE_MS=5000 exceeds ORDERS_RELAY_BACKOFF_CAP_MS=1000",
        ),
    ],
)
def test_each_message_names_the_variable_and_its_value_on_one_line(env, message):
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(env)
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)


def test_choices_match_whatever_their_case():
    settings = Settings.from_env(
        {
            "ORDERS_AUTH_MODE": "JWT",
            "ORDERS_JWT_SECRET": "s3cret",
            "ORDERS_JWT_ALGORITHMS": "hs256, HS512",
            "ORDERS_LOG_LEVEL": "debug",
            "ORDERS_LOG_FORMAT": "Text",
        }
    )
    assert (settings.auth_mode, settings.log_level, settings.log_format) == ("jwt", "DEBUG", "text")
    assert settings.jwt_algorithms == ("HS256", "HS512")


def test_durations_and_paths_keep_their_types(tmp_path):
    key = tmp_path / "key.pem"
    key.write_text("-----BEGIN PUBLIC KEY-----\n")
    settings = Settings.from_env(
        {
            "ORDERS_DATA_DIR": str(tmp_path),
            "ORDERS_RELAY_POLL_INTERVAL_MS": "250",
            "ORDERS_PURGE_INTERVAL_SECONDS": "30",
            "ORDERS_AUTH_MODE": "jwt",
            "ORDERS_JWT_PUBLIC_KEY_FILE": str(key),
        }
    )
    assert settings.data_dir == tmp_path
    assert settings.relay_poll_interval == timedelta(milliseconds=250)
    assert settings.purge_interval == timedelta(seconds=30)
    assert settings.jwt_public_key == "-----BEGIN PUBLIC KEY-----\n"
    assert settings.jwt_algorithms == ("RS256", "ES256")
    assert "BEGIN PUBLIC KEY" not in repr(settings)


def test_an_empty_variable_means_its_default():
    assert Settings.from_env({"ORDERS_POOL_MAX": "", "DATABASE_URL": ""}) == Settings.from_env({})


def test_every_variable_is_declared_once_with_a_default_that_reads_back():
    declared = variables()
    names = [variable.name for variable in declared]
    assert len(names) == len(set(names))
    assert all(variable.help for variable in declared)
    assert {
        "DATABASE_URL",
        "ORDERS_PORT",
        "ORDERS_HOST",
        "ORDERS_POOL_MAX",
        "ORDERS_JWT_PUBLIC_KEY_FILE",
    } <= set(names)
    # the documented default, given explicitly, is the same configuration as leaving the variable unset
    written = {v.name: v.default_text for v in declared if v.default_text != "unset"}
    assert Settings.from_env(written) == Settings.from_env({})
