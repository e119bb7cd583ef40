"""What a request needs, built once per app: database, policy, Lightning, M-Pesa, airtime, SMS,
settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from database import Database
from helpers.airtime.provider import AirtimeProvider
from helpers.idcheck.registry import IdRegistry
from helpers.mpesa.provider import MpesaProvider
from helpers.simswap.provider import SimSwapProvider
from helpers.wallet.prices import PriceBook
from helpers.wallet.rules import Policy
from helpers.infra.rail import Rail
from helpers.infra.sms import SmsDispatcher
from helpers.infra.writebehind import WriteBehind
from lightning import LightningBackend
from helpers.infra.settings import Settings


@dataclass
class Services:
    db: Database
    policy: Policy
    lightning: LightningBackend
    mpesa: MpesaProvider
    sms: SmsDispatcher
    settings: Settings
    openings: WriteBehind | None = None  # session rows written behind (None: written at once)
    airtime: AirtimeProvider | None = None  # None: airtime is off
    sim_swap: SimSwapProvider | None = None  # None: SIM swaps are not checked (SIM_SWAP_PROVIDER=off)
    id_registry: IdRegistry | None = None  # None: no registry (ID_REGISTRY=off): tier 1 cannot be reached
    prices: PriceBook = field(init=False)  # set by the app factory, after the database
    # The payout rails by name, each made from these services when asked (None: that rail is off).
    # The app factory registers the adapters; the wallet never imports one.
    rails: dict[str, Callable[[Services], Rail | None]] = field(default_factory=dict)

    def rail(self, name: str) -> Rail | None:
        make = self.rails.get(name)
        return make(self) if make is not None else None

    @property
    def pepper(self) -> str:
        return self.settings.pin_pepper

    @property
    def service_code(self) -> str:
        return self.settings.ussd_service_code
