"""The USSD menu: one Africa's Talking request in, one screen out.

`SCREENS` is the menu: every screen by name (the screens live in helpers/ussd/). `handle_ussd`
loads the session, replays the path from the root through the walker (helpers/ussd/walker.py:
every screen checks its token; only the last token may act) and records the step. Money moves
only behind the PIN step (helpers/ussd/pin_entry.py), through the wallet's use cases.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from typing import cast

from sqlalchemy.exc import SQLAlchemyError

from helpers.infra.i18n import CATALOGS, t
from helpers.infra.refs import idempotency_key
from helpers.ussd import guard, resume, sessions
from helpers.mpesa.provider import BUY_GOODS, PAY_BILL
from helpers.ussd.account_screens import Account, History, Language, MainMenu, NameSet
from helpers.ussd.airtime_screens import AirtimeAmount, AirtimeFor, AirtimePhone
from helpers.ussd.limits_screens import IdBirth, IdNames, IdNumber, Limits
from helpers.ussd.forgot_screens import ForgotConfirm, ResetPending, save_reset_pin
from helpers.ussd.chama_screens import CHAMA_SCREENS
from helpers.ussd.business_screens import BusinessAmount, BusinessKind, BusinessNumber, PaybillAccount
from helpers.ussd.mpesa_screens import TopupAmount, TopupCode, TopupConfirm, TopupPush, WithdrawAmount, WithdrawPhone
from helpers.ussd.pin_entry import NewPin, PinChangeOld, PinStep, RepeatNewPin, save_changed_pin, save_first_pin
from helpers.ussd.receive_screens import ReceiveAmount, RequestAmount
from helpers.ussd.save_screens import (GoalAmount, GoalAutosave, GoalDate, GoalList, GoalName, GoalScreen, GoalTarget,
                                      GoalTargetUnit, SaveMenu)
from helpers.ussd.order_screens import (OrderAccount, OrderAddress, OrderAmount, OrderBusiness, OrderList, OrderPeriod,
                                       OrderPhone, OrderScreen, OrderTo, OrderUnit)
from helpers.ussd.screen import Ctx, UssdRequest
from helpers.ussd.send_screens import (
    LightningAmount,
    LightningConfirm,
    OtherPhone,
    PayRequestConfirm,
    PayRequestList,
    SendAmount,
    SendConfirm,
    SendKes,
    SendRecipient,
)
from helpers.ussd.walker import Outcome, Screen, walk
from helpers.wallet import sim_swap
from helpers.wallet.customers import users
from helpers.wallet.ledger import movements
from helpers.wallet.services import Services
from models import utcnow

__all__ = ["SCREENS", "UssdRequest", "handle_ussd"]

log = logging.getLogger(__name__)

SCREENS: dict[str, Screen] = {
    "pin.create": NewPin("pin.create", "pin.repeat"),
    "pin.repeat": RepeatNewPin("pin.repeat", save_first_pin),
    "main": MainMenu(),
    "send.phone": SendRecipient("send.phone", "send.amount"),
    "send.amount": SendAmount(),
    "send.kes": SendKes(),
    "send.confirm": SendConfirm(),
    "send.ln.amount": LightningAmount(),
    "send.ln.confirm": LightningConfirm(),
    "pin": PinStep(),
    "receive.amount": ReceiveAmount(),
    "request.phone": OtherPhone("request.phone", "request.amount"),
    "request.amount": RequestAmount(),
    "payreq.list": PayRequestList(),
    "payreq.confirm": PayRequestConfirm(),
    "topup.amount": TopupAmount(),
    "topup.code": TopupCode(),
    "topup.confirm": TopupConfirm(),
    "topup.push": TopupPush(),
    "withdraw.amount": WithdrawAmount(),
    "withdraw.phone": WithdrawPhone(),
    "mpesapay": BusinessKind(),
    "mpesapay.till": BusinessNumber("mpesapay.till", BUY_GOODS),
    "mpesapay.paybill": BusinessNumber("mpesapay.paybill", PAY_BILL),
    "mpesapay.account": PaybillAccount(),
    "mpesapay.amount": BusinessAmount(),
    "airtime": AirtimeFor(),
    "airtime.phone": AirtimePhone(),
    "airtime.amount": AirtimeAmount(),
    "save": SaveMenu(),
    "goals": GoalList(),
    "goal": GoalScreen(),
    "goal.amount": GoalAmount(),
    "goal.autosave": GoalAutosave(),
    "goal.name": GoalName(),
    "goal.target": GoalTargetUnit(),
    "goal.target-kes": GoalTarget(),
    "goal.target-sats": GoalTarget(in_sats=True),
    "goal.date": GoalDate(),
    "orders": OrderList(),
    "order": OrderScreen(),
    "order.to": OrderTo(),
    "order.phone": OrderPhone(),
    "order.goal": GoalList("order.goal", then="order.unit"),
    "order.address": OrderAddress(),
    "order.till": OrderBusiness("till"),
    "order.paybill": OrderBusiness("paybill"),
    "order.account": OrderAccount(),
    "order.unit": OrderUnit(),
    "order.amount": OrderAmount(),
    "order.period": OrderPeriod(),
    "account": Account(),
    "history": History(),
    "language": Language(),
    "name.set": NameSet(),
    "limits": Limits(),
    "kyc.id": IdNumber(),
    "kyc.names": IdNames(),
    "kyc.birth": IdBirth(),
    "pinchange.old": PinChangeOld(),
    "pinchange.new": NewPin("pinchange.new", "pinchange.repeat"),
    "pinchange.repeat": RepeatNewPin("pinchange.repeat", save_changed_pin),
    "forgot": ForgotConfirm(),
    "reset.pending": ResetPending(),
    "reset.new": NewPin("reset.new", "reset.repeat"),
    "reset.repeat": RepeatNewPin("pin.repeat", save_reset_pin),
    **CHAMA_SCREENS,
}



# ------------------------------------------------------------------ one request
def _guard_facts(ctx: Ctx, phone: str) -> tuple[dt.datetime | None, dt.datetime | None]:
    """(when the SIM may be asked about again, when a Forgot-PIN reset is due) of a phone; the row
    is kept for this request's own check (a menu choice that leads to money out reads no more)."""
    ctx.guard_row = sim_swap.read(ctx.svc.db, phone)
    return ctx.guard_row.next_ask_at, ctx.guard_row.reset_due_at


def handle_ussd(svc: Services, req: UssdRequest) -> tuple[str, str]:
    """Answer one USSD step. Returns (reply, screen name). Database errors propagate (the app
    turns them into a 'service unavailable' END)."""
    db = svc.db
    text_key = idempotency_key(req.session_id, req.text, "idempotency:" + svc.pepper)
    # The main menu is the first screen of a registered caller's session: its count of open
    # requests comes with that step's read (other steps that show the menu read it then).
    first = not req.text
    view, user, open_requests = sessions.load_step(
        db, req.session_id, req.phone, with_requests=first,
        resume_window_s=svc.policy.value("resume-window-s") if first else 0)
    if view.exists and view.phone != req.phone:
        log.warning("session %s reused by another phone", req.session_id[:16])
        return "END " + t(svc.settings.default_language, "error.expired"), "refused"
    if view.exists and view.last_text_hash == text_key and view.last_reply:
        return view.last_reply, "replay"
    if view.over(utcnow(), svc.settings.ussd_session_timeout_s):
        # Ended (an END went out) or past Africa's Talking's session life: nothing more is done
        # in it, whatever the path says; a new dial is a new session.
        language = user.language if user is not None and user.language in CATALOGS else svc.settings.default_language
        if req.text and (moved := movements.find_by_key(db, text_key)) is not None:
            # a retry of a money step whose first answer was never saved (still paying, or lost):
            # it says what happened, so nobody dials again to pay twice
            return "END " + t(language, "replay", ref=moved.reference), "replay"
        return "END " + t(language, "error.expired"), "ended"
    user = user or users.register(db, req.phone, svc.settings.default_language, svc.service_code)
    # No row yet: nothing was asked in this session, so a path typed now came in the dialled code.
    # (A reply that asks for a PIN writes its row at once, below, so a PIN typed after the
    # prompt always finds one.)
    dialled = bool(req.text) and not view.exists
    ctx = Ctx(svc, req, user, text_key, dict(view.choices), open_requests=open_requests, dialled=dialled,
              started_at=view.created_at if view.exists else utcnow())
    if not view.exists and user.pin_hash is not None:
        # A session's first request (the main menu, or a dialled shortcut): a reset now due makes
        # this session set the new PIN; the SIM is asked about again when its answer is old. The
        # main menu read the guard row with its step; a dialled shortcut reads it now.
        facts = (view.ask_after, view.reset_due_at) if first else _guard_facts(ctx, req.phone)
        guard.first_step(svc, req.phone, facts[0], facts[1], ctx.choices)
    tokens = req.text.split("*") if req.text else []
    if user.pin_hash is None:
        root, skip = "pin.create", 0
    elif guard.RESET_DUE in ctx.choices:  # a Forgot-PIN reset is due: this session sets the new PIN
        root, skip = "reset.new", 0
    else:
        root, skip = "main", min(view.onboarding_tokens, len(tokens))
    asked = None
    if user.pin_hash is not None and not req.text and view.dropped:  # a payment the network cut off
        asked = resume.offer(ctx, view.dropped)
    elif user.pin_hash is not None and resume.FROM in ctx.choices:
        tokens, asked = resume.answer(ctx, tokens)
        ctx.req = dataclasses.replace(req, text="*".join(tokens))  # positions are those of the walked path
    ctx.walked = ["onboarding"] if skip else []  # the session row's trail: the walk adds its screens
    if asked is not None:
        outcome = Outcome(asked if asked.startswith(("CON ", "END ")) else "CON " + asked, "resume", "", 0)
    else:
        outcome = walk(SCREENS, ctx, root, tokens[skip:], skip, set_position=ctx.at, memory=ctx.choices,
                       dialled=ctx.t("pin.not-in-dial", code=svc.service_code) if dialled else None,
                       trail=ctx.walked)
        resume.keep_path(ctx, SCREENS, outcome, onboarded_here=bool(skip) or root != "main")
    # Most steps are pure reads of the path and need no write. The row is written at once when
    # there is something to remember: a PIN step (so a repeated request cannot count a wrong PIN
    # twice), a choice or refusal, the end. A session's first step with nothing else to remember
    # records only who dialled: that row is written behind (sessions.Openings).
    remember = (
        outcome.reply.startswith("END")
        or outcome.last_was_secret
        or ctx.choices != view.choices
        or outcome.onboarding_tokens != view.onboarding_tokens
        or (not view.exists and getattr(SCREENS.get(outcome.screen), "secret", False))  # it asks for a PIN
    )
    # (A send's END is saved already, with the money it reports, in one transaction: ctx.saved.)
    if not ctx.saved and (remember or not view.exists):
        trail = ">".join(ctx.walked)
        try:
            saved = sessions.save(db, req.session_id, req.phone, req.service_code, exists=view.exists,
                                  state=outcome.screen, trail=trail, text_hash=text_key, reply=outcome.reply,
                                  onboarding_tokens=outcome.onboarding_tokens, choices=ctx.choices,
                                  openings=None if remember else cast(sessions.Openings, svc.openings),
                                  actor=ctx.acting)
            if not saved and outcome.reply.startswith("CON"):
                # continued in another session, ended or paying since this request read it: this
                # session goes no further (its next step would be refused anyway)
                return "END " + ctx.t("error.expired"), "ended"
        except SQLAlchemyError as exc:
            if not outcome.reply.startswith("END"):
                raise  # the next step would need this row: "unavailable" now is the honest answer
            # The step is done (money moved, or was refused) and its own rows are committed: say
            # what happened. A repeat of this request finds the movement by its idempotency key.
            log.warning("session %s: its last step is done but its row was not saved (%s)",
                        req.session_id[:16], type(exc).__name__)
    return outcome.reply, outcome.screen
