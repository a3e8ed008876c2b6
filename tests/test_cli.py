"""The command line as a user runs it: embedded serve, migrate, yoyo apply, help, version and bad input."""

import os
import shutil
import signal
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest

import orders_svc
from orders_svc.migrate import yoyo_uri
from orders_svc.resources import migrations_dir
from orders_svc.settings import variables

from conftest import free_port, public_tables, wait_until_ready

CLI = [sys.executable, "-m", "orders_svc.cli"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL" and not k.startswith("ORDERS_")}
    return {**env, "ORDERS_LOG_LEVEL": "WARNING", **extra}


def _serve(data_dir: Path, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [*CLI, "serve", "--port", str(port)],
            env=_env(ORDERS_DATA_DIR=str(data_dir)),
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=30)


def test_serve_without_database_url_runs_on_an_embedded_postgres_that_keeps_its_data(tmp_path):
    data_dir, port, log_path = tmp_path / "data", free_port(), tmp_path / "serve.log"
    base = f"http://127.0.0.1:{port}"
    headers = {"X-Tenant-Id": "cli", "Idempotency-Key": "k"}

    proc = _serve(data_dir, port, log_path)
    try:
        wait_until_ready(base, proc, log_path, timeout=90)
        created = httpx.post(f"{base}/orders", headers=headers, content=b"{}")
        assert created.status_code == 201
    finally:
        assert _stop(proc) == 0, log_path.read_text()
    assert not (data_dir / "pg" / "postmaster.pid").exists(), "embedded PostgreSQL left running"

    proc = _serve(data_dir, port, log_path)
    try:
        wait_until_ready(base, proc, log_path, timeout=90)
        again = httpx.get(f"{base}{created.headers['location']}", headers={"X-Tenant-Id": "cli"})
        assert again.status_code == 200
        assert again.json()["id"] == created.json()["id"]
    finally:
        assert _stop(proc) == 0, log_path.read_text()


async def test_migrate_applies_the_schema_to_database_url(empty_database_url):
    subprocess.run([*CLI, "migrate"], env=_env(DATABASE_URL=empty_database_url), check=True, timeout=60)
    assert {"orders", "outbox", "idempotency_keys"} <= await public_tables(empty_database_url)


async def test_yoyo_apply_reads_the_same_migrations(empty_database_url):
    yoyo = shutil.which("yoyo", path=str(Path(sys.executable).parent))
    assert yoyo is not None
    subprocess.run(
        [yoyo, "apply", "--batch", "--database", yoyo_uri(empty_database_url), str(migrations_dir())],
        env=_env(),
        check=True,
        timeout=60,
        capture_output=True,
    )
    assert {"orders", "outbox", "idempotency_keys"} <= await public_tables(empty_database_url)


def test_a_bad_setting_stops_the_service_with_a_clear_message():
    result = subprocess.run(
        [*CLI, "serve"], env=_env(ORDERS_POOL_MAX="lots"), capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0
    assert "configuration error: ORDERS_POOL_MAX='lots' is not an integer" in result.stderr


def test_the_served_app_collects_cycles_rarely_and_freezes_its_startup_objects():
    """What uvicorn's workers run (app_from_env): young collections every 10,000 net allocations, not 700,
    and the objects alive at start-up moved out of the collector's way (gc.freeze)."""
    probe = (
        "import gc; from orders_svc.app import app_from_env; "
        "before = gc.get_threshold(); app_from_env(); "
        "print(before[0], gc.get_threshold()[0], gc.get_freeze_count())"
    )
    env = _env(DATABASE_URL="postgresql://nobody@127.0.0.1:1/none")  # the app connects only in its lifespan
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    before, after, frozen = map(int, out.stdout.split())
    assert (before, after) == (700, 10_000)
    assert frozen > 10_000


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=_env(COLUMNS="200", **env), capture_output=True, text=True, timeout=60
    )


def test_version_is_the_one_of_the_package_and_of_the_served_openapi(live_server):
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    expected = pyproject["project"]["version"]
    result = _run("--version")
    assert (result.returncode, result.stdout) == (0, f"orders-svc {expected}\n")
    assert version("orders-svc") == orders_svc.__version__ == expected
    assert httpx.get(f"{live_server}/openapi.json").json()["info"]["version"] == expected


@pytest.mark.parametrize(
    ("command", "options"),
    [
        (["serve"], {"--host": "ORDERS_HOST", "--port": "ORDERS_PORT", "--workers": "ORDERS_WORKERS"}),
        (["relay"], {"--publisher": "ORDERS_PUBLISHER"}),
        (["migrate"], {}),
        (["purge"], {}),
        (["outbox"], {}),
        (["outbox", "retry-dead"], {}),
        (["config"], {}),
    ],
)
def test_every_command_explains_itself_with_defaults_and_variables(command, options):
    result = _run(*command, "--help")
    assert result.returncode == 0, result.stderr
    usage, description, *_ = result.stdout.split("\n\n")
    assert usage.startswith(f"usage: orders-svc {' '.join(command)} ")
    assert description.strip().endswith("."), f"no description in {command} --help"
    for flag, name in options.items():
        variable = next(v for v in variables() if v.name == name)
        assert f"(default {variable.default_text}, env {name})" in result.stdout, (flag, result.stdout)


def test_help_works_whatever_the_environment_holds():
    result = _run("--help", ORDERS_PORT="abc")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: orders-svc")
    assert "serve" in result.stdout


def test_config_lists_every_variable_with_its_default():
    result = _run("config", ORDERS_POOL_MAX="lots")  # documentation, even with a bad environment
    assert result.returncode == 0, result.stderr
    for variable in variables():
        assert f"| `{variable.name}` | `{variable.default_text}` | {variable.help} |" in result.stdout


def _unwritable(tmp_path: Path) -> str:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    return str(blocker / "data")  # a directory under a regular file cannot be made, not even by root


@pytest.mark.parametrize(
    ("args", "env", "code", "message"),
    [
        (["serve", "--port", "99999"], {}, 2, "orders-svc serve: argument --port: 99999 is outside 1..65535"),
        (["serve", "--port", "http"], {}, 2, "orders-svc serve: argument --port: 'http' is not an integer"),
        (["serve", "--workers", "0"], {}, 2, "orders-svc serve: argument --workers: 0 is outside 1..64"),
        (["relay", "--publisher", "kafka"], {}, 2, "argument --publisher: 'kafka' must be one of log, nats"),
        (["serve", "--prot", "1"], {}, 2, "orders-svc: unrecognized arguments: --prot 1"),
        ([], {}, 2, "orders-svc: the following arguments are required: COMMAND"),
        (
            ["serve"],
            {"ORDERS_PORT": "abc"},
            2,
            "orders-svc: configuration error: ORDERS_PORT='abc' is not an integer",
        ),
        (["serve"], {"ORDERS_WORKERS": "0"}, 2, "configuration error: ORDERS_WORKERS=0 is outside 1..64"),
        (
            ["migrate"],
            {"DATABASE_URL": "garbage"},
            2,
            "orders-svc: configuration error: DATABASE_URL='garbage' must look like postgresql://",
        ),
        (
            ["purge"],
            {"DATABASE_URL": "postgresql://u:pw@127.0.0.1:port/x"},
            2,
            "DATABASE_URL='postgresql://u:***@127.0.0.1:port/x' is not a usable URL",
        ),
        (
            ["migrate"],
            {"ORDERS_DATA_DIR": "/proc/x"},
            1,
            "orders-svc migrate: ORDERS_DATA_DIR='/proc/x' is not a",
        ),
    ],
)
def test_bad_input_is_one_line_naming_the_problem(args, env, code, message):
    result = _run(*args, **env)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    "command", [["serve"], ["serve", "--migrate"], ["migrate"], ["relay", "--publisher", "log"], ["purge"]]
)
def test_an_unreachable_database_is_one_line_naming_it(command):
    dsn = f"postgresql://orders:secret@127.0.0.1:{free_port()}/orders"  # nothing listens there
    result = _run(*command, DATABASE_URL=dsn)
    assert result.returncode == 1, result.stderr
    line = f"orders-svc {command[0]}: database error at postgresql://orders:***@127.0.0.1:"
    assert result.stderr.startswith(line), result.stderr
    assert "refused" in result.stderr.lower()
    assert result.stderr.count("\n") == 1, result.stderr
    assert "secret" not in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize("command", [["serve"], ["migrate"], ["purge"]])
def test_an_unwritable_data_dir_is_one_line_naming_it(tmp_path, command):
    data_dir = _unwritable(tmp_path)
    result = _run(*command, ORDERS_DATA_DIR=data_dir)
    assert result.returncode == 1, result.stderr
    problem = "is not a writable directory: Not a directory"
    assert result.stderr == f"orders-svc {command[0]}: ORDERS_DATA_DIR={data_dir!r} {problem}\n"
    assert not result.stdout


def test_serve_listens_where_the_environment_says_unless_an_option_says_otherwise(database_url, tmp_path):
    from_env, from_option, log_path = free_port(), free_port(), tmp_path / "serve.log"
    for args, port in (([], from_env), (["--port", str(from_option)], from_option)):
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [*CLI, "serve", *args],
                env=_env(DATABASE_URL=database_url, ORDERS_PORT=str(from_env)),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_until_ready(f"http://127.0.0.1:{port}", proc, log_path)
        finally:
            assert _stop(proc) == 0, log_path.read_text()


def test_the_readme_lists_every_setting_as_orders_svc_config_prints_it():
    printed = subprocess.run(
        [sys.executable, "-m", "orders_svc.cli", "config"], capture_output=True, text=True, check=True
    ).stdout.strip()
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    listed = readme.split("<!-- orders-svc config -->\n", 1)[1].split("\n<!-- /orders-svc config -->", 1)[0]
    assert listed == printed
