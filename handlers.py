"""The USSD menu: one Africa's Talking request in, one screen out.

No SQL and no HTTP here: screens ask helpers/ (database, policy, SMS) and lightning.py. Every
screen checks its token; only the last token of the path may act (see helpers/ussd/walker.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError

from helpers.wallet import invoices, lnurl, mpesa_flows, payments, transactions, users

from helpers.lightning import lnurl_pay

from helpers.ussd import sessions
from helpers.wallet.errors import (
    AccountLocked,
    CodeAlreadyUsed,
    InsufficientBalance,
    InvoiceAlreadyPaid,
    LightningUnavailable,
    PolicyDenied,
    RateLimited,
    RequestClosed,
)
from helpers.infra.i18n import CATALOGS, t
from helpers.lightning.lnurl_pay import LnurlPayError, PayParams
from helpers.mpesa.provider import normalise_code
from helpers.infra.phone import normalise
from helpers.infra.refs import idempotency_key
from helpers.wallet.services import Services
from helpers.infra.text import is_digits, parse_digits
from helpers.ussd.walker import Back, End, Home, Push, Result, Retry, walk
from lightning import State
from models import CREDIT, PENDING, utcnow

log = logging.getLogger(__name__)

_MAX_AMOUNT_DIGITS = 12  # beyond this it is not an amount (and would overflow the policy engine)


@dataclass
class UssdRequest:
    session_id: str
    phone: str  # E.164
    service_code: str
    text: str


@dataclass
class Ctx:
    svc: Services
    req: UssdRequest
    user: users.UserView
    key: str  # idempotency key of this request's path
    choices: dict[str, Any]  # what earlier tokens of this session resolved to (session row)
    final: bool = False
    position: int = 0  # index of the token being handled in the whole path
    open_requests: int | None = None  # open payment requests to the caller (None: not read yet)
    # The actions of DEBIT_FIRST set this once they hold a receipt: a movement under `key` is
    # recorded (by this request, or by the earlier one it replays).
    recorded: bool = False

    def at(self, position: int, final: bool) -> None:
        self.position, self.final = position, final

    @property
    def lang(self) -> str:
        return self.user.language if self.user.language in CATALOGS else "en"

    def t(self, key: str, **values: Any) -> str:
        return t(self.lang, key, **values)

    def value(self, name: str) -> int:
        return self.svc.policy.value(name)

    def path_tag(self) -> int:
        """A number that stands for this session and the path up to the token being handled
        (keyed: the path holds PINs). What a token earned (an old PIN checked and right) is kept
        under it, so it holds for that exact path only, never another path or session."""
        prefix = "*".join(self.req.text.split("*")[: self.position + 1])
        return int(idempotency_key(self.req.session_id, prefix, "verified:" + self.svc.pepper)[:12], 16)

    def requests_open(self) -> int:
        """How many open payment requests the main menu announces (read with the step, or now)."""
        if self.open_requests is None:
            self.open_requests = invoices.count_open_requests(self.svc.db, self.user.phone)
        return self.open_requests


# ------------------------------------------------------------------ input parsing
def parse_amount(token: str) -> int | None:
    token = token.strip()
    amount = parse_digits(token, _MAX_AMOUNT_DIGITS)
    return amount if amount else None


def deny_text(ctx: Ctx, reason: str, unit: str = "sats", balance: int | None = None,
              bounds: tuple[int, int] | None = None) -> str:
    """The refusal's message; `bounds` are the (min, max) to quote instead of the policy's."""
    key = f"deny.{reason}"
    if key not in CATALOGS["en"]:
        key = "error.option"
    kes = unit == "KES"
    low, high = bounds or (ctx.value("kes-min" if kes else "payment-min-sats"),
                           ctx.value("kes-max" if kes else "payment-max-sats"))
    return ctx.t(
        key,
        min=low,
        max=high,
        unit=unit,
        balance=ctx.user.balance_sats if balance is None else balance,
        limit=ctx.value("daily-send-limit-sats"),
    )


def _sats_range(ctx: Ctx) -> dict[str, int]:
    return {"min": ctx.value("payment-min-sats"), "max": ctx.value("payment-max-sats")}


def _kes_range(ctx: Ctx) -> dict[str, int]:
    return {"min": ctx.value("kes-min"), "max": ctx.value("kes-max")}


def _sent_today(ctx: Ctx) -> int:
    return transactions.spend_facts(ctx.svc.db, ctx.user.id)[1]


def _check_spend(ctx: Ctx, amount: int, fee: int) -> str | None:
    """Pre-check a spend for a friendly re-prompt; the money step checks again atomically.
    Balance and daily limit are only looked up for the last token (the screen shown now)."""
    policy = ctx.svc.policy
    if not ctx.final:
        decision = policy.amount(amount)
    else:
        decision = policy.spend(amount, fee, ctx.user.balance_sats, _sent_today(ctx))
    return None if decision.allowed else deny_text(ctx, decision.reason or "")


def _expired(ctx: Ctx) -> End:
    """A path that goes on past a step that acts: a finished session replayed with more input."""
    return End(ctx.t("error.expired"))


# ------------------------------------------------------------------ choosing a PIN
class NewPin:
    """Type a new PIN: format and strength are checked (the policy refuses weak ones)."""

    secret = True

    def __init__(self, prompt_key: str, repeat_screen: str) -> None:
        self.prompt_key, self.repeat_screen = prompt_key, repeat_screen

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t(self.prompt_key, digits=ctx.value("pin-length"))

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        problem = _pin_problem(ctx, token)
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
            return _expired(ctx)
        return self.save(ctx, token)


def _save_first_pin(ctx: Ctx, pin: str) -> Result:
    if not users.set_first_pin(ctx.svc.db, ctx.user.id, pin, ctx.svc.pepper):
        return _expired(ctx)  # set by a parallel request of this phone: dial again
    return Home(ctx.t("pin.set"), onboarded=True)


def _save_changed_pin(ctx: Ctx, pin: str) -> Result:
    users.change_pin(ctx.svc.db, ctx.user, pin, ctx.svc.pepper)
    return End(ctx.t("pinchange.done"))


def _pin_problem(ctx: Ctx, token: str) -> str | None:
    digits = ctx.value("pin-length")
    if len(token) != digits or not is_digits(token):
        return ctx.t("pin.format", digits=digits)
    decision = ctx.svc.policy.pin(token)
    return None if decision.allowed else deny_text(ctx, decision.reason or "")


# ------------------------------------------------------------------ main menu
_MAIN_OPTIONS = {
    "1": "send.phone",
    "2": "receive.amount",
    "3": "request.phone",
    "4": "topup.amount",
    "5": "withdraw.amount",
    "6": "account",
}


class MainMenu:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        count = ctx.requests_open()
        requests = ctx.t("main.requests", count=count) if count else ""
        return ctx.t("main", balance=ctx.user.balance_sats, requests=requests)

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        if token == "0":
            return End(ctx.t("exit"))
        if token in _MAIN_OPTIONS:
            return Push(_MAIN_OPTIONS[token])
        if token == "7":
            return Push("payreq.list")
        return Retry(ctx.t("error.option"))


# ------------------------------------------------------------------ send
class OtherPhone:
    """Another person's phone number (not the caller's own), then `next_screen`."""

    secret = False

    def __init__(self, prompt_key: str, next_screen: str) -> None:
        self.prompt_key, self.next_screen = prompt_key, next_screen

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t(self.prompt_key)

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        phone = normalise(token, ctx.svc.config["DEFAULT_REGION"])
        if phone is None:
            return Retry(ctx.t("error.phone"))
        if phone == ctx.user.phone:
            return Retry(ctx.t("error.own-phone"))
        return Push(self.next_screen, {"phone": phone})


class SendAmount:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t("send.amount", phone=data["phone"], **_sats_range(ctx))

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        amount = parse_amount(token)
        if amount is None:
            return Retry(ctx.t("error.amount"))
        fee = ctx.svc.policy.fee_sats("internal", amount)
        problem = _check_spend(ctx, amount, fee)
        if problem:
            return Retry(problem)
        return Push("send.confirm", {**data, "amount": amount, "fee": fee})


class SendConfirm:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        total = data["amount"] + data["fee"]
        return ctx.t("send.confirm", amount=data["amount"], phone=data["phone"], fee=data["fee"], total=total)

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        if token == "1":
            return Push("pin", {**data, "action": "send"})
        return Retry(ctx.t("error.option"))


class SendRecipient(OtherPhone):
    """A phone number, or a Lightning address typed on the keypad (letters, '@' and '.' from
    the phone's symbol key). Our own addresses (<digits>@<our domain>) are phone numbers; any
    other is resolved once, when typed, and what its server offered is kept in the session."""

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        if "@" not in token:
            return super().handle(ctx, data, token)
        parsed = lnurl_pay.parse_address(token)
        if parsed is None:
            return Retry(ctx.t("error.address"))
        name, domain = parsed
        if domain == lnurl.domain(ctx.svc.config).lower():
            phone = normalise("+" + name, ctx.svc.config["DEFAULT_REGION"]) if is_digits(name) else None
            return super().handle(ctx, data, phone) if phone else Retry(ctx.t("error.address"))
        slot = f"ln{ctx.position}"
        if slot not in ctx.choices:
            if not ctx.final:
                return _expired(ctx)  # resolved only when typed: a replay never calls out
            try:
                ctx.choices[slot] = lnurl_pay.resolve(name, domain, ctx.svc.config).to_dict()
            except LnurlPayError as exc:
                log.info("lightning address %s refused: %s", domain, exc)
                return Retry(ctx.t(f"lnurl.{exc.reason}"))
        return Push("send.ln.amount", {"ln": ctx.choices[slot]})


def _payee_bounds(ctx: Ctx, params: PayParams) -> tuple[int, int]:
    """What the payee accepts, within what we allow (for the prompt)."""
    return (max(params.min_sats, ctx.value("payment-min-sats")), min(params.max_sats, ctx.value("payment-max-sats")))


class LightningAmount:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        params = PayParams.from_dict(data["ln"])
        low, high = _payee_bounds(ctx, params)
        return ctx.t("send.ln.amount", payee=params.address, min=low, max=high)

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        amount = parse_amount(token)
        if amount is None:
            return Retry(ctx.t("error.amount"))
        params = PayParams.from_dict(data["ln"])
        fee = ctx.svc.policy.fee_sats("lightning", amount)
        # Balance and daily limit only for the screen shown now; the reservation checks again.
        balance, sent = (ctx.user.balance_sats, _sent_today(ctx)) if ctx.final else (amount + fee, 0)
        decision = ctx.svc.policy.lightning_send(amount, fee, balance, sent, params.min_sats, params.max_sats)
        if not decision.allowed:
            return Retry(deny_text(ctx, decision.reason or "", bounds=_payee_bounds(ctx, params)))
        return Push("send.ln.confirm", {**data, "amount": amount, "fee": fee})


class LightningConfirm:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t("send.ln.confirm", amount=data["amount"], payee=data["ln"]["a"], fee=data["fee"],
                     total=data["amount"] + data["fee"])

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        if token == "1":
            return Push("pin", {**data, "action": "lnsend"})
        return Retry(ctx.t("error.option"))


# ------------------------------------------------------------------ the PIN step that moves money
class PinStep:
    """Asks for the PIN, then performs data['action'] with the facts gathered on the way."""

    secret = True

    def prompt(self, ctx: Ctx, data: dict) -> str:
        if data["action"] == "withdraw":
            return ctx.t("withdraw.pin", kes=data["kes"], phone=data["phone"], sats=data["sats"], fee=data["fee"])
        return ctx.t("pin.enter")

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        if not ctx.final:
            # A wrong PIN typed earlier in this session is skipped by the walker (it remembers
            # refusals), and a right one ended the session. Anything else here is a path nobody
            # typed screen by screen: it is never checked, so it cannot be used to guess.
            return _expired(ctx)
        refusal, unordered = check_pin(ctx, token, debit_follows=data["action"] in DEBIT_FIRST)
        if refusal is not None:
            return refusal
        try:
            reply = ACTIONS[data["action"]](ctx, data)
        except AccountLocked as exc:  # a parallel wrong guess locked the account after our read
            return End(ctx.t("pin.locked", minutes=exc.minutes))
        except Exception:
            if unordered and (refusal := _nothing_moved_recheck(ctx, token)) is not None:
                return refusal
            raise
        if unordered and (refusal := _nothing_moved_recheck(ctx, token)) is not None:
            return refusal
        return End(reply)


def _nothing_moved_recheck(ctx: Ctx, token: str) -> Result | None:
    """After an action whose right PIN skipped the counted check: if it recorded no movement
    under this request's key (refused or failed), its answer would still tell a guesser that the
    PIN was right, so take the counted check first; it answers "locked" if a parallel guess
    locked the account meanwhile. None: answer as the action did. An action that holds a receipt
    has said so (`ctx.recorded`); otherwise the key is looked up."""
    if ctx.recorded or transactions.find_by_key(ctx.svc.db, ctx.key) is not None:
        return None
    return verify_pin(ctx, token)


def verify_pin(ctx: Ctx, token: str) -> Result | None:
    """Check the PIN typed as the last token: None when right, else the screen to show. Every
    check counts towards the lock."""
    return check_pin(ctx, token)[0]


def check_pin(ctx: Ctx, token: str, *, debit_follows: bool = False) -> tuple[Result | None, bool]:
    """(None when the PIN is right, else the screen to show; whether a right PIN skipped the
    counted check). Every wrong PIN counts towards the lock. `debit_follows`: the action after
    it does nothing outside its debit's transaction before the debit, which a locked account
    refuses, so a right PIN may skip the counted check (users.check_pin)."""
    digits = ctx.value("pin-length")
    if len(token) != digits or not is_digits(token):
        return Retry(ctx.t("pin.format", digits=digits)), False
    check = users.check_pin(ctx.svc.db, ctx.svc.policy, ctx.user, token, ctx.svc.pepper, debit_follows=debit_follows)
    if check.ok:
        return None, check.unordered
    if check.locked_minutes:
        return End(ctx.t("pin.locked", minutes=check.locked_minutes)), False
    return Retry(ctx.t("pin.wrong", left=check.attempts_left)), False


def _do_send(ctx: Ctx, data: dict) -> str:
    svc = ctx.svc
    try:
        receipt = transactions.transfer(
            svc.db, svc.policy, ctx.user, data["phone"], data["amount"], ctx.key, svc.service_code
        )
    except InsufficientBalance as exc:
        return deny_text(ctx, "insufficient-balance", balance=exc.balance_sats)
    except PolicyDenied as exc:
        return deny_text(ctx, exc.reason)
    ctx.recorded = True
    if receipt.replay:
        return ctx.t("replay", ref=receipt.reference)
    return ctx.t("send.done", amount=receipt.amount_sats, phone=data["phone"], fee=receipt.fee_sats,
                 ref=receipt.reference, balance=receipt.balance_sats)


def _do_lnsend(ctx: Ctx, data: dict) -> str:
    params = PayParams.from_dict(data["ln"])
    try:
        paid = payments.pay_address(ctx.svc, ctx.user, params, data["amount"], ctx.key)
    except LnurlPayError as exc:
        log.info("paying %s refused before reserving: %s", params.address.split("@")[-1], exc)
        return ctx.t(f"lnurl.{exc.reason}") + " " + ctx.t("lnsend.nothing-sent")
    except InvoiceAlreadyPaid:
        return ctx.t("lnsend.already-paid")
    except InsufficientBalance as exc:
        return deny_text(ctx, "insufficient-balance", balance=exc.balance_sats)
    except PolicyDenied as exc:
        return deny_text(ctx, exc.reason, bounds=_payee_bounds(ctx, params))
    receipt = paid.receipt
    if paid.replay:
        return ctx.t("replay", ref=receipt.reference)
    if paid.state is State.SUCCEEDED:
        return ctx.t("lnsend.done", amount=receipt.amount_sats, payee=params.address, fee=receipt.fee_sats,
                     ref=receipt.reference, balance=receipt.balance_sats)
    if paid.state is State.FAILED:
        return ctx.t("lnsend.failed", ref=receipt.reference)
    return ctx.t("lnsend.pending", amount=receipt.amount_sats, payee=params.address, ref=receipt.reference)


def _do_withdraw(ctx: Ctx, data: dict) -> str:
    svc = ctx.svc
    try:
        receipt = transactions.reserve_withdrawal(svc.db, svc.policy, ctx.user, data["kes"], data["phone"], ctx.key)
    except InsufficientBalance as exc:
        return deny_text(ctx, "insufficient-balance", balance=exc.balance_sats)
    except PolicyDenied as exc:
        return deny_text(ctx, exc.reason, "KES" if exc.reason in ("below-minimum", "above-maximum") else "sats")
    ctx.recorded = True
    if receipt.replay:
        return ctx.t("replay", ref=receipt.reference)
    payout = mpesa_flows.pay_out(svc.db, svc.mpesa, receipt.transaction_id, receipt.reference, data["phone"],
                                 data["kes"], receipt.amount_sats, ctx.user.id)
    if payout.state is State.SUCCEEDED:
        return ctx.t("withdraw.done", kes=data["kes"], phone=data["phone"], code=payout.receipt,
                     sats=receipt.amount_sats, fee=receipt.fee_sats, balance=receipt.balance_sats)
    if payout.state is State.FAILED:
        return ctx.t("withdraw.failed", ref=receipt.reference)
    return ctx.t("withdraw.pending", kes=data["kes"], phone=data["phone"], ref=receipt.reference)


def _do_pay_request(ctx: Ctx, data: dict) -> str:
    svc = ctx.svc
    # Ask the node first: if the invoice behind the request was paid by Lightning, it is
    # credited now and the request is closed, instead of being paid a second time.
    if invoices.sync(svc.db, svc.lightning, data["payment_hash"]) != PENDING:
        return ctx.t("payreq.gone")
    try:
        receipt = transactions.pay_request(svc.db, svc.policy, ctx.user, data["request_id"], ctx.key)
    except RequestClosed:
        return ctx.t("payreq.gone")
    except InsufficientBalance as exc:
        return deny_text(ctx, "insufficient-balance", balance=exc.balance_sats)
    except PolicyDenied as exc:
        return deny_text(ctx, exc.reason)
    if receipt.replay:
        return ctx.t("replay", ref=receipt.reference)
    return ctx.t("payreq.done", amount=receipt.amount_sats, phone=data["phone"], ref=receipt.reference,
                 balance=receipt.balance_sats)


ACTIONS = {"send": _do_send, "lnsend": _do_lnsend, "withdraw": _do_withdraw, "payreq": _do_pay_request}
# Actions that do nothing outside their debit's transaction before the debit, so a right PIN
# may skip the counted check (users.check_pin). Not "lnsend": it asks the payee's server for an
# invoice first, and a guesser who runs that server would learn from the request that the PIN
# was right. Not "payreq": it asks the node about the request's invoice first, which may credit
# the requester and close the request.
DEBIT_FIRST = frozenset({"send", "withdraw"})


# ------------------------------------------------------------------ receive and request
class ReceiveAmount:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t("receive.amount", address=lnurl.address(ctx.svc.config, ctx.user.phone), **_sats_range(ctx))

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        amount = parse_amount(token)
        if amount is None:
            return Retry(ctx.t("error.amount"))
        decision = ctx.svc.policy.amount(amount)
        if not decision.allowed:
            return Retry(deny_text(ctx, decision.reason or ""))
        if not ctx.final:
            return _expired(ctx)
        return End(_issue(ctx, amount, self.payer(data)))

    def payer(self, data: dict) -> str | None:
        return None


class RequestAmount(ReceiveAmount):
    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t("request.amount", phone=data["phone"], **_sats_range(ctx))

    def payer(self, data: dict) -> str | None:
        return data["phone"]


def _issue(ctx: Ctx, amount: int, payer_phone: str | None) -> str:
    svc = ctx.svc
    payer_language = "en"
    if payer_phone is not None:
        with svc.db.read() as s:
            payer = users.get(s, payer_phone)
            payer_language = payer.language if payer else svc.config["DEFAULT_LANGUAGE"]
    expiry = svc.config["INVOICE_EXPIRY_S"]
    memo = f"SatsPesa {ctx.user.phone[-4:]}"
    try:
        issued = invoices.issue(svc.db, svc.policy, svc.lightning, ctx.user, amount, memo, expiry, ctx.key,
                                payer_phone, payer_language, svc.service_code, svc.config["RATE_LIMITS"])
    except RateLimited:
        return ctx.t("error.too-many")
    except LightningUnavailable:
        return ctx.t("error.lightning")
    if payer_phone is None:
        return ctx.t("receive.done", amount=amount, ref=issued.reference, minutes=expiry // 60)
    return ctx.t("request.done", amount=amount, phone=payer_phone, ref=issued.reference)


# ------------------------------------------------------------------ pay a request
class PayRequestList:
    secret = False

    def _open(self, ctx: Ctx) -> list[invoices.OpenRequest]:
        return invoices.open_requests(ctx.svc.db, ctx.user.phone)

    def prompt(self, ctx: Ctx, data: dict) -> str:
        lines = "".join(
            ctx.t("payreq.line", n=n, amount=r.amount_sats, phone=r.requester_phone)
            for n, r in enumerate(self._open(ctx), start=1)
        )
        return ctx.t("payreq.list", lines=lines or ctx.t("history.empty"))

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        # A choice made earlier in this session keeps meaning the request it meant then, even
        # if the list has changed since (a request paid, expired or added).
        remembered = ctx.choices.get(str(ctx.position))
        open_requests = self._open(ctx)
        if remembered is not None:
            chosen = next((r for r in open_requests if r.id == remembered), None)
            if chosen is None:
                return End(ctx.t("payreq.gone"))
        elif not is_digits(token) or not 1 <= int(token) <= len(open_requests):
            return Retry(ctx.t("error.option"))
        else:
            chosen = open_requests[int(token) - 1]
            ctx.choices[str(ctx.position)] = chosen.id
        fee = ctx.svc.policy.fee_sats("internal", chosen.amount_sats)
        return Push("payreq.confirm", {"request_id": chosen.id, "amount": chosen.amount_sats,
                                       "phone": chosen.requester_phone, "ref": chosen.reference, "fee": fee,
                                       "payment_hash": chosen.payment_hash})


class PayRequestConfirm:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t("payreq.confirm", amount=data["amount"], phone=data["phone"], ref=data["ref"], fee=data["fee"])

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        if token != "1":
            return Retry(ctx.t("error.option"))
        problem = _check_spend(ctx, data["amount"], data["fee"])
        if problem:
            return Retry(problem)
        return Push("pin", {**data, "action": "payreq"})


# ------------------------------------------------------------------ M-Pesa
class TopupAmount:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t("topup.amount", **_kes_range(ctx))

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        kes = parse_amount(token)
        if kes is None:
            return Retry(ctx.t("error.amount"))
        decision = ctx.svc.policy.topup(kes)
        if not decision.allowed:
            return Retry(deny_text(ctx, decision.reason or "", "KES"))
        data = {"kes": kes, "sats": ctx.svc.policy.kes_to_sats_credit(kes)}
        if not ctx.svc.mpesa.topup_by_push:
            return Push("topup.code", data)
        if not ctx.svc.mpesa.accepts_phone(ctx.user.phone):
            return End(ctx.t("error.mpesa-phone"))  # the prompt can only go to the caller's own phone
        return Push("topup.push", data)


class TopupCode:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t("topup.code", kes=data["kes"])

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        code = normalise_code(token)
        if code is None:
            return Retry(ctx.t("error.code"))
        if ctx.final:
            with ctx.svc.db.read() as s:
                if transactions.code_used(s, code):
                    return Retry(ctx.t("error.code-used"))
        return Push("topup.confirm", {**data, "code": code})


class TopupConfirm:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t("topup.confirm", kes=data["kes"], sats=data["sats"], code=data["code"])

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        if token != "1":
            return Retry(ctx.t("error.option"))
        if not ctx.final:
            return _expired(ctx)
        svc = ctx.svc
        if not svc.mpesa.confirm_topup(data["code"], ctx.user.phone, data["kes"]):
            return End(ctx.t("error.code"))
        try:
            receipt = transactions.topup(svc.db, svc.policy, ctx.user, data["kes"], data["code"], ctx.key)
        except CodeAlreadyUsed:
            return End(ctx.t("error.code-used"))
        except PolicyDenied as exc:
            return End(deny_text(ctx, exc.reason, "KES"))
        if receipt.replay:
            return End(ctx.t("replay", ref=receipt.reference))
        return End(ctx.t("topup.done", sats=receipt.amount_sats, kes=data["kes"], code=data["code"],
                         balance=receipt.balance_sats))


class TopupPush:
    """Confirm, then M-Pesa prompts the caller's own phone for the M-Pesa PIN (STK push); the
    sats are credited when M-Pesa confirms the payment (callback or status query)."""

    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t("topup.push", kes=data["kes"], sats=data["sats"], phone=ctx.user.phone)

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        if token != "1":
            return Retry(ctx.t("error.option"))
        if not ctx.final:
            return _expired(ctx)
        svc = ctx.svc
        started = mpesa_flows.start_topup(svc.db, svc.mpesa, ctx.user, data["kes"], data["sats"], ctx.key)
        if started.replay:
            return End(ctx.t("replay", ref=started.reference))
        if started.state is State.FAILED:
            return End(ctx.t("topup.push-failed"))
        return End(ctx.t("topup.push-sent", kes=data["kes"], sats=data["sats"], ref=started.reference))


class WithdrawAmount:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t("withdraw.amount", **_kes_range(ctx))

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        kes = parse_amount(token)
        if kes is None:
            return Retry(ctx.t("error.amount"))
        policy = ctx.svc.policy
        sent = _sent_today(ctx) if ctx.final else 0
        balance = ctx.user.balance_sats if ctx.final else policy.value("payment-max-sats") * 2
        decision = policy.withdraw(kes, balance, sent)
        if not decision.allowed:
            unit = "KES" if decision.reason in ("below-minimum", "above-maximum") else "sats"
            return Retry(deny_text(ctx, decision.reason or "", unit))
        sats = policy.kes_to_sats_debit(kes)
        return Push("withdraw.phone", {"kes": kes, "sats": sats, "fee": policy.fee_sats("mpesa-withdraw", sats)})


class WithdrawPhone:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t("withdraw.phone", kes=data["kes"], phone=ctx.user.phone)

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        phone = ctx.user.phone if token == "1" else normalise(token, ctx.svc.config["DEFAULT_REGION"])
        if phone is None:
            return Retry(ctx.t("error.phone"))
        if not ctx.svc.mpesa.accepts_phone(phone):
            return Retry(ctx.t("error.mpesa-phone"))
        return Push("pin", {**data, "phone": phone, "action": "withdraw"})


# ------------------------------------------------------------------ my account
class Account:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        balance = ctx.user.balance_sats
        return ctx.t("account", balance=balance, kes=ctx.svc.policy.sats_to_kes(balance),
                     address=lnurl.address(ctx.svc.config, ctx.user.phone))

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        target = {"1": "history", "2": "language", "3": "pinchange.old"}.get(token)
        return Push(target) if target else Retry(ctx.t("error.option"))


class History:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        with ctx.svc.db.read() as s:
            rows = transactions.recent(s, ctx.user.id)
        lines = "".join(
            ctx.t("history.line", sign="+" if row.direction == CREDIT else "-",
                  amount=row.amount_sats + row.fee_sats if row.direction != CREDIT else row.amount_sats,
                  kind=ctx.t(f"kind.{row.type}") if f"kind.{row.type}" in CATALOGS["en"] else row.type,
                  date=row.created_at.strftime("%d/%m") + ("*" if row.status == PENDING else ""))
            for row in rows
        )
        return ctx.t("history", lines=lines or ctx.t("history.empty"))

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        return Retry(ctx.t("error.option"))


class Language:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t("language")

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        chosen = {"1": "en", "2": "sw"}.get(token)
        if chosen is None:
            return Retry(ctx.t("error.option"))
        if not ctx.final:
            return _expired(ctx)
        users.set_language(ctx.svc.db, ctx.user.id, chosen)
        return End(t(chosen, "language.done"))


class PinChangeOld:
    secret = True

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t("pinchange.old")

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        accepted = f"ok{ctx.position}"
        if not ctx.final:  # accepted only if it was checked, and right, when this very path typed it
            return Push("pinchange.new") if ctx.choices.get(accepted) == ctx.path_tag() else _expired(ctx)
        refusal = verify_pin(ctx, token)
        if refusal is not None:
            return refusal
        ctx.choices[accepted] = ctx.path_tag()
        return Push("pinchange.new")


SCREENS = {
    "pin.create": NewPin("pin.create", "pin.repeat"),
    "pin.repeat": RepeatNewPin("pin.repeat", _save_first_pin),
    "main": MainMenu(),
    "send.phone": SendRecipient("send.phone", "send.amount"),
    "send.amount": SendAmount(),
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
    "account": Account(),
    "history": History(),
    "language": Language(),
    "pinchange.old": PinChangeOld(),
    "pinchange.new": NewPin("pinchange.new", "pinchange.repeat"),
    "pinchange.repeat": RepeatNewPin("pinchange.repeat", _save_changed_pin),
}


# ------------------------------------------------------------------ one request
def handle_ussd(svc: Services, req: UssdRequest) -> tuple[str, str]:
    """Answer one USSD step. Returns (reply, screen name). Database errors propagate (the app
    turns them into a 'service unavailable' END)."""
    db = svc.db
    text_key = idempotency_key(req.session_id, req.text, "idempotency:" + svc.pepper)
    # The main menu is the first screen of a registered caller's session: its count of open
    # requests comes with that step's read (other steps that show the menu read it then).
    view, user, open_requests = sessions.load_step(db, req.session_id, req.phone, with_requests=not req.text)
    if view.exists and view.phone != req.phone:
        log.warning("session %s reused by another phone", req.session_id[:16])
        return "END " + t(svc.config["DEFAULT_LANGUAGE"], "error.expired"), "refused"
    if view.exists and view.last_text_hash == text_key and view.last_reply:
        return view.last_reply, "replay"
    if view.over(utcnow(), svc.config["USSD_SESSION_TIMEOUT_S"]):
        # Ended (an END went out) or past Africa's Talking's session life: nothing more is done
        # in it, whatever the path says; a new dial is a new session.
        language = user.language if user is not None and user.language in CATALOGS else svc.config["DEFAULT_LANGUAGE"]
        if req.text and (moved := transactions.find_by_key(db, text_key)) is not None:
            # a retry of a money step whose first answer was never saved (still paying, or lost):
            # it says what happened, so nobody dials again to pay twice
            return "END " + t(language, "replay", ref=moved.reference), "replay"
        return "END " + t(language, "error.expired"), "ended"
    user = user or users.register(db, req.phone, svc.config["DEFAULT_LANGUAGE"], svc.service_code)
    ctx = Ctx(svc, req, user, text_key, dict(view.choices), open_requests=open_requests)
    tokens = req.text.split("*") if req.text else []
    if user.pin_hash is None:
        root, skip = "pin.create", 0
    else:
        root, skip = "main", min(view.onboarding_tokens, len(tokens))
    outcome = walk(SCREENS, ctx, root, tokens[skip:], skip, set_position=ctx.at,
                   memory=ctx.choices)
    # Most steps are pure reads of the path and need no write. The row is written at once when
    # there is something to remember: a PIN step (so a repeated request cannot count a wrong PIN
    # twice), a choice or refusal, the end. A session's first step with nothing else to remember
    # records only who dialled: that row is written behind (sessions.Openings).
    remember = (
        outcome.reply.startswith("END")
        or outcome.last_was_secret
        or ctx.choices != view.choices
        or outcome.onboarding_tokens != view.onboarding_tokens
    )
    if remember or not view.exists:
        trail = ">".join((["onboarding"] if skip else []) + ([outcome.trail] if outcome.trail else []))
        try:
            sessions.save(db, req.session_id, req.phone, req.service_code, exists=view.exists,
                          state=outcome.screen, trail=trail, text_hash=text_key, reply=outcome.reply,
                          onboarding_tokens=outcome.onboarding_tokens, choices=ctx.choices,
                          openings=None if remember else svc.openings)
        except SQLAlchemyError as exc:
            if not outcome.reply.startswith("END"):
                raise  # the next step would need this row: "unavailable" now is the honest answer
            # The step is done (money moved, or was refused) and its own rows are committed: say
            # what happened. A repeat of this request finds the movement by its idempotency key.
            log.warning("session %s: its last step is done but its row was not saved (%s)",
                        req.session_id[:16], type(exc).__name__)
    return outcome.reply, outcome.screen
