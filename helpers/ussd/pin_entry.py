"""The PIN protocol: choosing a PIN, the PIN step before money moves, changing the PIN.

The PIN step (`PinStep`) is the only screen that runs a money action (helpers/ussd/actions.py),
and it hands the action the proof of a right PIN that the wallet's use cases ask for
(use_cases.require_pin). Only the last token of a path is ever checked, so a path typed in one
request, or replayed with a different PIN, cannot be used to guess."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from helpers.infra.phone import local
from helpers.infra.text import is_digits
from helpers.ussd import actions, guard, quoting, save_screens
from helpers.ussd.business_screens import payee
from helpers.ussd.screen import Ctx, begin_acting, deny_text, expired
from helpers.ussd.walker import Back, End, Home, Push, Result, Retry
from helpers.wallet import pin_reset, sim_swap
from helpers.wallet.customers import users
from helpers.wallet.ledger import movements
from helpers.wallet.errors import AccountLocked


# ------------------------------------------------------------------ choosing a PIN
class NewPin:
    """Type a new PIN: format and strength are checked (the policy refuses weak ones)."""

    secret = True

    def __init__(self, prompt_key: str, repeat_screen: str) -> None:
        self.prompt_key, self.repeat_screen = prompt_key, repeat_screen

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t(self.prompt_key, digits=ctx.value("pin-length"))

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        problem = pin_problem(ctx, token)
        return Retry(problem) if problem else Push(self.repeat_screen, {"pin": token})


class RepeatNewPin:
    """Type it again; on a match (as the last token) `save` stores it and says what next."""

    secret = True

    def __init__(self, prompt_key: str, save: Callable[[Ctx, str], Result]) -> None:
        self.prompt_key, self.save = prompt_key, save

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t(self.prompt_key)

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        if token != data["pin"]:
            return Back(ctx.t("pin.mismatch"))
        if not ctx.final:
            return expired(ctx)
        return self.save(ctx, token)


def save_first_pin(ctx: Ctx, pin: str) -> Result:
    if not users.set_first_pin(ctx.svc.db, ctx.user.id, pin, ctx.svc.pepper):
        return expired(ctx)  # set by a parallel request of this phone: dial again
    return Home(ctx.t("pin.set"), onboarded=True)


def save_changed_pin(ctx: Ctx, pin: str) -> Result:
    held = guard.before_pin_change(ctx)  # a SIM swap reported while the new PIN was typed
    if held is not None:
        return held
    if not users.change_pin(ctx.svc.db, ctx.user, pin, ctx.svc.pepper):
        return expired(ctx)  # replaced meanwhile (a Forgot-PIN reset in another session)
    return End(ctx.t("pinchange.done"))


def pin_problem(ctx: Ctx, token: str) -> str | None:
    digits = ctx.value("pin-length")
    if len(token) != digits or not is_digits(token):
        return ctx.t("pin.format", digits=digits)
    decision = ctx.svc.policy.pin(token)
    return None if decision.allowed else deny_text(ctx, decision.reason or "")


class PinChangeOld:
    secret = True

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t("pinchange.old")

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        if token == guard.FORGOT:
            return guard.forgot(ctx)
        accepted = f"ok{ctx.position}"
        if not ctx.final:  # accepted only if it was checked, and right, when this very path typed it
            return Push("pinchange.new") if ctx.choices.get(accepted) == ctx.path_tag() else expired(ctx)
        held = guard.before_pin_change(ctx)  # read again before the PIN is looked at (no PIN oracle)
        if held is not None:
            return held
        refusal = verify_pin(ctx, token)
        if refusal is not None:
            return refusal
        pin_reset.cancel(ctx.svc.db, ctx.user.phone, ctx.lang)  # the current PIN cancels a reset under way
        ctx.choices[accepted] = ctx.path_tag()
        return Push("pinchange.new")


# ------------------------------------------------------------------ the PIN step that moves money
class PinStep:
    """Asks for the PIN, then performs data['action'] with the facts gathered on the way."""

    secret = True

    def prompt(self, ctx: Ctx, data: dict) -> str:
        if data["action"] == "withdraw":
            quote = quoting.quote_of(ctx, data["quote"])
            return ctx.t("withdraw.pin", kes=quote.kes, phone=data["phone"], sats=quote.sats, fee=quote.fee_sats,
                         valid=quoting.valid_minutes(ctx))
        if data["action"] == "mpesapay":
            quote = quoting.quote_of(ctx, data["quote"])
            return ctx.t("mpesapay.pin", kes=quote.kes, payee=payee(data), sats=quote.sats, fee=quote.fee_sats,
                         valid=quoting.valid_minutes(ctx))
        if data["action"] == "airtime":
            quote = quoting.quote_of(ctx, data["quote"])
            return ctx.t("airtime.pin", kes=quote.kes, phone=local(data["phone"], ctx.svc.settings.default_region),
                         sats=quote.sats, fee=quote.fee_sats, valid=quoting.valid_minutes(ctx))
        if data["action"] == "kyc":
            born = dt.date.fromisoformat(data["born"])
            # the reply is kept in the session row: the ID number's last digits only, as the account keeps
            return ctx.t("kyc.pin", id="***" + data["id"][-3:], names=data["names"], born=born.strftime("%d/%m/%Y"))
        return save_screens.pin_prompt(ctx, data) or ctx.t("pin.enter")

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        if token == guard.FORGOT:
            return guard.forgot(ctx)
        if not ctx.final:
            # A wrong PIN typed earlier in this session is skipped by the walker (it remembers
            # refusals), and a right one ended the session. Anything else here is a path nobody
            # typed screen by screen: it is never checked, so it cannot be used to guess.
            return expired(ctx)
        if "quote" in data and (again := quoting.renewed(ctx, data["quote"])) is not None:
            return again  # the PIN typed for the old numbers is not checked: asked again
        # SIM swap and Forgot PIN (issue 33), read again now: a swap reported, or a reset asked for,
        # since the menu choice. A hold refuses before the PIN is looked at (no PIN is confirmed
        # to a thief); under a reset, the right PIN cancels it and nothing is paid in this session.
        decision, held = guard.check(ctx, sim_swap.MONEY_OUT, guard.amount_out(ctx, data))
        if not decision.allowed:
            return End(guard.refusal_text(ctx, decision.reason))
        if held.reset_due_at is not None:
            refusal = verify_pin(ctx, token)
            if refusal is not None:
                return refusal
            if not pin_reset.cancel(ctx.svc.db, ctx.user.phone, ctx.lang):
                return End(ctx.t("reset.gone"))  # finished or cancelled by another session meanwhile
            return End(ctx.t("reset.cancelled-pay"))
        refusal, check = check_pin(ctx, token, debit_follows=data["action"] in actions.DEBIT_FIRST)
        if check is None:  # wrong, locked or not a PIN: `refusal` says which
            return refusal or expired(ctx)
        if data["action"] not in actions.MARK_WITHIN:  # those end the session with their money
            refused = begin_acting(ctx)
            if refused is not None:
                return refused
        try:
            reply = actions.ACTIONS[data["action"]](ctx, data, check.proof)
        except AccountLocked as exc:  # a parallel wrong guess locked the account after our read
            return End(ctx.t("pin.locked", minutes=exc.minutes))
        except Exception:
            if check.unordered and (refusal := nothing_moved_recheck(ctx, token)) is not None:
                return _ended(refusal)
            raise
        if check.unordered and (refusal := nothing_moved_recheck(ctx, token)) is not None:
            return _ended(refusal)
        return End(reply)


def _ended(result: Result) -> End:
    """After acting, the session ends whatever the answer: a re-prompt would reopen it on a
    resumable screen (the PIN) that another dial could continue."""
    return result if isinstance(result, End) else End(getattr(result, "message", ""))


def nothing_moved_recheck(ctx: Ctx, token: str) -> Result | None:
    """After an action whose right PIN skipped the counted check: if it recorded no movement
    under this request's key (refused or failed), its answer would still tell a guesser that the
    PIN was right, so take the counted check first; it answers "locked" if a parallel guess
    locked the account meanwhile. None: answer as the action did. An action that holds a receipt
    has said so (`ctx.recorded`); otherwise the key is looked up."""
    if ctx.recorded or movements.find_by_key(ctx.svc.db, ctx.key) is not None:
        return None
    return verify_pin(ctx, token)


def verify_pin(ctx: Ctx, token: str) -> Result | None:
    """Check the PIN typed as the last token: None when right, else the screen to show. Every
    check counts towards the lock."""
    return check_pin(ctx, token)[0]


def check_pin(ctx: Ctx, token: str, *, debit_follows: bool = False) -> tuple[Result | None, users.PinCheck | None]:
    """(None and the check when the PIN is right, else the screen to show and None). Every wrong
    PIN counts towards the lock. `debit_follows`: the action after it does nothing outside its
    debit's transaction before the debit, which a locked account refuses, so a right PIN may
    skip the counted check (`unordered`, users.check_pin)."""
    digits = ctx.value("pin-length")
    if len(token) != digits or not is_digits(token):
        return Retry(ctx.t("pin.format", digits=digits)), None
    check = users.check_pin(ctx.svc.db, ctx.svc.policy, ctx.user, token, ctx.svc.pepper, debit_follows=debit_follows)
    if check.ok:
        return None, check
    if check.locked_minutes:
        return End(ctx.t("pin.locked", minutes=check.locked_minutes)), None
    return Retry(ctx.t("pin.wrong", left=check.attempts_left)), None
