"""The money actions behind the PIN step: each calls a wallet use case with the PIN's proof and
turns its result, or its refusal, into the final screen's text."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from helpers.lightning.lnurl_pay import LnurlPayError, PayParams
from helpers.infra.rail import Said
from helpers.ussd import quoting
from helpers.infra.phone import local
from helpers.ussd.business_screens import payee
from helpers.ussd.chama_screens import CHAMA_ACTIONS
from helpers.ussd import order_screens, save_screens, sessions
from helpers.ussd.screen import Ctx, acting_refused, deny_text, payee_bounds
from helpers.ussd.walker import fit
from helpers.wallet import identity, use_cases
from helpers.wallet.errors import (AirtimeOff, InsufficientBalance, InvoiceAlreadyPaid, MpesaUnreachable,
                                   PolicyDenied, QuoteExpired, RequestClosed)
from helpers.wallet.prices import QuoteView
from helpers.wallet.ledger.movements import Interrupted, Receipt, Within
from helpers.wallet.customers.users import PinProof
from lightning import State

log = logging.getLogger(__name__)


def send(ctx: Ctx, data: dict, proof: PinProof | None) -> str:
    """One transaction per confirmation: the money and the END that ends the session are written
    together (sessions.acted_in), or neither."""
    phone = data["phone"]

    def done(receipt: Receipt) -> str:
        return ctx.receipt("send.done", receipt, amount=receipt.amount_sats, phone=phone, fee=receipt.fee_sats,
                           ref=receipt.reference, balance=receipt.balance_sats)

    def last(conn: Connection | Session, receipt: Receipt) -> bool:
        return sessions.acted_in(conn, ctx.req.session_id, "pin", ">".join(ctx.walked), ctx.key,
                                 "END " + fit(done(receipt)))

    within = Within(last)
    try:
        amount = quoting.quote_of(ctx, data["quote"]).sats if "quote" in data else data["amount"]
        receipt = use_cases.send(ctx.svc, ctx.user, proof, phone, amount, ctx.key, within)
    except InsufficientBalance as exc:
        return deny_text(ctx, "insufficient-balance", balance=exc.balance_sats)
    except PolicyDenied as exc:
        return deny_text(ctx, exc.reason)
    except Interrupted:  # continued in another session, ended, or another request of it acting
        return acting_refused(ctx).text
    ctx.recorded = True
    if receipt.replay:
        return ctx.t("replay", ref=receipt.reference)
    # A receipt of this request's own movement: its transaction committed with the session's END
    # (a try that `last` saved in and then rolled back, a deadlock's or Galera's, left nothing).
    ctx.saved = True
    return done(receipt)


def pay_lightning(ctx: Ctx, data: dict, proof: PinProof | None) -> str:
    params = PayParams.from_dict(data["ln"])
    try:
        paid = use_cases.pay_lightning(ctx.svc, ctx.user, proof, params, data["amount"], ctx.key)
    except LnurlPayError as exc:
        log.info("paying %s refused before reserving: %s", params.address.split("@")[-1], exc)
        return ctx.t(f"lnurl.{exc.reason}") + " " + ctx.t("lnsend.nothing-sent")
    except InvoiceAlreadyPaid:
        return ctx.t("lnsend.already-paid")
    except InsufficientBalance as exc:
        return deny_text(ctx, "insufficient-balance", balance=exc.balance_sats)
    except PolicyDenied as exc:
        return deny_text(ctx, exc.reason, bounds=payee_bounds(ctx, params))
    receipt = paid.receipt
    if paid.replay:
        return ctx.t("replay", ref=receipt.reference)
    if paid.state is State.SUCCEEDED:
        return ctx.receipt("lnsend.done", receipt, amount=receipt.amount_sats, payee=params.address,
                           fee=receipt.fee_sats, ref=receipt.reference, balance=receipt.balance_sats)
    if paid.state is State.FAILED:
        return ctx.t("lnsend.failed", ref=receipt.reference)
    return ctx.t("lnsend.pending", amount=receipt.amount_sats, payee=params.address, ref=receipt.reference)


def withdraw(ctx: Ctx, data: dict, proof: PinProof | None) -> str:
    quote = quoting.quote_of(ctx, data["quote"])
    return _paid_out(ctx, quote, lambda: use_cases.withdraw(ctx.svc, ctx.user, proof, quote, data["phone"], ctx.key),
                     "withdraw", phone=data["phone"])


def pay_business(ctx: Ctx, data: dict, proof: PinProof | None) -> str:
    quote = quoting.quote_of(ctx, data["quote"])
    to = payee(data)
    return _paid_out(ctx, quote, lambda: use_cases.pay_business(ctx.svc, ctx.user, proof, quote, data["cmd"],
                                                                data["party"], data["account"], to, ctx.key),
                     "mpesapay", payee=to)


def _paid_out(ctx: Ctx, quote: QuoteView, pay: Callable[[], use_cases.Withdrawal], texts: str, **to: str) -> str:
    """Money out through M-Pesa at a quote (a withdrawal, a till, a paybill): its refusal, or what
    M-Pesa said, in the `texts` catalog family (withdraw.*, mpesapay.*) naming the payee `to`."""
    try:
        done = pay()
    except (QuoteExpired, MpesaUnreachable, InsufficientBalance, PolicyDenied) as exc:
        return _refused(ctx, exc, ctx.svc.policy.kes_bounds())
    ctx.recorded = True
    receipt, answer = done.receipt, done.answer
    if answer is None:
        return ctx.t("replay", ref=receipt.reference)
    if answer.said is Said.PAID:
        return ctx.receipt(f"{texts}.done", receipt, kes=quote.kes, code=answer.receipt, sats=receipt.amount_sats,
                           fee=receipt.fee_sats, balance=receipt.balance_sats, **to)
    if answer.said is Said.FAILED:
        return ctx.t("withdraw.failed", ref=receipt.reference)
    return ctx.t(f"{texts}.pending", kes=quote.kes, ref=receipt.reference, **to)


def _refused(ctx: Ctx, exc: Exception, kes_bounds: tuple[int, int]) -> str:
    """What a refusal of money out in KES says (nothing moved): `kes_bounds` for an amount out
    of bounds."""
    if isinstance(exc, QuoteExpired):  # expired between the screen's check and now
        return ctx.t("quote.expired")
    if isinstance(exc, MpesaUnreachable):
        return ctx.t("error.mpesa-phone")
    if isinstance(exc, AirtimeOff):
        return ctx.t("airtime.off")
    if isinstance(exc, InsufficientBalance):
        return deny_text(ctx, "insufficient-balance", balance=exc.balance_sats)
    reason = exc.reason if isinstance(exc, PolicyDenied) else ""
    if reason in ("below-minimum", "above-maximum"):
        return deny_text(ctx, reason, "KES", bounds=kes_bounds)
    return deny_text(ctx, reason)


def buy_airtime(ctx: Ctx, data: dict, proof: PinProof | None) -> str:
    quote = quoting.quote_of(ctx, data["quote"])
    phone = local(data["phone"], ctx.svc.settings.default_region)
    try:
        bought = use_cases.buy_airtime(ctx.svc, ctx.user, proof, quote, data["phone"], ctx.key)
    except (AirtimeOff, QuoteExpired, InsufficientBalance, PolicyDenied) as exc:
        return _refused(ctx, exc, ctx.svc.policy.airtime_bounds())
    ctx.recorded = True
    receipt, answer = bought.receipt, bought.answer
    if answer is None:
        return ctx.t("replay", ref=receipt.reference)
    if answer.said is Said.PAID:
        return ctx.receipt("airtime.done", receipt, kes=quote.kes, phone=phone, sats=receipt.amount_sats,
                           fee=receipt.fee_sats, ref=receipt.reference, balance=receipt.balance_sats)
    if answer.said is Said.FAILED:
        return ctx.t("airtime.failed", ref=receipt.reference)
    return ctx.t("airtime.pending", kes=quote.kes, phone=phone, ref=receipt.reference)


def pay_request(ctx: Ctx, data: dict, proof: PinProof | None) -> str:
    try:
        receipt = use_cases.pay_request(ctx.svc, ctx.user, proof, data["request_id"], data["payment_hash"], ctx.key)
    except RequestClosed:
        return ctx.t("payreq.gone")
    except InsufficientBalance as exc:
        return deny_text(ctx, "insufficient-balance", balance=exc.balance_sats)
    except PolicyDenied as exc:
        return deny_text(ctx, exc.reason)
    if receipt.replay:
        return ctx.t("replay", ref=receipt.reference)
    return ctx.receipt("payreq.done", receipt, amount=receipt.amount_sats, phone=data["phone"],
                       ref=receipt.reference, balance=receipt.balance_sats)


def verify_identity(ctx: Ctx, data: dict, proof: PinProof | None) -> str:
    """Verify my ID (issue 34): the registry's answer, or why not."""
    try:
        done = use_cases.verify_identity(ctx.svc, ctx.user, proof, data["id"], data["names"],
                                         dt.date.fromisoformat(data["born"]))
    except identity.IdRefused as exc:
        return ctx.t(f"kyc.{exc.reason}", age=ctx.value("id-min-age-years"))
    return ctx.t("kyc.done", name=done.name, tier=done.tier)


ACTIONS: dict[str, Callable[[Ctx, dict, PinProof | None], str]] = {
    "send": send, "lnsend": pay_lightning, "withdraw": withdraw, "payreq": pay_request, "mpesapay": pay_business,
    "airtime": buy_airtime, "kyc": verify_identity, "goal-in": save_screens.save_to_goal,
    "goal-break": save_screens.break_goal, "goal-autosave": save_screens.autosave_goal,
    "order": order_screens.set_order,
    **CHAMA_ACTIONS,
}
# Actions that do nothing outside their debit's transaction before the debit, so a right PIN
# may skip the counted check (users.check_pin). Not "lnsend": it asks the payee's server for an
# invoice first, and a guesser who runs that server would learn from the request that the PIN
# was right. Not "payreq": it asks the node about the request's invoice first, which may credit
# the requester and close the request.
DEBIT_FIRST = frozenset({"send", "withdraw", "mpesapay", "airtime"})
# The actions that end their session in the transaction that moves the money (sessions.acted_in);
# the others mark it acting before they run (screen.begin_acting).
MARK_WITHIN = frozenset({"send"})
