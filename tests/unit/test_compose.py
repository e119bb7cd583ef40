"""docker-compose.yml, checked without a Docker engine: it parses, uses only Compose fields (the
subset of the Compose Specification this project needs, written down here), every reference
resolves within each profile (demo and production), the start order is migrate -> web and worker,
no secret is written in it, the demo starts with no .env at all, and production has TLS in front,
a worker health check that can fail, and a database container that sees none of the app's secrets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from helpers.infra.settings import BY_NAME, COMPOSE_ONLY

ROOT = Path(__file__).resolve().parents[2]
TOP = {"name", "services", "volumes", "networks", "secrets", "configs"}
SERVICE = {"image", "build", "command", "entrypoint", "environment", "env_file", "ports", "volumes", "depends_on",
           "healthcheck", "restart", "stop_grace_period", "networks", "secrets", "user", "working_dir", "profiles"}
HEALTHCHECK = {"test", "interval", "timeout", "retries", "start_period", "disable"}
ENV_FILE = {"path", "required", "format"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
RESTART = {"no", "always", "on-failure", "unless-stopped"}
DURATION = re.compile(r"^\d+(ms|s|m|h)$")
PORT = re.compile(r"^(\$\{[A-Z_]+:-\d+\}|\d+):\d+(/(tcp|udp))?$")
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)([^}]*)\}")
SECRET_NAMES = ("PEPPER", "PASSWORD", "TOKEN", "KEY", "SECRET", "MACAROON", "CREDENTIAL")
PROFILES = ("demo", "production")


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def interpolated(env: dict[str, str]) -> dict:
    """The file as Compose reads it with `env` as the only variables (.env or the shell): `${X:-d}`
    and `${X-d}` take their default, `${X:?msg}` fails like Compose, a bare `${X}` becomes empty."""
    def one(match: re.Match) -> str:
        name, how = match.group(1), match.group(2)
        value = env.get(name)
        if how.startswith(":?") and not value:
            raise LookupError(f"required variable {name} is missing a value")
        if how.startswith(":-"):
            return value or how[2:]
        if how.startswith("-"):
            return how[1:] if value is None else value
        return value or ""

    return yaml.safe_load(VARIABLE.sub(one, (ROOT / "docker-compose.yml").read_text()))


def enabled(doc: dict, profile: str) -> dict:
    """The services `docker compose --profile <profile>` starts (those without profiles always do)."""
    return {name: service for name, service in doc["services"].items()
            if not service.get("profiles") or profile in service["profiles"]}


def validate(doc: dict, services: dict) -> None:
    """The Compose fields this project uses, and every reference inside the profile's services."""
    assert set(doc) - TOP <= {key for key in doc if key.startswith("x-")}
    volumes = set(doc.get("volumes") or {})
    for name, service in services.items():
        assert set(service) <= SERVICE, (name, set(service) - SERVICE)
        assert "image" in service or "build" in service, name
        assert str(service.get("restart", "no")) in RESTART, name
        assert all(isinstance(profile, str) for profile in service.get("profiles", [])), name
        for dependency, how in (service.get("depends_on") or {}).items():
            assert dependency in services and how["condition"] in CONDITIONS, (name, dependency)
        check = service.get("healthcheck")
        if check:
            assert set(check) <= HEALTHCHECK and check["test"][0] in ("CMD", "CMD-SHELL"), name
            assert all(DURATION.match(str(check[key])) for key in ("interval", "timeout", "start_period")
                       if key in check), name
        for mount in service.get("volumes") or []:
            source = mount.split(":")[0]
            assert source.startswith((".", "/")) or source in volumes, (name, source)
            assert not source.startswith(".") or (ROOT / source).exists(), (name, source)
        for port in service.get("ports") or []:
            assert PORT.match(str(port)), (name, port)
        for env_file in service.get("env_file") or []:
            assert isinstance(env_file, dict) and set(env_file) <= ENV_FILE and env_file["path"] == ".env", name
        assert all(isinstance(value, str) for value in (service.get("environment") or {}).values()), name


@pytest.mark.parametrize("profile", PROFILES)
def test_each_profile_parses_and_validates(profile):
    doc = compose()
    services = enabled(doc, profile)
    assert {"migrate", "web", "worker"} <= {name.removeprefix(f"{profile}-") for name in services}, services
    validate(doc, services)
    assert not set(enabled(doc, "demo")) & set(enabled(doc, "production"))  # one profile never starts the other's


def test_the_demo_starts_with_no_env_file_and_the_embedded_defaults():
    """No .env, no variable set: Compose reads the whole file (every profile), so no variable may be
    required; the demo's services read no .env and run the development defaults."""
    doc = interpolated({})
    services = enabled(doc, "demo")
    for name, service in services.items():
        assert "env_file" not in service, name
        environment = service.get("environment") or {}
        assert "APP_ENV" not in environment and "DATABASE_URL" not in environment, name  # embedded SQLite
        assert not {"LIGHTNING_BACKEND", "MPESA_PROVIDER", "PIN_PEPPER"} & set(environment), name
    assert BY_NAME["LIGHTNING_BACKEND"].default == "mock" and BY_NAME["MPESA_PROVIDER"].default == "simulated"
    assert services["demo-web"]["ports"] == ["8000:8000"]
    assert interpolated({"WEB_PORT": "9000"})["services"]["demo-web"]["ports"] == ["9000:8000"]


def test_migrate_runs_once_before_web_and_worker_and_the_database_is_healthy_first():
    services = compose()["services"]
    for prefix in ("", "demo-"):
        assert services[f"{prefix}migrate"]["restart"] == "no"
        assert services[f"{prefix}migrate"]["command"][-1] == "db-upgrade"
        for name in (f"{prefix}web", f"{prefix}worker"):
            migrate = {f"{prefix}migrate": {"condition": "service_completed_successfully"}}
            assert services[name]["depends_on"] == migrate
            assert services[name]["environment"]["WORKER_IN_PROCESS"] == "0"
        assert services[f"{prefix}worker"]["command"][-1] == "worker"
        assert "/health" in " ".join(services[f"{prefix}web"]["healthcheck"]["test"])  # not /ready: a node
        # outage must not take the only web container (and the proxy behind its health) down
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    for name in ("migrate", "web", "worker"):
        assert services[name]["environment"]["APP_ENV"] == "production"


def test_a_port_in_env_does_not_move_the_web_server_away_from_its_mapping_and_health_check():
    for name in ("web", "demo-web"):
        web = compose()["services"][name]
        assert web["environment"]["PORT"] == "8000"  # wins over .env's PORT (env_file) and the image's
        assert "127.0.0.1:8000/health" in " ".join(web["healthcheck"]["test"])
        assert all(str(port).endswith(":8000") for port in web.get("ports", []))


def test_production_terminates_tls_in_front_of_the_web_service():
    services = enabled(interpolated({"PUBLIC_URL": "https://wallet.example.com"}), "production")
    proxy = services["proxy"]
    assert proxy["image"].startswith("caddy:")
    assert {"80:80", "443:443"} <= set(proxy["ports"])
    assert proxy["environment"] == {"PUBLIC_URL": "https://wallet.example.com"}
    caddyfile = (ROOT / "deploy" / "Caddyfile").read_text()
    site = next(line for line in caddyfile.splitlines() if line.strip() and not line.startswith("#"))
    assert site.startswith("{$PUBLIC_URL") and "reverse_proxy web:8000" in caddyfile
    assert "tls internal" not in caddyfile  # the certificate comes from a public CA (automatic HTTPS)
    assert "./deploy/Caddyfile:/etc/caddy/Caddyfile:ro" in proxy["volumes"]
    assert "ports" not in services["web"]  # nothing reaches gunicorn but through the proxy
    assert services["web"]["environment"]["TRUSTED_PROXY_COUNT"] == "1"


def test_the_worker_health_check_reads_the_heartbeat_the_worker_writes():
    services = compose()["services"]
    for name in ("worker", "demo-worker"):
        worker = services[name]
        assert worker["healthcheck"]["test"][:4] == ["CMD", "python", "-m", "helpers.infra.heartbeat"]
        assert "os.kill" not in " ".join(worker["healthcheck"]["test"])
        assert worker["environment"]["WORKER_HEARTBEAT_FILE"] == "/home/app/worker.heartbeat"  # the image user's
    assert "WORKER_HEARTBEAT_FILE" in BY_NAME  # a declared setting the worker reads


def test_the_database_container_gets_only_its_own_variables():
    db = compose()["services"]["db"]
    assert "env_file" not in db
    assert all(key.startswith("MARIADB_") for key in db["environment"])
    app = compose()["services"]["migrate"]
    assert "${MARIADB_PASSWORD" in app["environment"]["DATABASE_URL"]
    assert "MARIADB_PASSWORD" in {item.name for item in COMPOSE_ONLY}  # so .env.example lists it


def test_the_commands_it_runs_exist(app):
    commands = set(app.cli.list_commands(None))
    for service in compose()["services"].values():
        command = service.get("command") or []
        if command[:3] == ["flask", "--app", "app"]:
            assert command[3] in commands, command


def test_no_secret_is_written_in_it():
    text = (ROOT / "docker-compose.yml").read_text()
    assert not re.search(r"\$\{[A-Z_]+:?\?", text)  # a required variable would stop the demo too
    for name, service in compose()["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if any(word in key for word in SECRET_NAMES) and key != "MARIADB_RANDOM_ROOT_PASSWORD":
                assert str(value).startswith("${"), (name, key)  # from .env, never inline
            if "://" in str(value) and "@" in str(value):  # a URL with credentials: the password from .env
                assert re.search(r":\$\{[A-Z_]+[^}]*\}@", str(value)), (name, key)
        if "production" in service.get("profiles", []) and service.get("image", "").startswith("${WALLET_IMAGE"):
            assert service["env_file"][0]["path"] == ".env", name


def test_the_proxy_checks_liveness_not_readiness():
    """Caddy's active health check on its only upstream: /ready answers 503 while the node does
    not answer, and Caddy would then refuse every request (USSD, callbacks, console)."""
    caddyfile = (ROOT / "deploy" / "Caddyfile").read_text()
    assert "health_uri /health" in caddyfile and "/ready" not in caddyfile.split("{", 1)[1]


def test_the_database_container_refuses_to_start_without_a_password(tmp_path):
    """MariaDB makes its user only on an empty volume's first start, and only with a password:
    the container's entrypoint refuses an empty one before the volume is initialised."""
    import os
    import subprocess

    entry = compose()["services"]["db"]["entrypoint"]
    script = entry[2].replace("$$", "$")  # what compose hands the shell
    fake = tmp_path / "docker-entrypoint.sh"  # stands for the image's own entrypoint
    fake.write_text('#!/bin/sh\necho "started: $*"\n')
    fake.chmod(0o755)
    command = compose()["services"]["db"]["command"]
    env = {"PATH": f"{tmp_path}:{os.environ['PATH']}"}
    refused = subprocess.run([entry[0], entry[1], script, entry[3], *command], capture_output=True, text=True,  # noqa: S603
                             env={**env, "MARIADB_PASSWORD": ""}, timeout=10)
    assert refused.returncode == 1 and "MARIADB_PASSWORD is empty" in refused.stderr and refused.stdout == ""
    started = subprocess.run([entry[0], entry[1], script, entry[3], *command], capture_output=True, text=True,  # noqa: S603
                             env={**env, "MARIADB_PASSWORD": "s3cret"}, timeout=10)
    assert started.returncode == 0 and started.stdout.strip() == "started: " + " ".join(command)


def test_every_virtualenv_the_makefile_makes_stays_out_of_the_image():
    import re

    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    makefile = (ROOT / "Makefile").read_text()
    venvs = set(re.findall(r"^(?:VENV|LNBITS_VENV) \?= (\S+)", makefile, re.MULTILINE))
    venvs |= set(re.findall(r"python3? -m venv (\.[\w-]+)", makefile))
    assert {".venv", ".lnbits-venv"} <= venvs and venvs <= ignored
