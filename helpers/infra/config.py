"""Reading the settings from the environment (and a `.env` file) and checking them: each
setting is declared once, in helpers/infra/settings.py (type, default, allowed values); this
module turns the environment into the Flask config mapping (`load_config`) and checks what
depends on more than one setting (`finalise`). Every refusal is a ConfigError of one line that
names the setting and what is allowed.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from helpers.infra.setting_kinds import ConfigError, Context, check, parse, parse_networks
from helpers.infra.settings import APP_ENVS, DARAJA_LIVE_URL, DARAJA_SANDBOX_URL, DECLARED, DEV_PIN_PEPPER

__all__ = ["APP_ENVS", "ConfigError", "DEV_PIN_PEPPER", "MAX_ADDRESS_DOMAIN", "MAX_SERVICE_NAME", "MAX_SUPPORT_PHONE",
           "finalise", "load_config"]

MAX_SERVICE_NAME = 12  # SatsPesa and longer names still fit the screens (tests/unit/test_catalog_and_policy.py)
MAX_SUPPORT_PHONE = 16
MAX_ADDRESS_DOMAIN = 24
# Every body we take is small (a USSD step, a node's or Daraja's callback: a few KB); a bigger one
# is refused with 413 before it is read.
MAX_BODY_BYTES = 64 * 1024


def load_config(instance_path: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Build the Flask config mapping from `env` (default: os.environ): every declared setting,
    typed, its default where it is unset or empty. Raises ConfigError on a value that does not
    parse (a word for a number, say); allowed values are checked by `finalise`."""
    env = dict(os.environ if env is None else env)
    config: dict[str, Any] = {"MAX_CONTENT_LENGTH": MAX_BODY_BYTES}
    sqlite_default = "sqlite:///" + str(Path(instance_path) / "wallet.db")
    database_url = env.get("DATABASE_URL") or sqlite_default
    ctx = Context(env=env, instance_path=instance_path, embedded=database_url == sqlite_default,
                  production=env.get("APP_ENV") == "production")
    for item in DECLARED:
        if not item.from_env:
            continue
        raw = next((env[name] for name in (item.name, *item.aliases) if env.get(name, "").strip()), "")
        if raw:
            config[item.name] = parse(item, raw)
        else:
            config[item.name] = item.derived(ctx) if item.derived else item.default
    config["DATABASE_URL"] = database_url
    config["USSD_ALLOWED_NETWORKS"] = list(config["USSD_ALLOWED_NETWORKS"])
    return config


def _networks(value: str) -> list:
    """Comma-separated CIDRs, e.g. '196.201.214.0/24,127.0.0.1/32'. Raises ConfigError."""
    return parse_networks("USSD_ALLOWED_NETWORKS", value)


def finalise(config: dict[str, Any]) -> None:
    """Check every value against its declaration (allowed values, form), then the settings that
    depend on each other; fill the development pepper. Raises ConfigError."""
    for item in DECLARED:
        if item.name in config:
            # APP_ENV first: a typo ("prod", "Production") must not quietly turn every production check off
            check(item, config[item.name])
    production = config["APP_ENV"] == "production"
    if not config["PIN_PEPPER"]:
        if production:
            raise ConfigError("PIN_PEPPER must be set in production (a long random secret)")
        config["PIN_PEPPER"] = DEV_PIN_PEPPER
    elif production and config["PIN_PEPPER"] == DEV_PIN_PEPPER:
        raise ConfigError("PIN_PEPPER is the development default; set a secret one")
    if production and config["DEMO_MODE"]:
        raise ConfigError("DEMO_MODE must be off in production")
    if production and config["MPESA_PROVIDER"] == "simulated":
        # the simulated provider credits any well-formed code: free money
        raise ConfigError("MPESA_PROVIDER=simulated is not allowed in production")
    if production and config["AIRTIME_PROVIDER"] == "simulated":
        # customers would pay sats for airtime that never comes
        raise ConfigError("AIRTIME_PROVIDER=simulated is not allowed in production")
    if config["AIRTIME_PROVIDER"] == "africastalking" and len(config["AIRTIME_CALLBACK_TOKEN"]) < 16 and production:
        raise ConfigError("AIRTIME_CALLBACK_TOKEN must be set (16+ random characters) for Africa's Talking's airtime "
                          "status callback <PUBLIC_URL>/airtime/<token>/status")
    if production and config["SIM_SWAP_PROVIDER"] == "simulated":
        # it never reports a swap by itself: a thief with a new SIM would pass every check
        raise ConfigError("SIM_SWAP_PROVIDER=simulated is not allowed in production (africastalking, or off)")
    if production and config["ID_REGISTRY"] == "simulated":
        raise ConfigError("ID_REGISTRY=simulated is not allowed in production (off, or a registry adapter)")
    if config["SIM_SWAP_PROVIDER"] == "africastalking" and production and len(config["SIM_SWAP_CALLBACK_TOKEN"]) < 16:
        raise ConfigError("SIM_SWAP_CALLBACK_TOKEN must be set (16+ random characters) for Africa's Talking's "
                          "Insights callback <PUBLIC_URL>/insights/<token>/sim-swap")
    if production and not config["RATE_LIMITS"]:
        raise ConfigError("RATE_LIMITS must be on in production")
    token = config["USSD_CALLBACK_TOKEN"]
    if production and len(token) < 16:
        raise ConfigError("USSD_CALLBACK_TOKEN must be set in production (16+ random characters); "
                          "give Africa's Talking the callback URL <PUBLIC_URL>/ussd/<token>")
    if token and (len(token) < 16 or not token.replace("-", "").replace("_", "").isalnum()):
        raise ConfigError("USSD_CALLBACK_TOKEN must be 16+ letters, digits, '-' or '_'")
    if production and config["LNURL_ALLOW_INSECURE"]:
        raise ConfigError("LNURL_ALLOW_INSECURE must be off in production (it lets typed addresses reach "
                          "private hosts)")
    if production and config["LIGHTNING_BACKEND"] == "mock":
        raise ConfigError("LIGHTNING_BACKEND=mock is not allowed in production")
    if production and urlparse(config["PUBLIC_URL"]).hostname in (None, "", "localhost", "127.0.0.1", "::1"):
        raise ConfigError("PUBLIC_URL must be set in production to the address the world reaches us at "
                          "(Lightning addresses and callback URLs are made from it)")
    if production and not config["PUBLIC_URL"].startswith("https://"):
        raise ConfigError("PUBLIC_URL must be https:// in production")
    if production and config["SIMULATOR_ENABLED"]:
        raise ConfigError("SIMULATOR_ENABLED must be off in production (it lets anyone dial as any phone)")
    address_domain = config["LIGHTNING_ADDRESS_DOMAIN"] or urlparse(config["PUBLIC_URL"]).netloc
    if not address_domain or len(address_domain) > MAX_ADDRESS_DOMAIN:
        raise ConfigError(f"LIGHTNING_ADDRESS_DOMAIN (or PUBLIC_URL's host) must be 1-{MAX_ADDRESS_DOMAIN} "
                          "characters: Lightning addresses are shown on 160-character screens")
    if not re.fullmatch(rf"[A-Za-z0-9][A-Za-z0-9 .-]{{0,{MAX_SERVICE_NAME - 1}}}", config["SERVICE_NAME"]):
        raise ConfigError(f"SERVICE_NAME must be 1-{MAX_SERVICE_NAME} letters, digits, spaces, '.' or '-' "
                          "(it is on 160-character screens)")
    if config["SUPPORT_PHONE"] and not re.fullmatch(rf"\+?[0-9 ]{{3,{MAX_SUPPORT_PHONE}}}", config["SUPPORT_PHONE"]):
        raise ConfigError(f"SUPPORT_PHONE must be a phone number of up to {MAX_SUPPORT_PHONE} digits and spaces")
    if production and config["MPESA_PROVIDER"] == "daraja":
        if config["MPESA_BASE_URL"].rstrip("/") == DARAJA_SANDBOX_URL:
            # sandbox payments are not money: every sandbox top-up would credit real sats
            raise ConfigError(f"MPESA_BASE_URL is Daraja's sandbox; production needs {DARAJA_LIVE_URL}")
        callback_base = config["MPESA_CALLBACK_BASE_URL"] or config["PUBLIC_URL"]
        if not callback_base.startswith("https://"):
            raise ConfigError("MPESA_CALLBACK_BASE_URL (or PUBLIC_URL) must be https:// in production")
    _check_prices(config, production)
    if production and len(config["METRICS_TOKEN"]) < 16:
        # /metrics and /ledger/solvency show customers' total balances and ask the node
        raise ConfigError("METRICS_TOKEN must be set in production (16+ random characters): it guards "
                          "/metrics and /ledger/solvency")
    if production and config["DATABASE_URL"].startswith(("mysql", "mariadb")) and not _password(config["DATABASE_URL"]):
        raise ConfigError("DATABASE_URL has no password; production's database needs one (docker compose: "
                          "MARIADB_PASSWORD in .env)")


def _password(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).password or ""


def _check_prices(config: dict[str, Any], production: bool) -> None:
    """The price settings this module can judge alone; the source list itself is parsed (and
    refused, naming the setting) where the feed is built, helpers/wallet/prices.py."""
    sources = [item for item in config["PRICE_SOURCES"].split(",") if item.strip()]
    until = config["PRICE_MANUAL_UNTIL"]
    if config["PRICE_MANUAL_KES_PER_BTC"]:
        try:
            dt.datetime.fromisoformat(until)
        except ValueError:
            raise ConfigError("PRICE_MANUAL_UNTIL must be an ISO time (2026-12-06T18:00) when "
                              "PRICE_MANUAL_KES_PER_BTC is set: a pinned price must end") from None
    if production and not sources and not config["PRICE_MANUAL_KES_PER_BTC"]:
        raise ConfigError("PRICE_SOURCES must be set in production (the fixed price is for demos and tests)")
