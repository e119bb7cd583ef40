"""Configuration from the environment (and a `.env` file), with the embedded defaults.

Every variable is listed in `.env.example`. With none set the server runs on a SQLite file in
the instance folder, the mock Lightning backend, simulated M-Pesa, log SMS and demo users.
"""

from __future__ import annotations

import os
import datetime as dt
import re
from pathlib import Path
from urllib.parse import urlparse
from typing import Any

from helpers.infra.text import is_digits

# The values APP_ENV may take (exactly these, lower case): production turns on every check below;
# test and benchmark are the suite's and bench/'s own settings, otherwise as development.
APP_ENVS = ("development", "test", "benchmark", "production")
DEV_PIN_PEPPER = "development-pepper-not-for-production"  # noqa: S105 - a marked dev default

_TRUE = {"1", "true", "yes", "on"}
MAX_SERVICE_NAME = 12  # SatsPesa and longer names still fit the screens (tests/unit/test_catalog_and_policy.py)
MAX_SUPPORT_PHONE = 16
MAX_ADDRESS_DOMAIN = 24
DARAJA_SANDBOX_URL = "https://sandbox.safaricom.co.ke"
DARAJA_LIVE_URL = "https://api.safaricom.co.ke"


class ConfigError(RuntimeError):
    """A setting is missing or wrong; the message names it."""


def _flag(value: str | None, default: bool) -> bool:
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in _TRUE


MAX_BODY_BYTES = 64 * 1024


def _number(env: dict[str, str], name: str, default: int | float) -> int | float:
    """A whole number (or, for a float default, a decimal one) of at least 0. Raises ConfigError
    naming the variable, what is wrong with the value and an example."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    kind = "a decimal number" if isinstance(default, float) else "a whole number"
    try:
        value = float(raw) if isinstance(default, float) else int(raw) if is_digits(raw) else None
    except ValueError:
        value = None
    if value is None or not 0 <= value < float("inf"):  # also NaN and infinity
        raise ConfigError(f"{name}={raw!r} is not {kind} of 0 or more; for example {name}={default}")
    return value


def load_config(instance_path: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Build the Flask config mapping from `env` (default: os.environ)."""
    env = dict(os.environ if env is None else env)
    sqlite_default = "sqlite:///" + str(Path(instance_path) / "wallet.db")
    database_url = env.get("DATABASE_URL") or sqlite_default
    embedded = database_url == sqlite_default
    backend = (env.get("LIGHTNING_BACKEND") or env.get("LIGHTNING_API_TYPE") or "mock").lower()
    return {
        "APP_ENV": env.get("APP_ENV") or "development",
        "DATABASE_URL": database_url,
        # Every body we take is small (a USSD step, a node's or Daraja's callback: a few KB); a
        # bigger one is refused with 413 before it is read.
        "MAX_CONTENT_LENGTH": MAX_BODY_BYTES,
        "DB_POOL_SIZE": _number(env, "DB_POOL_SIZE", 5),
        "DB_POOL_RECYCLE_S": _number(env, "DB_POOL_RECYCLE_S", 280),
        "DB_TIMEOUT_S": _number(env, "DB_TIMEOUT_S", 10),
        "AUTO_CREATE_SCHEMA": _flag(env.get("AUTO_CREATE_SCHEMA"), embedded),
        "DEMO_MODE": _flag(env.get("DEMO_MODE"), embedded),
        "LIGHTNING_BACKEND": backend,
        "LIGHTNING_NETWORK": env.get("LIGHTNING_NETWORK", "bcrt"),
        "INVOICE_EXPIRY_S": _number(env, "INVOICE_EXPIRY_S", 3600),
        # Invoices strangers ask for through a Lightning address: their wallet pays at once.
        "LNURL_INVOICE_EXPIRY_S": _number(env, "LNURL_INVOICE_EXPIRY_S", 600),
        # A USSD reply must leave within gunicorn's 12 s: a call to the node waits at most
        # LIGHTNING_TIMEOUT_S; a payment out LIGHTNING_PAY_TIMEOUT_S more, then it is left pending
        # (the node keeps trying for that long; the reconciler learns the outcome).
        "LIGHTNING_TIMEOUT_S": _number(env, "LIGHTNING_TIMEOUT_S", 3),
        "LIGHTNING_PAY_TIMEOUT_S": _number(env, "LIGHTNING_PAY_TIMEOUT_S", 5),
        # Paying Lightning addresses: the payee's server gets LNURL_TIMEOUT_S per call.
        # LNURL_ALLOW_INSECURE (tests, development) allows http and private hosts; never in production.
        "LNURL_TIMEOUT_S": _number(env, "LNURL_TIMEOUT_S", 3),
        "LNURL_ALLOW_INSECURE": _flag(env.get("LNURL_ALLOW_INSECURE"), False),
        "LNBITS_URL": env.get("LNBITS_URL", ""),
        "LNBITS_ADMIN_KEY": env.get("LNBITS_ADMIN_KEY", ""),
        "LNBITS_INVOICE_KEY": env.get("LNBITS_INVOICE_KEY", ""),
        "LND_URL": env.get("LND_URL", ""),
        "LND_MACAROON": env.get("LND_MACAROON", ""),
        "LND_TLS_CERT": env.get("LND_TLS_CERT", ""),
        "BTCPAY_URL": env.get("BTCPAY_URL", ""),
        "BTCPAY_API_KEY": env.get("BTCPAY_API_KEY", ""),
        "BTCPAY_STORE_ID": env.get("BTCPAY_STORE_ID", ""),
        "BTCPAY_WEBHOOK_SECRET": env.get("BTCPAY_WEBHOOK_SECRET", ""),
        "AFRICASTALKING_USERNAME": env.get("AFRICASTALKING_USERNAME", ""),
        "AFRICASTALKING_API_KEY": env.get("AFRICASTALKING_API_KEY", ""),
        "AFRICASTALKING_SENDER_ID": env.get("AFRICASTALKING_SENDER_ID", ""),
        "SMS_AUTO_FLUSH": _flag(env.get("SMS_AUTO_FLUSH"), True),
        # Airtime (Pay > Airtime): `africastalking` (AT's Airtime API), `simulated` (delivered at
        # once) or `off` (the menu says it is not available). Production sells airtime only when
        # asked to (AT credentials there may be for SMS alone): off unless set. Elsewhere: AT's API
        # when its credentials are set, else simulated. AT posts delivery reports to
        # <PUBLIC_URL>/airtime/<token>/status (AT's dashboard: Airtime > Callback URLs > Status).
        "AIRTIME_PROVIDER": env.get("AIRTIME_PROVIDER", "").lower() or (
            "off" if env.get("APP_ENV", "development") == "production"
            else "africastalking" if env.get("AFRICASTALKING_USERNAME") and env.get("AFRICASTALKING_API_KEY")
            else "simulated"),
        "AIRTIME_CALLBACK_TOKEN": env.get("AIRTIME_CALLBACK_TOKEN", ""),
        # Background work (polling pending payments, the SMS outbox, prices, cleanup): in a thread of
        # the server (the embedded default), or only in `flask worker` processes (production: web
        # workers then start no background thread).
        "WORKER_IN_PROCESS": _flag(env.get("WORKER_IN_PROCESS"), env.get("APP_ENV", "development") != "production"),
        # How long a worker holds a job it claimed: a worker that dies leaves it to others after this.
        "WORKER_LEASE_S": _number(env, "WORKER_LEASE_S", 60),
        "USSD_SERVICE_CODE": env.get("USSD_SERVICE_CODE", "*384*123#"),
        "USSD_SESSION_TIMEOUT_S": _number(env, "USSD_SESSION_TIMEOUT_S", 180),
        "PUBLIC_URL": env.get("PUBLIC_URL", "http://localhost:5000"),
        "PIN_PEPPER": env.get("PIN_PEPPER", ""),
        "MPESA_PROVIDER": env.get("MPESA_PROVIDER", "simulated").lower(),
        # Daraja (MPESA_PROVIDER=daraja); see .env.example and README
        "MPESA_BASE_URL": env.get("MPESA_BASE_URL", DARAJA_SANDBOX_URL),
        "MPESA_CONSUMER_KEY": env.get("MPESA_CONSUMER_KEY", ""),
        "MPESA_CONSUMER_SECRET": env.get("MPESA_CONSUMER_SECRET", ""),
        "MPESA_SHORTCODE": env.get("MPESA_SHORTCODE", ""),
        "MPESA_PASSKEY": env.get("MPESA_PASSKEY", ""),
        "MPESA_TILL_NUMBER": env.get("MPESA_TILL_NUMBER", ""),
        "MPESA_B2C_SHORTCODE": env.get("MPESA_B2C_SHORTCODE", ""),
        "MPESA_INITIATOR_NAME": env.get("MPESA_INITIATOR_NAME", ""),
        "MPESA_SECURITY_CREDENTIAL": env.get("MPESA_SECURITY_CREDENTIAL", ""),
        "MPESA_B2C_COMMAND_ID": env.get("MPESA_B2C_COMMAND_ID", "BusinessPayment"),
        "MPESA_CALLBACK_BASE_URL": env.get("MPESA_CALLBACK_BASE_URL", ""),
        "MPESA_CALLBACK_TOKEN": env.get("MPESA_CALLBACK_TOKEN", ""),
        "MPESA_TIMEOUT_S": _number(env, "MPESA_TIMEOUT_S", 10.0),
        # Pending pushes and payouts older than this are queried (status queries), each at most
        # every MPESA_QUERY_EVERY_S, by the worker and by `flask reconcile`.
        "MPESA_QUERY_AFTER_S": _number(env, "MPESA_QUERY_AFTER_S", 90),
        "MPESA_QUERY_EVERY_S": _number(env, "MPESA_QUERY_EVERY_S", 120),
        # The BTC/KES price feed (README, Prices). Empty: the fixed price of atoms.metta, no network
        # (the embedded default, demo, tests); production needs sources or a pinned price.
        "PRICE_SOURCES": env.get("PRICE_SOURCES", ""),
        "PRICE_MIN_SOURCES": _number(env, "PRICE_MIN_SOURCES", 2),
        "PRICE_OUTLIER_PCT": _number(env, "PRICE_OUTLIER_PCT", 5.0),
        "PRICE_REFRESH_S": _number(env, "PRICE_REFRESH_S", 60),
        "PRICE_TIMEOUT_S": _number(env, "PRICE_TIMEOUT_S", 5.0),
        # An operator's emergency price, KES per bitcoin, used until PRICE_MANUAL_UNTIL (ISO UTC time)
        "PRICE_MANUAL_KES_PER_BTC": _number(env, "PRICE_MANUAL_KES_PER_BTC", 0),
        "PRICE_MANUAL_UNTIL": env.get("PRICE_MANUAL_UNTIL", ""),
        # Customer care: the service's short name (in place of SatsPesa on every screen and SMS) and
        # the number shown on error screens that send people to it and on SMS that confirm money.
        "SERVICE_NAME": env.get("SERVICE_NAME", "SatsPesa"),
        # The operator console (/admin): minutes without a request before its session ends
        "ADMIN_SESSION_MINUTES": _number(env, "ADMIN_SESSION_MINUTES", 30),
        "SUPPORT_PHONE": env.get("SUPPORT_PHONE", ""),
        "DEFAULT_REGION": env.get("DEFAULT_REGION", "KE"),
        "DEFAULT_LANGUAGE": env.get("DEFAULT_LANGUAGE", "en"),
        "LOG_LEVEL": env.get("LOG_LEVEL", "INFO"),
        # Who may call us (see SECURITY.md)
        "USSD_CALLBACK_TOKEN": env.get("USSD_CALLBACK_TOKEN", ""),
        "USSD_ALLOWED_NETWORKS": _networks(env.get("USSD_ALLOWED_NETWORKS", "")),
        "TRUSTED_PROXY_COUNT": _number(env, "TRUSTED_PROXY_COUNT", 0),
        "METRICS_TOKEN": env.get("METRICS_TOKEN", ""),
        # Lightning addresses <phone digits>@<domain>; default: the host of PUBLIC_URL
        "LIGHTNING_ADDRESS_DOMAIN": env.get("LIGHTNING_ADDRESS_DOMAIN", ""),
        # Secret path segment of the node's webhook: <PUBLIC_URL>/lightning/webhook/<token>
        "LIGHTNING_WEBHOOK_TOKEN": env.get("LIGHTNING_WEBHOOK_TOKEN", ""),
        # Seconds between polls of the node for pending invoices (0: off; webhooks are hints)
        "INVOICE_POLL_S": _number(env, "INVOICE_POLL_S", 15),  # /metrics wants "Authorization: Bearer <token>"
        # Abuse limits (atoms.metta). On by default, except on the embedded demo default, where
        # test_ussd.py and curl type far faster than a person; production refuses to run without.
        "RATE_LIMITS": _flag(env.get("RATE_LIMITS"), not embedded),
        # Written behind, at most every WRITE_BEHIND_S seconds, after a reply has gone out (or by the
        # worker's thread when it is idle): the per-request limits' counts (a limit may be passed
        # by what other workers accepted meanwhile) and the rows of sessions that only opened.
        # 0: all written at once (exact, slower). RATE_LIMIT_FLUSH_S is its former name.
        "WRITE_BEHIND_S": _number(env, "WRITE_BEHIND_S" if "WRITE_BEHIND_S" in env else "RATE_LIMIT_FLUSH_S", 1.0),
        # The browser phone at /simulator: on unless APP_ENV=production (then only if set to 1).
        "SIMULATOR_ENABLED": _flag(env.get("SIMULATOR_ENABLED"), env.get("APP_ENV", "development") != "production"),
    }


def _networks(value: str) -> list:
    """Comma-separated CIDRs, e.g. '196.201.214.0/24,127.0.0.1/32'. Raises ConfigError."""
    import ipaddress

    networks = []
    for part in filter(None, (p.strip() for p in value.split(","))):
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError as exc:
            raise ConfigError(f"USSD_ALLOWED_NETWORKS: {part!r} is not a network") from exc
    return networks


def finalise(config: dict[str, Any]) -> None:
    """Check settings that depend on each other; fill the development pepper. Raises ConfigError."""
    if config["APP_ENV"] not in APP_ENVS:
        # a typo ("prod", "Production") must not quietly turn every production check off
        raise ConfigError(f"APP_ENV={config['APP_ENV']!r} is not one of {', '.join(APP_ENVS)}")
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
    if config["AIRTIME_PROVIDER"] not in ("simulated", "africastalking", "off"):
        raise ConfigError("AIRTIME_PROVIDER must be simulated, africastalking or off")
    if production and config["AIRTIME_PROVIDER"] == "simulated":
        # customers would pay sats for airtime that never comes
        raise ConfigError("AIRTIME_PROVIDER=simulated is not allowed in production")
    if config["AIRTIME_PROVIDER"] == "africastalking" and len(config["AIRTIME_CALLBACK_TOKEN"]) < 16 and production:
        raise ConfigError("AIRTIME_CALLBACK_TOKEN must be set (16+ random characters) for Africa's Talking's airtime "
                          "status callback <PUBLIC_URL>/airtime/<token>/status")
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
    if config["DEFAULT_LANGUAGE"] not in ("en", "sw"):
        raise ConfigError("DEFAULT_LANGUAGE must be 'en' or 'sw'")
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
