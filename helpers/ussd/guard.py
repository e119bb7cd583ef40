"""Issue 33 on the phone: the SIM swap hold and a Forgot-PIN reset under way, checked where money
out begins (a menu choice, only when it is the screen shown now) and again at the step that acts
(the PIN step), from the phone's cached row: never a network call."""

from __future__ import annotations

import dataclasses
import datetime as dt

from helpers.ussd import quoting
from helpers.ussd.screen import Ctx
from helpers.ussd.sessions import SessionView
from helpers.ussd.walker import End, Push, Result
from helpers.wallet import pin_reset, sim_swap
from helpers.wallet.services import Services
from helpers.wallet.users import UserView
from models import utcnow

FORGOT = "9"  # the choice on every screen that asks for the PIN (never a PIN: PINs are longer)
_RESET = "g"  # session memory: the reset under way shown at this token's position (its due time)


def refusal_text(ctx: Ctx, reason: str | None, what: str = sim_swap.MONEY_OUT) -> str:
    """Why a SIM swap stops `what`, and what to do."""
    if reason == "sim-swap-unknown":
        if what == sim_swap.MONEY_OUT:
            return ctx.t("simswap.unknown", max=ctx.value("sim-swap-unknown-max-sats"))
        return ctx.t("simswap.retry")
    return ctx.t("simswap.hold")


def before_money_out(ctx: Ctx) -> Result | None:
    """At a menu choice that leads to money out: a SIM swap hold ends the session saying why; a
    reset under way shows the screen that cancels it with the current PIN. Checked when the choice
    is the last token (the screen shown now); what it showed is remembered for the session's later
    requests, which replay the choice (the PIN step checks again anyway). None: go on."""
    slot = f"{_RESET}{ctx.position}"
    if slot in ctx.choices:
        return Push("reset.pending", {"due": ctx.choices[slot]})
    if not ctx.final:
        return None
    decision, guard = sim_swap.check(ctx.svc, ctx.user.phone, sim_swap.MONEY_OUT)
    if not decision.allowed:
        return End(refusal_text(ctx, decision.reason))
    if guard.reset_due_at is not None:
        ctx.choices[slot] = guard.reset_due_at.isoformat()
        return Push("reset.pending", {"due": ctx.choices[slot]})
    return None


def before_pin_change(ctx: Ctx) -> Result | None:
    """Before a PIN change (the choice, and again the step that saves it): a SIM swap hold refuses."""
    decision, _ = sim_swap.check(ctx.svc, ctx.user.phone, sim_swap.PIN_CHANGE)
    return None if decision.allowed else End(refusal_text(ctx, decision.reason, sim_swap.PIN_CHANGE))


def amount_out(ctx: Ctx, data: dict) -> int:
    """The sats a PIN step's action takes out (a quote's sats and fee, or the amount)."""
    if "quote" in data:
        quote = quoting.quote_of(ctx, data["quote"])
        return quote.sats + quote.fee_sats
    return int(data.get("amount") or 0)


def hours_left(due: str) -> int:
    """Whole hours left until a reset remembered as an ISO time is due (at least 1 while shown)."""
    return max(1, pin_reset.hours_left(dt.datetime.fromisoformat(due)))


def first_step(svc: Services, user: UserView, view: SessionView) -> UserView:
    """A registered caller's first step of a session: a Forgot-PIN reset now due is completed (this
    dial then asks for a new PIN), and a provider that answers later is asked ahead about the SIM
    when its cached answer is old (a job for the worker). Both facts came with the step's read."""
    now = utcnow()
    if view.reset_due_at is not None and view.reset_due_at <= now \
            and pin_reset.complete(svc, user.phone) == pin_reset.DONE:
        user = dataclasses.replace(user, pin_hash=None, pin_clean=True)
    if svc.sim_swap is not None and svc.sim_swap.asks_ahead and (view.ask_after is None or view.ask_after <= now):
        sim_swap.want_answer(svc.db, svc.policy, user.phone)
    return user
