"""Replays a golden flow (tests/golden_flows.py) through the Flask test client and renders it as
a transcript: every text posted, every reply (CON/END and the whole screen) and the SMS each step
queued, with volatile values replaced by numbered placeholders (`Normaliser`).

Transcript format (one file per flow, tests/golden/<name>.<lang>.txt):

    --- session 2: +254712345678 dials (note)      a new USSD session
    > "1*0787654321"                                 the `text` field posted (whole path)
    < CON Send to +254787654321                      the reply, one "< " line per screen line
    < Enter amount in sats (1,000-1,000,000):
      sms +254787654321: <message>                   an SMS queued by that step
    --- action: ...                                  a between-step action and its result

Lines are byte-exact except for the placeholders; control characters other than the newline
(and backslashes) are escaped, so that a rendering maps back to exactly one screen.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from models import SmsOutbox
from tests.conftest import Dialer, configure
from tests.golden_flows import Flow, PayInvoice, Session, SetConfig, SimSwap, resolve_inputs

# ------------------------------------------------------------------ normalising
_ALPHABET = "A-HJ-NP-Z2-9"  # helpers/infra/refs.py: new_reference's alphabet (no 0/O, 1/I)
_EDGE_L, _EDGE_R = r"(?<![A-Za-z0-9])", r"(?![A-Za-z0-9])"

# (placeholder kind, pattern): tried in this order; each distinct value gets the next number.
NUMBERED = (
    # BOLT11 invoices (mock node: real signed invoices with a random hash and the time in them)
    ("BOLT11", re.compile(r"\bln(?:bcrt|bc|tbs|tb|sb)[0-9a-z]{20,}")),
    # payment hashes and other 64-hex ids
    ("HASH", re.compile(_EDGE_L + r"[0-9a-f]{64}" + _EDGE_R)),
    # simulated M-Pesa payout receipts: "S" + new_reference(9)
    ("RECEIPT", re.compile(_EDGE_L + rf"S[{_ALPHABET}]{{9}}" + _EDGE_R)),
    # references: new_reference() (8 characters of its alphabet)
    ("REF", re.compile(_EDGE_L + rf"[{_ALPHABET}]{{8}}" + _EDGE_R)),
    # a chama vote's one-time code, after the word the SMS asks to reply with (random digits)
    ("OTP", re.compile(r"(?:(?<=YES )|(?<=NO )|(?<=NDIYO )|(?<=HAPANA ))[0-9]{4,12}(?![0-9])")),
)
# Unnumbered: the day a row was made (history shows dd/mm) and the last day to claim a send (its
# SMS shows dd/mm/yyyy) change with the calendar only.
FIXED = (
    ("<DD/MM/YYYY>", re.compile(r"(?<![0-9/])[0-3][0-9]/[01][0-9]/[0-9]{4}(?![0-9/])")),
    ("<DD/MM>", re.compile(r"(?<![0-9/])[0-3][0-9]/[01][0-9](?![0-9/])")),
)


@dataclass
class Normaliser:
    """Replaces volatile values with placeholders numbered by first appearance in one flow, so
    that the same reference keeps the same placeholder everywhere it appears (an invoice's ref in
    the reply, in the SMS and on the payer's screen)."""

    seen: dict[str, str] = field(default_factory=dict)  # raw value -> placeholder
    counts: dict[str, int] = field(default_factory=dict)

    def __call__(self, text: str) -> str:
        for kind, pattern in NUMBERED:
            text = pattern.sub(lambda m, kind=kind: self._placeholder(kind, m.group(0)), text)
        for placeholder, pattern in FIXED:
            text = pattern.sub(placeholder, text)
        return text

    def _placeholder(self, kind: str, raw: str) -> str:
        if raw not in self.seen:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            self.seen[raw] = f"<{kind}-{self.counts[kind]}>"
        return self.seen[raw]

    def raw(self, placeholder: str) -> str:
        """The value a placeholder stands for (an action refers to what a screen showed)."""
        for value, shown in self.seen.items():
            if shown == placeholder:
                return value
        raise KeyError(f"{placeholder} has not appeared in this transcript yet")


# ------------------------------------------------------------------ rendering
def escape(line: str) -> str:
    """Backslashes and control characters (other than the newline, which splits lines) escaped."""
    out = []
    for char in line:
        if char == "\\":
            out.append("\\\\")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return "".join(out)


def quote(text: str) -> str:
    return '"' + escape(text).replace('"', '\\"') + '"'


class ScriptError(AssertionError):
    """The flow's script itself is wrong (e.g. it types on after an END)."""


@dataclass
class Replay:
    client: Any
    wallet: Any
    flow: Flow
    normalise: Normaliser = field(default_factory=Normaliser)
    lines: list[str] = field(default_factory=list)
    sessions: int = 0
    last_sms_id: int = 0

    def run(self) -> str:
        self.lines += [
            f"# golden transcript: {self.flow.name} ({self.flow.lang})",
            "# recorded by tests/unit/test_golden_transcripts.py; re-record with",
            "#   GOLDEN_UPDATE=1 .venv/bin/python -m pytest tests/unit/test_golden_transcripts.py",
        ]
        self.last_sms_id = self._max_sms_id()  # the demo seed's rows are not part of any flow
        for step in self.flow.steps:
            self.lines.append("")
            if isinstance(step, Session):
                self._session(step)
            elif isinstance(step, PayInvoice):
                self._pay_invoice(step)
            elif isinstance(step, SimSwap):
                self.lines.append(f"--- action: {step.phone}'s SIM card is swapped (simulated provider)")
                response = self.client.post("/test/sim-swap", data={"phoneNumber": step.phone})
                self.lines.append(f"= HTTP {response.status_code}")
                self._new_sms()
            elif isinstance(step, SetConfig):
                self.lines.append(f"--- setting: {step.key} = {step.value!r}")
                configure(self.wallet, **{step.key.lower(): step.value})
            else:
                raise ScriptError(f"unknown step {step!r}")
        return "\n".join(self.lines) + "\n"

    # -------------------------------------------------------------- steps
    def _session(self, step: Session) -> None:
        self.sessions += 1
        note = f" ({step.note})" if step.note else ""
        self.lines.append(f"--- session {self.sessions}: {step.phone} dials{note}")
        phone = Dialer(self.client, step.phone)
        typed = resolve_inputs(step.inputs, self.wallet.policy)
        self._show(phone.start(), "")
        for n, answer in enumerate(typed):
            if phone.reply.startswith("END"):
                raise ScriptError(f"{self.flow.id}, session {self.sessions}: the session ended, yet the script "
                                  f"types {typed[n:]!r}; dial a new Session instead")
            self._show(phone.press(answer), phone.text)

    def _show(self, reply: str, text: str) -> None:
        self.lines.append(f"> {quote(text)}")
        self.lines.extend("< " + escape(line) for line in self.normalise(reply).split("\n"))
        self._new_sms()

    def _pay_invoice(self, step: PayInvoice) -> None:
        reference = self.normalise.raw(step.placeholder)
        self.lines.append(f"--- action: an outside Lightning wallet pays invoice {step.placeholder} (mock node)")
        response = self.client.post("/test/pay-invoice", data={"reference": reference})
        body = response.get_json(silent=True) or {}
        result = {k: body.get(k) for k in ("reference", "status", "error") if k in body}
        shown = ", ".join(f"{k}={self.normalise(str(v))}" for k, v in result.items())
        self.lines.append(f"= HTTP {response.status_code} {shown}")
        self._new_sms()

    # -------------------------------------------------------------- SMS
    def _max_sms_id(self) -> int:
        with self.wallet.db.read() as s:
            return max(s.scalars(select(SmsOutbox.id)).all(), default=0)

    def _new_sms(self) -> None:
        with self.wallet.db.read() as s:
            rows = s.execute(
                select(SmsOutbox.id, SmsOutbox.phone, SmsOutbox.message)
                .where(SmsOutbox.id > self.last_sms_id).order_by(SmsOutbox.id)
            ).all()
        for row in rows:
            self.last_sms_id = max(self.last_sms_id, row.id)
            self.lines.append(f"  sms {row.phone}: {escape(self.normalise(row.message))}")


def replay(client: Any, wallet: Any, flow: Flow) -> str:
    return Replay(client, wallet, flow).run()
