"""The settings' one declaration (helpers/infra/settings.py): .env.example is written from it, the
defaults are one set, and every entry point refuses a bad value of any kind with one line that
names the setting and what is allowed (no traceback, exit status not 0)."""

from __future__ import annotations

import dataclasses
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.infra import setting_kinds
from helpers.infra.config import ConfigError, finalise, load_config
from helpers.infra.setting_kinds import Declared
from helpers.infra.settings import (B2C_COMMANDS, COMPOSE_ONLY, DECLARED, LIGHTNING_BACKENDS, MPESA_PROVIDERS,
                                    Settings)

ROOT = Path(__file__).resolve().parents[2]
# A value of each kind of check that the declaration must refuse.
BAD_FOR_CHECK = {setting_kinds.long_secret: "x", setting_kinds.phone_region: "ZZ",
                 setting_kinds.database_address: "postgresql://u:hunter2@h/d", setting_kinds.web_address: "ftp://x",
                 setting_kinds.listen_address: "not a host"}
BAD_FOR_KIND = {"whole": "five", "decimal": "fast", "flag": "maybe", "networks": "10.0.0.0/99"}


def env_example_writer():
    spec = importlib.util.spec_from_file_location("env_example", ROOT / "scripts" / "env_example.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bad_value(item: Declared) -> str | None:
    if item.choices:
        return "nonsense"
    if item.check:
        return BAD_FOR_CHECK[item.check]
    return BAD_FOR_KIND.get(item.kind)


REFUSABLE = [pytest.param(item, bad_value(item), id=item.name) for item in DECLARED
             if item.from_env and bad_value(item) is not None]


def test_the_committed_env_example_is_the_one_the_declaration_writes():
    assert (ROOT / ".env.example").read_text() == env_example_writer().render(), \
        "run .venv/bin/python scripts/env_example.py"


def test_env_example_names_every_setting_once_and_shows_no_secret_value():
    text = (ROOT / ".env.example").read_text()
    for item in (*DECLARED, *COMPOSE_ONLY):
        lines = [line for line in text.splitlines() if line.startswith(f"# {item.name}=")]
        assert len(lines) == (1 if item.from_env else 0), item.name
        if item.secret and item.name != "DATABASE_URL":  # the URL shows a <password> placeholder
            assert lines == [f"# {item.name}="], item.name
    assert "# MARIADB_PASSWORD=" in text.splitlines()  # docker-compose.yml needs it


def test_every_field_of_the_settings_is_declared_with_a_one_line_description():
    names = {field.name.upper() for field in dataclasses.fields(Settings)}
    assert names == {item.name for item in DECLARED}
    for item in DECLARED:
        assert item.doc and "\n" not in item.doc, item.name
        assert not item.choices or item.kind == "text", item.name


def test_one_set_of_defaults(tmp_path):
    """What the code sees with nothing set is what the dataclass says, except where the declaration
    says a default follows other settings (and the SQLite file's folder, the instance path)."""
    development = Settings.from_mapping(load_config(str(tmp_path), {}))
    plain = Settings()
    for item in DECLARED:
        if item.from_env and item.name != "DATABASE_URL" and item.name != "PIN_PEPPER":
            assert getattr(development, item.name.lower()) == getattr(plain, item.name.lower()), item.name
    assert development.database_url == f"sqlite:///{tmp_path}/wallet.db"
    finalised = load_config(str(tmp_path), {})
    finalise(finalised)
    assert finalised["PIN_PEPPER"] == plain.pin_pepper


def test_the_allowed_values_are_the_registries():
    from helpers.mpesa import daraja, provider
    from lightning import BACKENDS

    assert set(LIGHTNING_BACKENDS) == set(BACKENDS)
    assert set(MPESA_PROVIDERS) == set(provider.PROVIDERS)
    assert B2C_COMMANDS == daraja.B2C_COMMANDS


@pytest.mark.parametrize("item,bad", REFUSABLE)
def test_a_bad_value_of_any_setting_is_refused_in_one_line_naming_it(tmp_path, item, bad):
    with pytest.raises(ConfigError) as refused:
        finalise(load_config(str(tmp_path), {item.name: bad}))
    message = str(refused.value)
    assert "\n" not in message and message.startswith(item.name), message
    assert all(choice in message for choice in item.choices), message
    if item.secret:
        assert bad not in message  # a secret is never repeated (a DATABASE_URL holds a password)


def test_the_issue_s_examples_are_refused(tmp_path):
    for env in ({"PIN_PEPPER": "x"}, {"LIGHTNING_NETWORK": "xyz"}, {"DEFAULT_REGION": "ZZ"}, {"PORT": "70000"},
                {"WEB_CONCURRENCY": "0"}, {"LOG_LEVEL": "chatty"}, {"DATABASE_URL": "wallet.db"},
                {"DATABASE_URL": "mysql://u:p@db/wallet"},  # no driver we install: a traceback at first use
                {"DATABASE_URL": f"sqlite:///{tmp_path}/no/such/folder/wallet.db"},
                {"HOST": "not a host"}, {"PUBLIC_URL": "https://wallet.example.com/"},
                {"PUBLIC_URL": "https://wallet.example.com/wallet"}):
        with pytest.raises(ConfigError, match=next(iter(env))):
            finalise(load_config(str(tmp_path), env))


def test_good_values_are_read_as_their_type(tmp_path):
    assert load_config(str(tmp_path), {"LOG_LEVEL": "warn"})["LOG_LEVEL"] == "WARN"  # as logging reads it
    config = load_config(str(tmp_path), {"LOG_LEVEL": "warning", "DEFAULT_REGION": "tz", "PORT": "8080",
                                         "DEMO_MODE": "off", "LIGHTNING_API_TYPE": "LNbits",
                                         "RATE_LIMIT_FLUSH_S": "0.5", "PIN_PEPPER": "p" * 16})
    finalise(config)
    assert (config["LOG_LEVEL"], config["DEFAULT_REGION"], config["PORT"]) == ("WARNING", "TZ", 8080)
    assert config["DEMO_MODE"] is False and config["LIGHTNING_BACKEND"] == "lnbits"
    assert config["WRITE_BEHIND_S"] == 0.5


def test_a_secret_is_not_in_the_settings_repr():
    shown = repr(dataclasses.replace(Settings(), pin_pepper="pepper-0123456789abc", metrics_token="m" * 20))
    assert "pepper-0123456789abc" not in shown and "m" * 20 not in shown and "service_name='SatsPesa'" in shown


def _run(command: list[str], folder: Path, **env: str) -> subprocess.CompletedProcess:
    """`command` in the project with only `env` set (and a database of its own, never created: a
    refused start touches nothing)."""
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=90,  # noqa: S603
                          env={"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
                               "PROMETHEUS_MULTIPROC_DIR": str(folder), "AUTO_CREATE_SCHEMA": "0",
                               "DATABASE_URL": f"sqlite:///{folder}/never.db", **env})


FLASK = [sys.executable, "-m", "flask", "--app", "app"]


@pytest.mark.parametrize("command,setting,bad", [
    pytest.param([sys.executable, "app.py"], "LIGHTNING_NETWORK", "xyz", id="python-app.py-choice"),
    pytest.param([*FLASK, "db-upgrade"], "PIN_PEPPER", "x", id="db-upgrade-secret"),
    pytest.param([*FLASK, "db-upgrade"], "DATABASE_URL", "postgres://u:p@h/d", id="db-upgrade-database"),
    pytest.param([*FLASK, "worker"], "DEMO_MODE", "maybe", id="worker-flag"),
    pytest.param([*FLASK, "worker"], "LIGHTNING_BACKEND", "lnd", id="worker-adapter-needs-LND_URL"),
    pytest.param([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:create_app()"], "PORT", "99999",
                 id="gunicorn-number"),
])
def test_every_entry_point_refuses_a_bad_setting_in_one_line(tmp_path, command, setting, bad):
    done = _run(command, tmp_path, **{setting: bad})
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0 and len(lines) == 1, done.stderr
    expected = "LND_URL" if setting == "LIGHTNING_BACKEND" else setting
    assert lines[0].startswith("configuration: ") and expected in lines[0], lines
    assert not (tmp_path / "never.db").exists()
