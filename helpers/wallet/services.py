"""What a request needs, built once per app: database, policy, Lightning, M-Pesa, SMS, config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from database import Database
from helpers.mpesa.provider import MpesaProvider
from helpers.wallet.rules import Policy
from helpers.infra.sms import SmsDispatcher
from helpers.infra.writebehind import WriteBehind
from lightning import LightningBackend


@dataclass
class Services:
    db: Database
    policy: Policy
    lightning: LightningBackend
    mpesa: MpesaProvider
    sms: SmsDispatcher
    config: dict[str, Any]
    openings: WriteBehind | None = None  # session rows written behind (None: written at once)

    @property
    def pepper(self) -> str:
        return self.config["PIN_PEPPER"]

    @property
    def service_code(self) -> str:
        return self.config["USSD_SERVICE_CODE"]
