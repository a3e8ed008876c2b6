"""Settings: parsed once from the environment; bad values are refused with a clear message."""

from datetime import timedelta

import pytest

from orders_svc.settings import Settings, SettingsError


def test_defaults_need_no_environment():
    settings = Settings.from_env({})
    assert settings.database_url is None
    assert settings.idempotency_ttl == timedelta(hours=1)
    assert settings.auth_mode == "dev"
    assert settings.log_format == "json"
    assert (settings.pool_min, settings.pool_max) == (2, 32)  # a connection per request in flight, up to 32


def test_values_are_read_from_the_environment():
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://u@h/db",
            "ORDERS_POOL_MIN": "1",
            "ORDERS_POOL_MAX": "4",
            "ORDERS_IDEMPOTENCY_TTL_SECONDS": "60",
            "ORDERS_AUTH_MODE": "jwt",
            "ORDERS_JWT_SECRET": "s3cret",
            "ORDERS_LOG_FORMAT": "text",
        }
    )
    assert settings.database_url == "postgresql://u@h/db"
    assert (settings.pool_min, settings.pool_max) == (1, 4)
    assert settings.idempotency_ttl == timedelta(seconds=60)
    assert settings.jwt_algorithms == ("HS256",)
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ORDERS_POOL_MAX": "many"}, "ORDERS_POOL_MAX='many' is not an integer"),
        ({"ORDERS_POOL_MAX": "0"}, "ORDERS_POOL_MAX=0 is outside"),
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
