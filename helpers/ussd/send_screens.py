"""Paying: to a phone number, to a Lightning address, or a payment request addressed to the caller.
Each path ends at the PIN step (helpers/ussd/pin_entry.py), which runs the action."""

from __future__ import annotations

import logging

from helpers.infra.phone import local, normalise
from helpers.infra.text import is_digits
from helpers.lightning import lnurl_pay
from helpers.lightning.lnurl_pay import LnurlPayError, PayParams
from helpers.ussd import quoting
from helpers.ussd.screen import (Ctx, check_spend, deny_text, expired, parse_amount, payee_bounds, pick_recent,
                                 recent_screen, sats_range, sent_today, tier_problem)
from helpers.ussd.walker import End, Push, Result, Retry
from helpers.wallet.customers import limits, users
from helpers.wallet.incoming import invoices, lnurl
from helpers.wallet.payouts import payments
from helpers.wallet.prices import SEND

log = logging.getLogger(__name__)


class OtherPhone:
    """Another person's phone number (not the caller's own), then `next_screen`."""

    secret = False

    def __init__(self, prompt_key: str, next_screen: str) -> None:
        self.prompt_key, self.next_screen = prompt_key, next_screen

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t(self.prompt_key)

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        phone = normalise(token, ctx.svc.settings.default_region)
        if phone is None:
            return Retry(ctx.t("error.phone"))
        if phone == ctx.user.phone:
            return Retry(ctx.t("error.own-phone"))
        return Push(self.next_screen, {"phone": phone})


class SendAmount:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t("send.amount", phone=data["phone"], **sats_range(ctx))

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        if token == "1":  # below any amount in sats: the customer asks to type KES instead
            return Push("send.kes", data)
        amount = parse_amount(token)
        if amount is None:
            return Retry(ctx.t("error.amount"))
        fee = ctx.svc.policy.fee_sats("internal", amount)
        problem = check_spend(ctx, amount, fee)
        if problem:
            return problem
        return Push("send.confirm", {**data, "amount": amount, "fee": fee})


class SendKes:
    """The amount of a send typed in KES, within the round KES bounds every amount typed in KES
    has: it is converted to sats at the price now (no spread: sats move, not shillings) and the
    conversion is held as a quote until the PIN. The sats it buys must still be a payment in
    bounds (a transfer in sats): only a price far from today's makes the KES bounds reach past
    them, and the screen then says so in sats."""

    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        price = quoting.price_now(ctx)
        if price is None:
            return ctx.t("price.unavailable")
        low, high = quoting.kes_bounds(ctx)
        return ctx.t("send.kes", phone=data["phone"], min=low, max=high)

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        typed = quoting.typed_kes(ctx, token)
        if not isinstance(typed, tuple):
            return typed
        kes, price = typed
        policy = ctx.svc.policy
        low, high = bounds = quoting.kes_bounds(ctx)
        if not low <= kes <= high:  # before converting: a 12-digit amount is no payment
            return Retry(deny_text(ctx, "below-minimum" if kes < low else "above-maximum", "KES", bounds=bounds))
        amount = policy.kes_to_sats_send(kes, price.kes_per_btc)
        problem = check_spend(ctx, amount, policy.fee_sats("internal", amount))
        if problem:
            return problem
        slot = quoting.hold(ctx, SEND, kes)
        if not isinstance(slot, str):
            return slot
        return Push("send.confirm", {**data, "quote": slot})


def recipient_line(ctx: Ctx, phone: str) -> str:
    """Who a payer is about to send to, before their PIN, as M-Pesa names a recipient: their name
    (first name, last initial), that they are a customer without a name, or that they are not one
    yet and will get an SMS to claim. Counted against the payer's daily look-ups (atoms.metta
    `name-lookups`); past them the screen names no one. Looked up once per number in a session
    (kept in the session's memory, so showing the screen again counts nothing)."""
    slot = "nm:" + phone
    if slot not in ctx.choices:
        # always counted, whatever RATE_LIMITS says: this limit keeps customers' names private
        capped = limits.allow(ctx.svc.db, ctx.svc.policy, ("name-lookups", ctx.user.phone)) is not None
        if capped:
            ctx.choices[slot] = ""
        else:
            who = users.recipient(ctx.svc.db, phone)
            if not who.registered:
                ctx.choices[slot] = ctx.t("recipient.new")
            elif who.name:
                ctx.choices[slot] = ctx.t("recipient.name", name=users.shown_name(who.name))
            else:
                ctx.choices[slot] = ctx.t("recipient.unnamed")
    return str(ctx.choices[slot])


class SendConfirm:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        recipient = recipient_line(ctx, data["phone"])
        if "quote" in data:
            quote = quoting.quote_of(ctx, data["quote"])
            return ctx.t("send.confirm-kes", amount=quote.sats, kes=quote.kes, phone=data["phone"],
                         fee=quote.fee_sats, valid=quoting.valid_minutes(ctx), recipient=recipient)
        total = data["amount"] + data["fee"]
        return ctx.t("send.confirm", amount=data["amount"], phone=data["phone"], fee=data["fee"], total=total,
                     recipient=recipient)

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        if token == "1":
            return Push("pin", {**data, "action": "send"})
        return Retry(ctx.t("error.option"))


RECENT_PAYEES = 3


def shown_payee(payee: str, region: str) -> str:
    """A payee as the send screen lists it: a number as people write it with its middle hidden
    (0787***321: a phone lying on a table tells little), an address cut to fit."""
    if "@" in payee:
        return payee if len(payee) <= 30 else payee[:29] + "."
    number = local(payee, region)
    return number[:4] + "***" + number[-3:] if len(number) >= 9 else number


class SendRecipient(OtherPhone):
    """A phone number, or a Lightning address typed on the keypad (letters, '@' and '.' from
    the phone's symbol key). Our own addresses (<digits>@<our domain>) are phone numbers; any
    other is resolved once, when typed, and what its server offered is kept in the session.
    The customer's last RECENT_PAYEES payees are offered as 1, 2, 3 (no phone number or address
    is one digit); the choice made is kept in the session, so a replay means the same payee."""

    def _recent(self, ctx: Ctx) -> list[str]:
        return payments.recent_payees(ctx.svc.db, ctx.user.id, RECENT_PAYEES)

    def prompt(self, ctx: Ctx, data: dict) -> str:
        recent = self._recent(ctx)
        if not recent:
            return ctx.t(self.prompt_key)
        region = ctx.svc.settings.default_region
        return recent_screen(ctx, "send.phone-recent", [shown_payee(p, region) for p in recent])

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        picked = pick_recent(ctx, token, "rp", lambda: self._recent(ctx))
        if picked is not None and not isinstance(picked, str):
            return picked
        token = picked or token
        if "@" not in token:
            return super().handle(ctx, data, token)
        parsed = lnurl_pay.parse_address(token)
        if parsed is None:
            return Retry(ctx.t("error.address"))
        name, domain = parsed
        if domain == lnurl.domain(ctx.svc.settings).lower():
            phone = normalise("+" + name, ctx.svc.settings.default_region) if is_digits(name) else None
            return super().handle(ctx, data, phone) if phone else Retry(ctx.t("error.address"))
        slot = f"ln{ctx.position}"
        if slot not in ctx.choices:
            if not ctx.final:
                return expired(ctx)  # resolved only when typed: a replay never calls out
            try:
                params = lnurl_pay.resolve(name, domain, ctx.svc.settings)
            except LnurlPayError as exc:
                log.info("lightning address %s refused: %s", domain, exc)
                return Retry(ctx.t(f"lnurl.{exc.reason}"))
            if params.payer_name == lnurl_pay.NAME_MANDATORY and not users.name_of(ctx.svc.db, ctx.user.id)[1]:
                return Retry(ctx.t("lnurl.name-required"))  # told now, not after the amount and PIN
            ctx.choices[slot] = params.to_dict()
        return Push("send.ln.amount", {"ln": ctx.choices[slot]})


class LightningAmount:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        params = PayParams.from_dict(data["ln"])
        low, high = payee_bounds(ctx, params)
        return ctx.t("send.ln.amount", payee=params.address, min=low, max=high)

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        amount = parse_amount(token)
        if amount is None:
            return Retry(ctx.t("error.amount"))
        params = PayParams.from_dict(data["ln"])
        fee = ctx.svc.policy.fee_sats("lightning", amount)
        # Balance and daily limit only for the screen shown now; the reservation checks again.
        balance, sent = (ctx.user.balance_sats, sent_today(ctx)) if ctx.final else (amount + fee, 0)
        decision = ctx.svc.policy.lightning_send(amount, fee, balance, sent, params.min_sats, params.max_sats)
        if not decision.allowed:
            return Retry(deny_text(ctx, decision.reason or "", bounds=payee_bounds(ctx, params)))
        if (past_tier := tier_problem(ctx, amount)) is not None:
            return past_tier
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
        problem = check_spend(ctx, data["amount"], data["fee"])
        if problem:
            return problem
        return Push("pin", {**data, "action": "payreq"})

