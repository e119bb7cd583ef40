"""The population registry behind one small interface (ID_REGISTRY picks one):

- `simulated` (the embedded default and the tests; refused in production): a national ID number
  of 7 or 8 digits not starting with 0 is on record with the names and date of birth typed,
  except numbers ending in 000, which are not on record (to show a refusal in a demo).
- `off`: no registry; Verify my ID says it is not available, and only an operator's check of
  documents (tier 2) raises a customer's limits.

A real provider (IPRS through a licensed KYC vendor) is an adapter with `check`, written when an
operator signs with one and registered in ADAPTERS; the wallet never imports one by name.
"""

from __future__ import annotations

import datetime as dt
import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass

from helpers.infra.settings import Settings

REGISTRIES = ("simulated", "off")
ADAPTERS: dict[str, str] = {}  # name -> dotted path of a real provider's class, when there is one
# What the registry said (each has a message kyc.<outcome> in helpers/infra/i18n.py)
MATCHED, NO_MATCH, NOT_FOUND, UNAVAILABLE = "matched", "no-match", "not-found", "unavailable"


@dataclass(frozen=True)
class IdAnswer:
    outcome: str  # MATCHED, NO_MATCH (names or birth date differ), NOT_FOUND, UNAVAILABLE
    names: str = ""  # the names as the registry holds them (MATCHED)


class IdRegistry(ABC):
    name = ""

    @abstractmethod
    def check(self, id_number: str, names: str, birth_date: dt.date) -> IdAnswer:
        """Does the registry hold this ID number with these names and this date of birth?"""


class SimulatedRegistry(IdRegistry):
    name = "simulated"

    def check(self, id_number: str, names: str, birth_date: dt.date) -> IdAnswer:
        if not (7 <= len(id_number) <= 8 and id_number.isdigit()) or id_number.startswith("0") \
                or id_number.endswith("000"):
            return IdAnswer(NOT_FOUND)
        return IdAnswer(MATCHED, names)


def create_registry(settings: Settings) -> IdRegistry | None:
    """The registry ID_REGISTRY names (None: off)."""
    name = settings.id_registry
    if name == "off":
        return None
    if name == "simulated":
        return SimulatedRegistry()
    module, _, cls = ADAPTERS[name].rpartition(".")
    made: IdRegistry = getattr(importlib.import_module(module), cls)(settings)
    return made
