"""The settings, declared once. Each field below is one environment variable (its name in upper
case): its type, default, allowed values, whether it is a secret, a one-line description. From
this one declaration helpers/infra/config.py reads and checks the environment (and .env) at every
start, and scripts/env_example.py writes `.env.example`; a test keeps the two equal.

The defaults are the embedded development ones (SQLite in instance/, the mock node, simulated
M-Pesa); `default_doc`/`derived` say where a default follows other settings (production, or a
database of your own). Code reads the typed, frozen object create_app builds:
`svc.settings.<name>`. A test changes one with `dataclasses.replace(svc.settings, name=value)`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from helpers.infra.setting_kinds import (ConfigError, Context, Declared, database_address, decimal, declarations,
                                         listen_address,
                                         flag, long_secret, networks, parse, phone_region, text, web_address, whole)

# The values APP_ENV may take (exactly these, lower case): production turns on every check of
# config.finalise; test and benchmark are the suite's and bench/'s own settings, otherwise as development.
APP_ENVS = ("development", "test", "benchmark", "production")
DEV_PIN_PEPPER = "development-pepper-not-for-production"  # noqa: S105 - a marked dev default
DARAJA_SANDBOX_URL = "https://sandbox.safaricom.co.ke"
DARAJA_LIVE_URL = "https://api.safaricom.co.ke"
LIGHTNING_BACKENDS = ("mock", "lnbits", "lnd", "btcpay")  # lightning.BACKENDS (a test keeps them equal)
MPESA_PROVIDERS = ("simulated", "daraja")  # helpers.mpesa.provider.PROVIDERS (the same)
B2C_COMMANDS = ("BusinessPayment", "SalaryPayment", "PromotionPayment")
ID_REGISTRIES = ("simulated", "off")  # helpers.idcheck.registry.REGISTRIES (the same)
SIM_SWAP_PROVIDERS = ("simulated", "africastalking", "off")  # helpers.simswap.provider.PROVIDERS (the same)


def _not_production(ctx: Context) -> bool:
    return not ctx.production


def _airtime_default(ctx: Context) -> str:
    # Production sells airtime only when asked to (its AT credentials may be for SMS alone).
    if ctx.production:
        return "off"
    return "africastalking" if ctx.env.get("AFRICASTALKING_USERNAME") and ctx.env.get("AFRICASTALKING_API_KEY") \
        else "simulated"


def _sim_swap_default(ctx: Context) -> str:
    # Production checks with Africa's Talking when it has the credentials; the simulated provider
    # never reports a swap by itself, so it is for development and demos only.
    if not ctx.production:
        return "simulated"
    return "africastalking" if ctx.env.get("AFRICASTALKING_USERNAME") and ctx.env.get("AFRICASTALKING_API_KEY") \
        else "off"


def _id_registry_default(ctx: Context) -> str:
    # the simulated registry matches any well-formed ID: development and demos only
    return "off" if ctx.production else "simulated"


def _embedded(ctx: Context) -> bool:
    return ctx.embedded


EMBEDDED_ONLY = "on with the embedded SQLite database, off with any other"
GENERATE = "Generate: python -c \"import secrets; print(secrets.token_urlsafe(32))\""


@dataclass(frozen=True)
class Settings:
    # --- Environment
    app_env: str = text("development", "Exactly one of these, lower case: production refuses every unsafe "
                        "value named below; test and benchmark are the suite's own", choices=APP_ENVS,
                        section="Environment")
    pin_pepper: str = text(DEV_PIN_PEPPER, "Server secret in every PIN hash; changing it invalidates every PIN. "
                           + GENERATE, secret=True, check=long_secret,
                           default_doc="a marked development value; production requires your own",
                           derived=lambda ctx: "" if ctx.production else DEV_PIN_PEPPER)
    demo_mode: bool = flag(True, "Seed the demo users and serve the /test helpers (refused in production)",
                           default_doc=EMBEDDED_ONLY, derived=_embedded)
    log_level: str = text("INFO", "Log level of the app and of gunicorn (WARN and FATAL: WARNING, CRITICAL)",
                          choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "WARN", "FATAL"), case="upper")

    # --- Database
    database_url: str = text("sqlite:///instance/wallet.db", "SQLAlchemy URL: sqlite:///<file> or "
                             "mysql+pymysql://<user>:<password>@<host>:3306/<db>?charset=utf8mb4", secret=True,
                             check=database_address, section="Database",
                             example="mysql+pymysql://wallet:<password>@127.0.0.1:3306/wallet?charset=utf8mb4",
                             default_doc="sqlite:///<project>/instance/wallet.db (the embedded default)")
    db_pool_size: int = whole(5, "Connections kept per worker process (each gunicorn worker has its own pool)")
    db_pool_recycle_s: int = whole(280, "Recycle pooled connections older than this, below MySQL's wait_timeout")
    db_timeout_s: int = whole(10, "MySQL: seconds a connect or one read or write may take (keep below gunicorn's "
                              "12 s)")
    auto_create_schema: bool = flag(True, "Create missing tables at start; production runs `flask db-upgrade` "
                                    "once instead", default_doc=EMBEDDED_ONLY, derived=_embedded)

    # --- Lightning
    lightning_backend: str = text("mock", "The node that moves the money (LIGHTNING_API_TYPE is an alias)",
                                  choices=LIGHTNING_BACKENDS, case="lower", aliases=("LIGHTNING_API_TYPE",),
                                  section="Lightning")
    lightning_network: str = text("bcrt", "BOLT11 prefix invoices must carry: bc mainnet, tb testnet, tbs signet, "
                                  "bcrt regtest", choices=("bc", "tb", "tbs", "bcrt"), case="lower")
    invoice_expiry_s: int = whole(3600, "Lifetime of deposit invoices")
    lnurl_invoice_expiry_s: int = whole(600, "Lifetime of invoices asked for through a Lightning address")
    lightning_timeout_s: int = whole(3, "Seconds any call to the node may take (a USSD reply leaves within 12 s)")
    lightning_pay_timeout_s: int = whole(5, "Seconds more a payment out may take; then it stays pending and "
                                         "the worker settles it")
    lnurl_timeout_s: int = whole(3, "Seconds each call to a Lightning address's server may take")
    lnurl_allow_insecure: bool = flag(False, "Let typed Lightning addresses reach http and private hosts (local "
                                      "tests only; refused in production)")
    lnbits_url: str = text("", "LNbits instance (LIGHTNING_BACKEND=lnbits)", check=web_address,
                           example="https://lnbits.example.com")
    lnbits_admin_key: str = text("", "LNbits wallet admin key (it can spend)", secret=True)
    lnbits_invoice_key: str = text("", "LNbits wallet invoice key", secret=True)
    lnd_url: str = text("", "LND REST endpoint (LIGHTNING_BACKEND=lnd); `./setup_btcpay.sh env` prints all three",
                        check=web_address, example="https://127.0.0.1:8080")
    lnd_macaroon: str = text("", "LND admin macaroon as hex: od -An -v -tx1 admin.macaroon | tr -d ' \\n'",
                             secret=True)
    lnd_tls_cert: str = text("", "Path to LND's tls.cert", example="/path/to/lnd/tls.cert")
    btcpay_url: str = text("", "BTCPay Server (LIGHTNING_BACKEND=btcpay)", check=web_address,
                           example="http://127.0.0.1:49392")
    btcpay_api_key: str = text("", "BTCPay API key with the store's lightning permissions", secret=True)
    btcpay_store_id: str = text("", "BTCPay store ID (store Settings > General)")
    btcpay_webhook_secret: str = text("", "Secret BTCPay shows for the store's webhook (signs BTCPay-Sig)",
                                      secret=True)
    lightning_address_domain: str = text("", "Domain of users' Lightning addresses <phone digits>@<domain> "
                                         "(at most 24 characters)", default_doc="the host of PUBLIC_URL",
                                         example="pay.example.com")
    lightning_webhook_token: str = text("", "Secret path segment of the node's webhook "
                                        "<PUBLIC_URL>/lightning/webhook/<token>", secret=True)

    # --- Africa's Talking
    ussd_service_code: str = text("*384*123#", "The shortcode users dial, shown in texts and SMS",
                                  section="Africa's Talking (USSD, SMS, airtime)")
    ussd_session_timeout_s: int = whole(180, "A USSD session is over after this long")
    ussd_callback_token: str = text("", "Secret path segment of the USSD callback <PUBLIC_URL>/ussd/<token>: "
                                    "16+ letters, digits, - or _ (required in production)", secret=True)
    ussd_allowed_networks: tuple = networks("Networks (CIDR, comma-separated) allowed to call /ussd; empty: any",
                                            example="196.201.214.0/24")
    africastalking_username: str = text("", "SMS and airtime account; without username and key SMS go to the "
                                        "log (sandbox: AT's sandbox)", example="sandbox")
    africastalking_api_key: str = text("", "Africa's Talking API key", secret=True)
    africastalking_sender_id: str = text("", "Registered sender ID or shortcode; empty: AT's default sender")
    sms_auto_flush: bool = flag(True, "Send queued SMS right after each reply (off: only `flask flush-sms`)")
    airtime_provider: str = text("simulated", "Pay > Airtime: africastalking, simulated (delivered at once; "
                                 "refused in production) or off", choices=("simulated", "africastalking", "off"),
                                 case="lower", derived=_airtime_default,
                                 default_doc="off in production; else africastalking with AT credentials, else "
                                             "simulated")
    airtime_callback_token: str = text("", "Secret of AT's airtime status callback <PUBLIC_URL>/airtime/<token>/"
                                       "status (16+ characters; required in production)", secret=True)
    sim_swap_provider: str = text("simulated", "SIM swap checks before money out and PIN changes: africastalking "
                                  "(Insights), simulated (demo marks; refused in production) or off",
                                  choices=SIM_SWAP_PROVIDERS, case="lower", derived=_sim_swap_default,
                                  default_doc="simulated; in production africastalking with AT credentials, else off")
    id_registry: str = text("simulated", "Identity checks for tier 1 (My Account > Limits > Verify my ID): simulated "
                            "(refused in production) or off (only an operator raises limits, from documents)",
                            choices=ID_REGISTRIES, case="lower", derived=_id_registry_default,
                            default_doc="simulated; in production off until a registry adapter is configured")
    sim_swap_callback_token: str = text("", "Secret of AT's Insights callback <PUBLIC_URL>/insights/<token>/sim-swap "
                                        "(16+ characters; required in production)", secret=True)
    sms_incoming_token: str = text("", "Secret of AT's incoming SMS callback <PUBLIC_URL>/sms/<token>/incoming (chama "
                                   "approvals by SMS reply; 16+ characters; unset: replies are refused)", secret=True)
    africastalking_sms_url: str = text("", "A test server instead of AT's SMS API", from_env=False)
    africastalking_airtime_url: str = text("", "A test server instead of AT's Airtime API", from_env=False)
    africastalking_insights_url: str = text("", "A test server instead of AT's Insights API", from_env=False)

    # --- M-Pesa
    mpesa_provider: str = text("simulated", "simulated (each typed code credits once; refused in production) or "
                               "daraja (Safaricom's API, README M-Pesa)", choices=MPESA_PROVIDERS, case="lower",
                               section="M-Pesa")
    mpesa_base_url: str = text(DARAJA_SANDBOX_URL, f"Daraja: the sandbox or live, {DARAJA_LIVE_URL}",
                               check=web_address)
    mpesa_consumer_key: str = text("", "Daraja app's Consumer Key (required with daraja)", secret=True)
    mpesa_consumer_secret: str = text("", "Daraja app's Consumer Secret (required with daraja)", secret=True)
    mpesa_shortcode: str = text("", "Pay bill shortcode, BusinessShortCode (required with daraja)", example="174379")
    mpesa_passkey: str = text("", "Lipa na M-Pesa Online passkey (required with daraja)", secret=True)
    mpesa_till_number: str = text("", "A till number: pushes are then CustomerBuyGoodsOnline to it")
    mpesa_b2c_shortcode: str = text("", "Shortcode that pays withdrawals out", default_doc="MPESA_SHORTCODE")
    mpesa_initiator_name: str = text("", "API operator for B2C and Transaction Status (required with daraja)")
    mpesa_security_credential: str = text("", "The initiator password encrypted with M-Pesa's certificate, base64",
                                          secret=True)
    mpesa_b2c_command_id: str = text("BusinessPayment", "B2C CommandID", choices=B2C_COMMANDS)
    mpesa_callback_base_url: str = text("", "Where Safaricom reaches us (https in production)", check=web_address,
                                        default_doc="PUBLIC_URL", example="https://wallet.example.com")
    mpesa_callback_token: str = text("", "Secret path segment of every M-Pesa callback (16+ letters, digits, - "
                                     "or _)", secret=True)
    mpesa_timeout_s: float = decimal(10.0, "Seconds to wait for one Daraja answer")
    mpesa_query_after_s: int = whole(90, "Pending pushes and payouts older than this are asked about")
    mpesa_query_every_s: int = whole(120, "... each at most this often")

    # --- Prices
    price_sources: str = text("", "BTC/KES sources, comma-separated (coingecko, coinbase, kraken, bitstamp, fx); "
                              "empty: the fixed price of atoms.metta, refused in production", section="BTC/KES price",
                              example="coingecko,coinbase,kraken,bitstamp,fx")
    price_min_sources: int = whole(2, "How many sources must agree for a price")
    price_outlier_pct: float = decimal(5.0, "... within this many percent of their median")
    price_refresh_s: int = whole(60, "Seconds between refreshes")
    price_timeout_s: float = decimal(5.0, "Seconds each source may take")
    price_manual_kes_per_btc: int = whole(0, "An emergency price, KES per bitcoin (0: none), used until "
                                          "PRICE_MANUAL_UNTIL")
    price_manual_until: str = text("", "ISO time (UTC) the emergency price ends", example="2026-12-06T18:00")

    # --- Customer care, address, locale
    service_name: str = text("SatsPesa", "The service's name on every screen and SMS (1-12 characters)",
                             section="Customer care, address, locale")
    support_phone: str = text("", "Customer care's number on error screens and money SMS; empty: none",
                              example="0700 123 456")
    admin_session_minutes: int = whole(30, "Minutes without a request before a console (/admin) session ends")
    frc_entity_id: str = text("", "Our reporting entity id at the Financial Reporting Centre (goAML), written in "
                              "suspicious-activity report exports (issue 34)", example="12345")
    public_url: str = text("http://localhost:5000", "Where the world reaches us (https in production): webhooks, "
                           "callbacks, Lightning addresses", check=web_address)
    default_region: str = text("KE", "Region of phone numbers typed without a country code (ISO 3166)",
                               check=phone_region, case="upper")
    default_language: str = text("en", "Language of menus and SMS for new users", choices=("en", "sw"))

    # --- Serving
    host: str = text("127.0.0.1", "Address of the development server (python app.py); gunicorn always binds "
                     "0.0.0.0", section="Serving", check=listen_address)
    port: int | None = whole(None, "Listen port", minimum=1, maximum=65535, example="8000",
                             default_doc="8000 under gunicorn (the image), 5000 for python app.py")
    web_concurrency: int | None = whole(None, "gunicorn worker processes", minimum=1, example="4",
                                        default_doc="2 x CPUs + 1, at most 8")
    trusted_proxy_count: int = whole(0, "Reverse proxies in front that append to X-Forwarded-For (1 behind the "
                                     "compose file's Caddy)")
    metrics_token: str = text("", "Bearer token for /metrics and /ledger/solvency (16+ characters; required in "
                              "production)", secret=True)
    simulator_enabled: bool = flag(True, "The browser phone at /simulator (it lets anyone dial as any phone)",
                                   default_doc="on, except in production", derived=_not_production)
    rate_limits: bool = flag(False, "Abuse limits of atoms.metta (required in production)",
                             default_doc="on, except with the embedded SQLite database",
                             derived=lambda ctx: not ctx.embedded)
    write_behind_s: float = decimal(1.0, "Rate-limit counts and opened sessions are written at most this often "
                                    "(0: at once)", aliases=("RATE_LIMIT_FLUSH_S",))

    # --- Background work
    invoice_poll_s: int = whole(15, "The worker's pace: seconds between looks for pending items (0: no worker "
                                "in the server)", section="Background work")
    worker_in_process: bool = flag(True, "Run background work in a thread of the server, or only in `flask worker`",
                                   default_doc="on, except in production", derived=_not_production)
    worker_lease_s: int = whole(60, "Seconds a worker holds a claimed job; a dead worker's jobs go to others after")
    worker_heartbeat_file: str = text("", "File `flask worker` touches each round, for a health check: python -m "
                                      "helpers.infra.heartbeat; empty: none", example="/home/app/worker.heartbeat")

    def by_variable(self) -> dict[str, Any]:
        """{VARIABLE_NAME: value}, for an adapter that checks its settings and names the variable
        of a wrong one (Daraja's)."""
        return {field.name.upper(): getattr(self, field.name) for field in dataclasses.fields(self)}

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> Settings:
        """From upper-case names (a checked config mapping, or a test's few values); names it does
        not know (Flask's own) are left out, missing ones take the declared default. Raises ConfigError."""
        values: dict[str, Any] = {}
        for item in DECLARED:
            if item.name in mapping:
                value = mapping[item.name]
                if isinstance(value, str) and item.kind != "text":
                    value = parse(item, value) if value.strip() else item.default
                values[item.name.lower()] = tuple(value) if item.kind == "networks" else value
        return cls(**values)


DECLARED: tuple[Declared, ...] = declarations(Settings)
BY_NAME: dict[str, Declared] = {item.name: item for item in DECLARED}

# Read only by docker-compose.yml, not by the app: declared here so .env.example lists them too.
COMPOSE_ONLY: tuple[Declared, ...] = (
    Declared("MARIADB_PASSWORD", "text", "", "Password of the compose file's MariaDB user `wallet` (required by "
             "docker compose)", section="Docker Compose (docker-compose.yml only)", secret=True),
    Declared("WEB_PORT", "whole", 8000, "Host port of the demo profile's web server", minimum=1, maximum=65535),
)

__all__ = ["APP_ENVS", "BY_NAME", "COMPOSE_ONLY", "DECLARED", "ConfigError", "Settings"]
