"""The policy engine: typed questions to the MeTTa knowledge base in `atoms.metta`.

One MeTTa instance per process, built lazily on first use (so never in a gunicorn master before
the fork) and guarded by a lock: hyperon objects are not thread-safe. The policy is read-only and
every question is a pure function of its arguments, so each answer is kept, already turned into
its Python value (int, Decision, ...), in a bounded least-recently-used cache per process: a
repeated question costs a dictionary lookup, not an evaluation nor a conversion of atoms.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyperon import MeTTa

from helpers.infra.text import is_digits

ATOMS_PATH = Path(__file__).resolve().parents[2] / "atoms.metta"
_CACHE_LIMIT = 8192


class PolicyError(RuntimeError):
    """The knowledge base answered with an error or with something that is not an answer."""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str | None = None  # a catalog key suffix when denied, e.g. "insufficient-balance"


@dataclass(frozen=True)
class PinFailure:
    attempts_left: int  # 0 when locked
    lock_minutes: int  # 0 when not locked


class Policy:
    """Answers policy questions. Arguments are Python ints; never user text."""

    def __init__(self, path: Path = ATOMS_PATH) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._metta: MeTTa | None = None
        self._pid = 0
        self._cache: dict[str, list] = {}
        self._answers: OrderedDict[str, Any] = OrderedDict()  # expression -> parsed answer, LRU

    # -------------------------------------------------------------- engine
    def _engine(self) -> MeTTa:
        if self._metta is None or self._pid != os.getpid():
            metta = MeTTa()
            metta.run(self._path.read_text(encoding="utf-8"))
            self._metta, self._pid, self._cache = metta, os.getpid(), {}
            self._answers = OrderedDict()
        return self._metta

    def warm_up(self) -> None:
        """Load the knowledge base now (call after fork)."""
        with self._lock:
            self._engine()

    def query(self, expression: str, cache: bool = True, shown: str | None = None) -> list:
        """Evaluate `expression` and return its results as atoms. Raises PolicyError, whose
        message shows `shown` instead of the expression when given (for secrets)."""
        label = shown or expression
        with self._lock:
            cached = self._cache.get(expression) if cache else None
            if cached is not None and self._pid == os.getpid():
                return cached
            try:
                results = self._engine().run("!" + expression)
            except RuntimeError as exc:
                raise PolicyError(f"{label}: evaluation failed") from exc
            atoms = results[0] if results else []
            for atom in atoms:
                if str(atom).startswith("(Error"):
                    raise PolicyError(f"{label} -> {atom if shown is None else '(Error ...)'}")
            if not atoms:
                raise PolicyError(f"{label} -> no result")
            if cache:
                if len(self._cache) >= _CACHE_LIMIT:
                    self._cache.clear()
                self._cache[expression] = atoms
            return atoms

    def _answer(self, expression: str, parse: Callable[[str, list], Any]) -> Any:
        """The parsed answer to `expression`, from the LRU cache or evaluated (then kept)."""
        answers = self._answers
        if self._pid == os.getpid():
            try:
                value = answers[expression]
            except KeyError:
                pass
            else:
                with self._lock:
                    if expression in answers:
                        answers.move_to_end(expression)
                return value
        value = parse(expression, self.query(expression, cache=False))
        with self._lock:
            answers = self._answers  # a fork may have replaced it meanwhile
            answers[expression] = value
            if len(answers) > _CACHE_LIMIT:
                answers.popitem(last=False)
        return value

    @staticmethod
    def _parse_int(expression: str, atoms: list) -> int:
        atom = atoms[0]
        try:
            value = atom.get_object().value
        except AttributeError as exc:
            raise PolicyError(f"{expression} -> {atom} is not a number") from exc
        if isinstance(value, bool) or not isinstance(value, int):
            raise PolicyError(f"{expression} -> {value!r} is not an integer")
        return value

    @staticmethod
    def _parse_decision(expression: str, atoms: list) -> Decision:
        text = str(atoms[0])
        if text == "Allow":
            return Decision(True)
        if text.startswith("(Deny ") and text.endswith(")"):
            return Decision(False, text[len("(Deny ") : -1])
        raise PolicyError(f"{expression} -> {text} is not a decision")

    @staticmethod
    def _parse_bool(expression: str, atoms: list) -> bool:
        text = str(atoms[0])
        if text not in ("True", "False"):
            raise PolicyError(f"{expression} -> {text} is not True or False")
        return text == "True"

    def _int(self, expression: str) -> int:
        return self._answer(expression, self._parse_int)

    def _bool(self, expression: str) -> bool:
        return self._answer(expression, self._parse_bool)

    def _decision(self, expression: str, secret: bool = False) -> Decision:
        if secret:  # a PIN is never kept in memory longer than its question
            atoms = self.query(expression, cache=False, shown="(pin-decision ****)")
            try:
                return self._parse_decision(expression, atoms)
            except PolicyError:
                raise PolicyError("(pin-decision ****) is not a decision") from None
        return self._answer(expression, self._parse_decision)

    # -------------------------------------------------------------- numbers
    def value(self, name: str) -> int:
        """A named constant of the policy, e.g. value('payment-min-sats')."""
        if not name.replace("-", "").isalnum():
            raise PolicyError(f"bad policy name {name!r}")
        return self._int(f"({name})")

    def value_of(self, name: str, argument: str) -> int:
        """A constant of the policy that takes a word, e.g. value_of('spread-bps', 'buy')."""
        if not name.replace("-", "").isalnum() or not argument.replace("-", "").isalnum():
            raise PolicyError(f"bad policy name {name!r} {argument!r}")
        return self._int(f"({name} {argument})")

    def flag(self, name: str) -> bool:
        """A named yes/no of the policy, e.g. flag('savings-early-break-allowed')."""
        if not name.replace("-", "").isalnum():
            raise PolicyError(f"bad policy name {name!r}")
        return self._bool(f"({name})")

    def early_break_fee(self, goal_sats: int) -> int:
        """The fee for taking a goal's `goal_sats` before its date (rounded up)."""
        return self._int(f"(savings-early-break-fee {int(goal_sats)})")

    def fee_sats(self, kind: str, amount_sats: int) -> int:
        """Fee for moving `amount_sats` by `kind`: internal, mpesa-withdraw, lightning or airtime."""
        if kind not in ("internal", "mpesa-withdraw", "lightning", "airtime"):
            raise PolicyError(f"unknown fee kind {kind!r}")
        return self._int(f"(fee-sats {kind} {int(amount_sats)})")

    # Conversions at `price`, whole KES per bitcoin (helpers/wallet/prices.py says which price).
    def kes_to_sats_credit(self, kes: int, price: int) -> int:
        """Sats a top-up of `kes` buys: the buy spread, rounded down."""
        return self._int(f"(kes-to-sats-credit {int(kes)} {int(price)})")

    def kes_to_sats_debit(self, kes: int, price: int) -> int:
        """Sats a withdrawal of `kes` costs (before its fee): the sell spread, rounded up."""
        return self._int(f"(kes-to-sats-debit {int(kes)} {int(price)})")

    def sats_to_kes(self, sats: int, price: int) -> int:
        return self._int(f"(sats-to-kes {int(sats)} {int(price)})")

    def kes_to_sats_send(self, kes: int, price: int) -> int:
        return self._int(f"(kes-to-sats-send {int(kes)} {int(price)})")

    def kes_bounds(self) -> tuple[int, int]:
        """The KES a customer may type (top-up, withdrawal, till, paybill, a send in KES): round
        numbers, whatever the price."""
        return self.value("kes-min"), self.value("kes-max")

    # -------------------------------------------------------------- decisions
    def kes_range(self, kes: int) -> Decision:
        """An amount typed in KES within kes-min .. kes-max."""
        return self._decision(f"(kes-range-decision {int(kes)})")

    def amount(self, amount_sats: int) -> Decision:
        return self._decision(f"(amount-decision {int(amount_sats)})")

    def spend(self, amount_sats: int, fee_sats: int, balance_sats: int, sent_today_sats: int) -> Decision:
        return self._decision(
            f"(spend-decision {int(amount_sats)} {int(fee_sats)} {int(balance_sats)} {int(sent_today_sats)})"
        )

    def left_today(self, sent_today_sats: int) -> int:
        """What a customer who sent `sent_today_sats` today may still send before midnight UTC."""
        return max(0, self.value("daily-send-limit-sats") - sent_today_sats)

    def lightning_send(self, amount_sats: int, fee_sats: int, balance_sats: int, sent_today_sats: int,
                       payee_min_sats: int, payee_max_sats: int) -> Decision:
        """A payment to a Lightning address: the payee's bounds, then spend-decision."""
        return self._decision(
            f"(lightning-send-decision {int(amount_sats)} {int(fee_sats)} {int(balance_sats)} "
            f"{int(sent_today_sats)} {int(payee_min_sats)} {int(payee_max_sats)})"
        )

    def topup(self, kes: int, price: int) -> Decision:
        return self._decision(f"(topup-decision {int(kes)} {int(price)})")

    def withdraw(self, kes: int, balance_sats: int, sent_today_sats: int, price: int) -> Decision:
        return self._decision(
            f"(withdraw-decision {int(kes)} {int(balance_sats)} {int(sent_today_sats)} {int(price)})")

    def airtime(self, kes: int, balance_sats: int, sent_today_sats: int, price: int) -> Decision:
        return self._decision(
            f"(airtime-decision {int(kes)} {int(balance_sats)} {int(sent_today_sats)} {int(price)})")

    def airtime_bounds(self) -> tuple[int, int]:
        """The KES a customer may buy airtime for, whatever the price."""
        return self.value("airtime-min-kes"), self.value("airtime-max-kes")

    SIM_SWAP_WHATS = ("money-out", "pin-change", "pin-reset")

    def sim_swap(self, what: str, held: bool, swap_since_pin: bool, fresh: bool, amount_sats: int,
                 spent_sats: int) -> Decision:
        """May `what` (money-out, pin-change, pin-reset) go on, given whether a SIM swap holds the
        number (no operator cleared it), whether a swap no operator cleared came since the PIN was
        set, whether the provider's answer is fresh, the sats leaving now and those that left since
        the last answer (fees included)? Deny reasons: sim-swap-hold, sim-swap-unknown."""
        if what not in self.SIM_SWAP_WHATS:
            raise PolicyError(f"unknown sim-swap question {what!r}")
        return self._decision(f"(sim-swap-decision {what} {bool(held)} {bool(swap_since_pin)} {bool(fresh)} "
                              f"{max(0, int(amount_sats))} {max(0, int(spent_sats))})")

    def sim_swap_starts_hold(self, days_old: int, after_answer: bool) -> bool:
        """Does a swap newly told, `days_old` whole days old then (happening on or after the day of an
        earlier answer: `after_answer`), put the number on hold until an operator clears it?"""
        return self._bool(f"(sim-swap-starts-hold {max(0, int(days_old))} {bool(after_answer)})")

    # Monitoring (issue 34): each rule gets the aggregated facts of one customer and says hit or not.
    AML_RULES = {"structuring": 1, "fan-in": 1, "fan-out": 1, "rapid-in-out": 2, "dormant-active": 2,
                 "after-reset": 1, "shared-destination": 1}

    def aml_hit(self, rule: str, *facts: int) -> bool:
        """Do `facts` (whole numbers, as the rule in atoms.metta takes them) make a hit of `rule`?"""
        if self.AML_RULES.get(rule) != len(facts):
            raise PolicyError(f"unknown monitoring rule or facts: {rule} {facts}")
        return self._bool(f"(aml-{rule} " + " ".join(str(max(0, int(f))) for f in facts) + ")")

    def aml_near_cap_floor(self, cap_sats: int) -> int:
        """The smallest amount that is 'just under' a cap of `cap_sats` (aml-near-cap-pct below)."""
        return self._int(f"(aml-near-cap-floor {int(cap_sats)})")

    def pin(self, pin: str) -> Decision:
        """Is `pin` (already checked to be digits of the right length) strong enough?"""
        if not is_digits(pin):
            raise PolicyError("pin must be digits")
        return self._decision("(pin-decision " + " ".join(pin) + ")", secret=True)

    def rate_limit(self, name: str) -> tuple[int, int]:
        """(count, window seconds) of an abuse limit, e.g. rate_limit('requests-per-phone')."""
        if not name.replace("-", "").isalnum():
            raise PolicyError(f"bad limit name {name!r}")
        return self._answer(f"(rate-limit {name})", self._parse_rate_limit)

    @staticmethod
    def _parse_rate_limit(expression: str, atoms: list) -> tuple[int, int]:
        atom = str(atoms[0])
        parts = atom.strip("()").split()
        if len(parts) != 2 or not all(is_digits(p) for p in parts):
            raise PolicyError(f"{expression} -> {atom}")
        return int(parts[0]), int(parts[1])

    def pin_failure(self, failures: int, previous_locks: int) -> PinFailure:
        return self._answer(f"(pin-failure-decision {int(failures)} {int(previous_locks)})", self._parse_pin_failure)

    @staticmethod
    def _parse_pin_failure(expression: str, atoms: list) -> PinFailure:
        atom = str(atoms[0])
        kind, _, number = atom.strip("()").partition(" ")
        if kind == "Retry" and is_digits(number):
            return PinFailure(int(number), 0)
        if kind == "Lock" and is_digits(number):
            return PinFailure(0, int(number))
        raise PolicyError(f"pin-failure-decision -> {atom}")


_policy = Policy()


def policy() -> Policy:
    """The process's policy engine."""
    return _policy
