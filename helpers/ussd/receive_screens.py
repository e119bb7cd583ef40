"""Receiving: an invoice for the caller (sent by SMS), or a payment request sent to another phone."""

from __future__ import annotations

from helpers.ussd import guard
from helpers.ussd.screen import Ctx, deny_text, expired, sats_range, typed_sats
from helpers.ussd.walker import End, Result, Retry
from helpers.wallet import sim_swap, use_cases
from helpers.wallet.incoming import lnurl
from helpers.wallet.errors import LightningUnavailable, PolicyDenied, RateLimited


class ReceiveAmount:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t("receive.amount", address=lnurl.address(ctx.svc.settings, ctx.user.phone), **sats_range(ctx))

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        amount = typed_sats(ctx, token)
        if isinstance(amount, Retry):
            return amount
        if not ctx.final:
            return expired(ctx)
        if self.payer(data) is not None:  # a payment request in this number's name: not after a SIM swap
            decision, _ = sim_swap.check(ctx.svc, ctx.user.phone, sim_swap.MONEY_OUT)
            if not decision.allowed:
                return End(guard.refusal_text(ctx, decision.reason))
        return End(_issue(ctx, amount, self.payer(data)))

    def payer(self, data: dict) -> str | None:
        return None


class RequestAmount(ReceiveAmount):
    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t("request.amount", phone=data["phone"], **sats_range(ctx))

    def payer(self, data: dict) -> str | None:
        return data["phone"]


def _issue(ctx: Ctx, amount: int, payer_phone: str | None) -> str:
    try:
        issued = use_cases.issue_invoice(ctx.svc, ctx.user, amount, payer_phone, ctx.key)
    except RateLimited:
        return ctx.t("error.too-many")
    except LightningUnavailable:
        return ctx.t("error.lightning")
    except PolicyDenied as exc:  # the tier's balance cap (issue 34)
        return deny_text(ctx, exc.reason)
    if payer_phone is None:
        return ctx.t("receive.done", amount=amount, ref=issued.reference, minutes=issued.expiry_s // 60)
    return ctx.t("request.done", amount=amount, phone=payer_phone, ref=issued.reference)
