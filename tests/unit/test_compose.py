"""docker-compose.yml, checked without a Docker engine: it parses, uses only Compose fields (the
subset of the Compose Specification this project needs, written down here), every reference
resolves, the start order is migrate -> web and worker, and no secret is written in it."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
TOP = {"name", "services", "volumes", "networks", "secrets", "configs"}
SERVICE = {"image", "build", "command", "entrypoint", "environment", "env_file", "ports", "volumes", "depends_on",
           "healthcheck", "restart", "stop_grace_period", "networks", "secrets", "user", "working_dir"}
HEALTHCHECK = {"test", "interval", "timeout", "retries", "start_period", "disable"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
RESTART = {"no", "always", "on-failure", "unless-stopped"}
DURATION = re.compile(r"^\d+(ms|s|m|h)$")
SECRET_NAMES = ("PEPPER", "PASSWORD", "TOKEN", "KEY", "SECRET", "MACAROON", "CREDENTIAL")


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_only_compose_fields_and_every_reference_resolves():
    doc = compose()
    assert set(doc) - TOP <= {key for key in doc if key.startswith("x-")}
    services, volumes = doc["services"], set(doc.get("volumes") or {})
    for name, service in services.items():
        assert set(service) <= SERVICE, (name, set(service) - SERVICE)
        assert "image" in service or "build" in service, name
        assert str(service.get("restart", "no")) in RESTART, name
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


def test_migrate_runs_once_before_web_and_worker_and_the_database_is_healthy_first():
    services = compose()["services"]
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    for name in ("web", "worker"):
        assert services[name]["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
        assert services[name]["environment"]["WORKER_IN_PROCESS"] == "0"
        assert services[name]["environment"]["APP_ENV"] == "production"
    assert services["worker"]["command"][-1] == "worker"
    assert "/ready" in " ".join(services["web"]["healthcheck"]["test"])


def test_the_commands_it_runs_exist(app):
    commands = set(app.cli.list_commands(None))
    for service in compose()["services"].values():
        command = service.get("command") or []
        if command[:3] == ["flask", "--app", "app"]:
            assert command[3] in commands, command


def test_no_secret_is_written_in_it():
    for name, service in compose()["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if any(word in key for word in SECRET_NAMES) and key != "MARIADB_RANDOM_ROOT_PASSWORD":
                assert str(value).startswith("${"), (name, key)  # from .env, never inline
            if "://" in str(value) and "@" in str(value):  # a URL with credentials: the password from .env
                assert re.search(r":\$\{[A-Z_]+[^}]*\}@", str(value)), (name, key)
        assert service.get("env_file") == ".env", name
