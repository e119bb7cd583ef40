"""M-Pesa providers behind one interface. `simulated` (the default) takes the confirmation code a
customer types as proof of a top-up and pays withdrawals out at once with a made-up receipt."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from helpers.refs import new_reference
from lightning import State

CODE_PATTERN = re.compile(r"^[A-Z0-9]{10}$")


class MpesaConfigError(RuntimeError):
    """The provider is misconfigured; the message names the setting."""


@dataclass(frozen=True)
class PayoutResult:
    state: State  # SUCCEEDED, FAILED (nothing was paid) or PENDING (not known yet)
    receipt: str = ""
    error: str = ""


def normalise_code(raw: str) -> str | None:
    """An M-Pesa confirmation code: 10 letters or digits (case-insensitive), or None."""
    code = (raw or "").strip().upper()
    return code if CODE_PATTERN.match(code) else None


class MpesaProvider(ABC):
    name = "abstract"

    @abstractmethod
    def confirm_topup(self, code: str, phone: str, kes: int) -> bool:
        """Does the customer's confirmation code prove a payment of `kes` from `phone`?"""

    @abstractmethod
    def payout(self, phone: str, kes: int, reference: str) -> PayoutResult:
        """Send `kes` to `phone`."""


class SimulatedMpesa(MpesaProvider):
    name = "simulated"

    def confirm_topup(self, code: str, phone: str, kes: int) -> bool:
        return normalise_code(code) is not None

    def payout(self, phone: str, kes: int, reference: str) -> PayoutResult:
        return PayoutResult(State.SUCCEEDED, receipt="S" + new_reference(9))


def create_provider(config: dict[str, Any]) -> MpesaProvider:
    name = config.get("MPESA_PROVIDER", "simulated")
    if name == "simulated":
        return SimulatedMpesa()
    if name == "daraja":
        raise MpesaConfigError("MPESA_PROVIDER=daraja is not built yet; use simulated")
    raise MpesaConfigError(f"MPESA_PROVIDER={name!r} is unknown; choose simulated")
