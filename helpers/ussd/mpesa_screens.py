"""M-Pesa: top up (by confirmation code, or by a prompt pushed to the caller's phone) and withdraw
(the PIN step pays out)."""

from __future__ import annotations

from helpers.infra.phone import normalise
from helpers.mpesa.provider import normalise_code
from helpers.ussd import quoting
from helpers.ussd.screen import Ctx, begin_acting, deny_text, expired
from helpers.ussd.walker import End, Push, Result, Retry
from helpers.wallet import use_cases
from helpers.wallet.customers import tiers
from helpers.wallet.ledger import movements
from helpers.wallet.errors import CodeAlreadyUsed, PolicyDenied, TopupNotConfirmed
from helpers.wallet.prices import TOPUP
from lightning import State


class TopupAmount:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        low, high = data["bounds"]
        return ctx.t("topup.amount", min=low, max=high)

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        typed = quoting.typed_kes(ctx, token)
        if not isinstance(typed, tuple):
            return typed
        kes, price = typed
        decision = ctx.svc.policy.topup(kes, price.kes_per_btc)
        if not decision.allowed:
            return Retry(deny_text(ctx, decision.reason or "", "KES", bounds=quoting.kes_bounds(ctx)))
        if ctx.svc.mpesa.topup_by_push and not ctx.svc.mpesa.accepts_phone(ctx.user.phone):
            return End(ctx.t("error.mpesa-phone"))  # the prompt can only go to the caller's own phone
        if ctx.final:  # the tier's balance cap, before the customer pays anything (issue 34)
            try:
                tiers.check_in(ctx.caps(), ctx.user.balance_sats,
                               ctx.svc.policy.kes_to_sats_credit(kes, price.kes_per_btc))
            except PolicyDenied as exc:
                return End(deny_text(ctx, exc.reason))
        slot = quoting.hold(ctx, TOPUP, kes)
        if not isinstance(slot, str):
            return slot
        return Push("topup.push" if ctx.svc.mpesa.topup_by_push else "topup.code", {"kes": kes, "quote": slot})


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
                if movements.code_used(s, code):
                    return Retry(ctx.t("error.code-used"))
        return Push("topup.confirm", {**data, "code": code})


class TopupConfirm:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        quote = quoting.quote_of(ctx, data["quote"])
        return ctx.t("topup.confirm", kes=quote.kes, sats=quote.sats, code=data["code"],
                     valid=quoting.valid_minutes(ctx))

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        if token != "1":
            return Retry(ctx.t("error.option"))
        if not ctx.final:
            return expired(ctx)
        again = quoting.renewed(ctx, data["quote"])
        if again is not None:
            return again
        quote = quoting.quote_of(ctx, data["quote"])
        if (refused := begin_acting(ctx)) is not None:  # continued elsewhere meanwhile: only there
            return refused
        try:
            receipt = use_cases.top_up_with_code(ctx.svc, ctx.user, quote, data["code"], ctx.key)
        except TopupNotConfirmed:
            return End(ctx.t("error.code"))
        except CodeAlreadyUsed:
            return End(ctx.t("error.code-used"))
        except PolicyDenied as exc:
            return End(deny_text(ctx, exc.reason, "KES", bounds=ctx.svc.policy.kes_bounds()))
        if receipt.replay:
            return End(ctx.t("replay", ref=receipt.reference))
        return End(ctx.t("topup.done", sats=receipt.amount_sats, kes=quote.kes, code=data["code"],
                         balance=receipt.balance_sats))


class TopupPush:
    """Confirm, then M-Pesa prompts the caller's own phone for the M-Pesa PIN (STK push); the
    quote's sats are credited when M-Pesa confirms the payment (callback or status query)."""

    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        quote = quoting.quote_of(ctx, data["quote"])
        return ctx.t("topup.push", kes=quote.kes, sats=quote.sats, phone=ctx.user.phone,
                     valid=quoting.valid_minutes(ctx))

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        if token != "1":
            return Retry(ctx.t("error.option"))
        if not ctx.final:
            return expired(ctx)
        again = quoting.renewed(ctx, data["quote"])
        if again is not None:
            return again
        quote = quoting.quote_of(ctx, data["quote"])
        if (refused := begin_acting(ctx)) is not None:  # continued elsewhere meanwhile: only there
            return refused
        started = use_cases.top_up_by_push(ctx.svc, ctx.user, quote, ctx.key)
        if started.replay:
            return End(ctx.t("replay", ref=started.reference))
        if started.state is State.FAILED:
            return End(ctx.t("topup.push-failed"))
        return End(ctx.t("topup.push-sent", kes=quote.kes, sats=quote.sats, ref=started.reference))


class WithdrawAmount:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        low, high = data["bounds"]
        return ctx.t("withdraw.amount", min=low, max=high)

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        amount = quoting.payout_amount(ctx, token)
        if not isinstance(amount, tuple):
            return amount
        kes, slot = amount
        return Push("withdraw.phone", {"kes": kes, "quote": slot})


class WithdrawPhone:
    """The number M-Pesa pays. "1 My number" is offered only when M-Pesa can pay the customer's
    own number (a Safaricom one): an Airtel or Telkom customer is asked for a number."""

    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        if not ctx.svc.mpesa.accepts_phone(ctx.user.phone):
            return ctx.t("withdraw.phone-other", kes=data["kes"])
        return ctx.t("withdraw.phone", kes=data["kes"], phone=ctx.user.phone)

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        own = token == "1" and ctx.svc.mpesa.accepts_phone(ctx.user.phone)
        phone = ctx.user.phone if own else normalise(token, ctx.svc.settings.default_region)
        if phone is None:
            return Retry(ctx.t("error.phone"))
        if not ctx.svc.mpesa.accepts_phone(phone):
            return Retry(ctx.t("error.mpesa-phone"))
        return Push("pin", {**data, "phone": phone, "action": "withdraw"})

