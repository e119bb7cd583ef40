"""The settings: one typed, frozen object built once at start-up (create_app) from the
environment (and .env) through helpers/infra/config.py, which checks each value and stops the
start with one line naming a bad one. Code reads `svc.settings.<name>`; the names are the
environment variables in lower case (`.env.example` lists them with their meaning).

A test changes one with `dataclasses.replace(svc.settings, name=value)`: nothing mutates it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from helpers.infra.config import ConfigError, _flag, _number


@dataclass(frozen=True)
class Settings:
    app_env: str = 'development'
    database_url: str = "sqlite:///instance/wallet.db"
    db_pool_size: int = 5
    db_pool_recycle_s: int = 280
    db_timeout_s: int = 10
    auto_create_schema: bool = True
    demo_mode: bool = True
    lightning_backend: str = 'mock'
    lightning_network: str = 'bcrt'
    invoice_expiry_s: int = 3600
    lnurl_invoice_expiry_s: int = 600
    lightning_timeout_s: int = 3
    lightning_pay_timeout_s: int = 5
    lnurl_timeout_s: int = 3
    lnurl_allow_insecure: bool = False
    lnbits_url: str = ''
    lnbits_admin_key: str = ''
    lnbits_invoice_key: str = ''
    lnd_url: str = ''
    lnd_macaroon: str = ''
    lnd_tls_cert: str = ''
    btcpay_url: str = ''
    btcpay_api_key: str = ''
    btcpay_store_id: str = ''
    btcpay_webhook_secret: str = ''
    africastalking_username: str = ''
    africastalking_api_key: str = ''
    africastalking_sender_id: str = ''
    sms_auto_flush: bool = True
    airtime_provider: str = 'simulated'
    airtime_callback_token: str = ''
    ussd_service_code: str = '*384*123#'
    ussd_session_timeout_s: int = 180
    public_url: str = 'http://localhost:5000'
    pin_pepper: str = 'development-pepper-not-for-production'
    mpesa_provider: str = 'simulated'
    mpesa_base_url: str = 'https://sandbox.safaricom.co.ke'
    mpesa_consumer_key: str = ''
    mpesa_consumer_secret: str = ''
    mpesa_shortcode: str = ''
    mpesa_passkey: str = ''
    mpesa_till_number: str = ''
    mpesa_b2c_shortcode: str = ''
    mpesa_initiator_name: str = ''
    mpesa_security_credential: str = ''
    mpesa_b2c_command_id: str = 'BusinessPayment'
    mpesa_callback_base_url: str = ''
    mpesa_callback_token: str = ''
    mpesa_timeout_s: float = 10.0
    mpesa_query_after_s: int = 90
    mpesa_query_every_s: int = 120
    price_sources: str = ''
    price_min_sources: int = 2
    price_outlier_pct: float = 5.0
    price_refresh_s: int = 60
    price_timeout_s: float = 5.0
    price_manual_kes_per_btc: int = 0
    price_manual_until: str = ''
    service_name: str = 'SatsPesa'
    admin_session_minutes: int = 30
    support_phone: str = ''
    default_region: str = 'KE'
    default_language: str = 'en'
    log_level: str = 'INFO'
    ussd_callback_token: str = ''
    ussd_allowed_networks: tuple = ()
    trusted_proxy_count: int = 0
    metrics_token: str = ''
    lightning_address_domain: str = ''
    lightning_webhook_token: str = ''
    invoice_poll_s: int = 15
    worker_in_process: bool = True
    worker_lease_s: int = 60
    rate_limits: bool = False
    write_behind_s: float = 1.0
    simulator_enabled: bool = True
    africastalking_sms_url: str = ""  # a test server instead of Africa's Talking (tests only)
    africastalking_airtime_url: str = ""  # the same for the Airtime API (tests only)

    def by_variable(self) -> dict[str, Any]:
        """{VARIABLE_NAME: value}, for an adapter that checks its settings and names the variable
        of a wrong one (Daraja's)."""
        return {field.name.upper(): getattr(self, field.name) for field in dataclasses.fields(self)}

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> Settings:
        """From upper-case names (a checked config mapping, or a test's few values); names it does
        not know (Flask's own) are left out, missing ones take the embedded default."""
        values = {}
        for field in dataclasses.fields(cls):
            name = field.name.upper()
            if name in mapping:
                values[field.name] = _typed(name, field.type, mapping[name], field.default)
        return cls(**values)


def _typed(name: str, kind: object, value: Any, default: Any) -> Any:
    """A value of the field's type: a string from the environment is parsed as config.py does."""
    if not isinstance(value, str) or kind == "str":
        return tuple(value) if kind == "tuple" else value
    if kind == "bool":
        return _flag(value, bool(default))
    if kind in ("int", "float"):
        return _number({name: value}, name, default)
    raise ConfigError(f"{name}: cannot read {value!r}")
