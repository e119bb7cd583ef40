"""SIM swap providers behind one small interface (SIM_SWAP_PROVIDER picks one):

- `simulated` (the embedded default): nothing is ever swapped unless marked; in demo mode
  `POST /test/sim-swap` marks a phone swapped now. Its answer is the phone's row in the database
  (helpers/wallet/sim_swap.py), so there is nothing to ask.
- `africastalking`: Africa's Talking Insights (`check_sim_swap_state`), queued, answered later by
  a callback (helpers/simswap/africastalking.py).
- `off`: no provider; money out is never held for a swap (create_sim_swap returns None).

Room for Safaricom's own query later: an adapter with `ask` (and `parse_callback` when it
answers by callback), registered in PROVIDERS.
"""

from __future__ import annotations

import datetime as dt
import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from helpers.infra.settings import Settings

PROVIDERS = ("simulated", "africastalking", "off")
# The adapters that talk to a provider, by dotted path: the interface never imports one by name.
ADAPTERS = {"africastalking": "helpers.simswap.africastalking.AfricasTalkingSimSwap"}


class SimSwapConfigError(RuntimeError):
    """The provider is misconfigured; the message names the setting."""


@dataclass(frozen=True)
class Reported:
    """A provider's word about one phone: swapped or not, and the last swap it knows of."""

    phone: str  # E.164
    swapped: bool
    last_swap_at: dt.datetime | None  # None: none known (or not said)
    request_id: str = ""  # the question it answers (AT's requestId)


@dataclass(frozen=True)
class Asked:
    """What asking gave: the question's id (the answer comes later, by callback), answers given at
    once, or neither (no answer: `error` says why)."""

    request_id: str = ""
    reported: tuple[Reported, ...] = field(default_factory=tuple)
    error: str = ""


class SimSwapProvider(ABC):
    name = "abstract"
    asks_ahead = False  # True: its answer comes later, so a session's first step asks

    @abstractmethod
    def ask(self, phone: str) -> Asked:
        """Ask about `phone` (E.164). Never raises for the provider's failures: `Asked.error`."""

    def parse_callback(self, body: Any) -> list[Reported]:
        """The answers in a callback's body (the caller was checked before); [] when none."""
        return []


class SimulatedSimSwap(SimSwapProvider):
    """The database row is the answer (a demo marks swaps): asking changes nothing."""

    name = "simulated"

    def ask(self, phone: str) -> Asked:
        return Asked()


def create_sim_swap(settings: Settings) -> SimSwapProvider | None:
    """The provider SIM_SWAP_PROVIDER names; None when it is off."""
    kind = settings.sim_swap_provider
    if kind == "off":
        return None
    if kind == "simulated":
        return SimulatedSimSwap()
    if kind in ADAPTERS:
        if not (settings.africastalking_username and settings.africastalking_api_key):
            raise SimSwapConfigError("SIM_SWAP_PROVIDER=africastalking needs AFRICASTALKING_USERNAME and "
                                     "AFRICASTALKING_API_KEY")
        module, _, name = ADAPTERS[kind].rpartition(".")
        adapter = getattr(importlib.import_module(module), name)
        return adapter(settings.africastalking_username, settings.africastalking_api_key,
                       settings.africastalking_insights_url, settings.mpesa_timeout_s)
    raise SimSwapConfigError(f"SIM_SWAP_PROVIDER={kind!r}: use {', '.join(PROVIDERS)}")
