"""Issue 33 on the phone: the SIM swap hold and a Forgot-PIN reset under way, checked where money
out begins (a menu choice, only when it is the screen shown now) and again at the step that acts
(the PIN step), from the phone's cached row: never a network call."""

from __future__ import annotations

import datetime as dt

from helpers.ussd import quoting
from helpers.ussd.screen import Ctx
from helpers.ussd.walker import End, Push, Result
from helpers.wallet.rules import Decision
from helpers.wallet import pin_reset, sim_swap
from helpers.wallet.services import Services
from models import utcnow

FORGOT = "9"  # the choice on every screen that asks for the PIN (never a PIN: PINs are longer)
_RESET = "g"  # session memory: the reset under way shown at this token's position (its due time)


def refusal_text(ctx: Ctx, reason: str | None, what: str = sim_swap.MONEY_OUT) -> str:
    """Why a SIM swap stops `what`, and what to do."""
    if reason == sim_swap.AML_HOLD:
        return ctx.t("aml.hold")
    if reason == "sim-swap-off":
        return ctx.t("forgot.off")
    if reason == "sim-swap-unknown":
        if what == sim_swap.MONEY_OUT:
            return ctx.t("simswap.unknown", max=ctx.value("sim-swap-unknown-max-sats"))
        return ctx.t("simswap.retry")
    return ctx.t("simswap.hold")


def check(ctx: Ctx, what: str, amount_sats: int = 0) -> tuple[Decision, sim_swap.Guard]:
    """The SIM decision for `what` now (the row read again), asking the provider when its answer
    is not fresh. Money out counts what left since the last answer."""
    row = ctx.guard_row if ctx.guard_row is not None else sim_swap.read(ctx.svc.db, ctx.user.phone)
    ctx.guard_row = None  # read again by a later check of this request (a PIN step's, after the menu's)
    decision = sim_swap.decide(ctx.svc, row, what, amount_sats, started=ctx.started_at, user_id=ctx.user.id)
    sim_swap.ask_if_stale(ctx.svc, row, ctx.started_at)
    return decision, row


def forgot(ctx: Ctx) -> Result:
    """"9 Forgot PIN" pressed: its confirmation, or (the SIM swap provider off: a reset could hand
    the account to whoever holds the SIM) a screen that says to call customer care."""
    return Push("forgot") if ctx.svc.sim_swap is not None else End(ctx.t("forgot.off"))


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
    decision, row = check(ctx, sim_swap.MONEY_OUT)
    if not decision.allowed:
        return End(refusal_text(ctx, decision.reason))
    if row.reset_due_at is not None:
        ctx.choices[slot] = row.reset_due_at.isoformat()
        return Push("reset.pending", {"due": ctx.choices[slot]})
    return None


def before_pin_change(ctx: Ctx) -> Result | None:
    """Before a PIN change (the choice, the current PIN, and the step that saves it): a SIM swap
    hold, or no fresh answer, refuses."""
    decision, _ = check(ctx, sim_swap.PIN_CHANGE)
    return None if decision.allowed else End(refusal_text(ctx, decision.reason, sim_swap.PIN_CHANGE))


def amount_out(ctx: Ctx, data: dict) -> int:
    """The sats a PIN step's action takes out, fee included (a quote's sats and fee; an amount and
    the policy's fee for its kind: the most a Lightning payment may cost)."""
    if "quote" in data:
        quote = quoting.quote_of(ctx, data["quote"])
        return quote.sats + quote.fee_sats
    amount = int(data.get("amount") or 0)
    kind = "lightning" if data.get("action") == "lnsend" else "internal"
    return amount + (ctx.svc.policy.fee_sats(kind, amount) if amount > 0 else 0)


def hours_left(due: str) -> int:
    """Whole hours left until a reset remembered as an ISO time is due (at least 1 while shown)."""
    return max(1, pin_reset.hours_left(dt.datetime.fromisoformat(due)))


RESET_DUE = "reset"  # session memory: a Forgot-PIN reset is due, so this dial sets the new PIN


def first_step(svc: Services, phone: str, ask_after: dt.datetime | None, reset_due_at: dt.datetime | None,
               choices: dict) -> None:
    """A registered caller's first request of a session (the main menu, or a dialled shortcut): a
    Forgot-PIN reset now due makes this session the one that sets the new PIN (remembered in
    `choices`), and a provider that answers later is asked again about the SIM once its answer is
    older than `sim-swap-ask-again-minutes` (a job for the worker). Both facts came with the step's
    read (the main menu) or one index lookup (a dialled shortcut)."""
    now = utcnow()
    if reset_due_at is not None and reset_due_at <= now:
        choices[RESET_DUE] = reset_due_at.isoformat()
    if svc.sim_swap is not None and svc.sim_swap.asks_ahead and (ask_after is None or ask_after <= now):
        sim_swap.want_answer(svc.db, svc.policy, phone)
