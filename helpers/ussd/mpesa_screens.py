"""M-Pesa: top up (by confirmation code, or by a prompt pushed to the caller's phone) and withdraw
(the PIN step pays out)."""

from __future__ import annotations

from helpers.infra.phone import normalise
from helpers.mpesa.provider import normalise_code
from helpers.ussd.screen import Ctx, deny_text, expired, kes_range, parse_amount, sent_today
from helpers.ussd.walker import End, Push, Result, Retry
from helpers.wallet import transactions, use_cases
from helpers.wallet.errors import CodeAlreadyUsed, PolicyDenied, TopupNotConfirmed
from lightning import State


class TopupAmount:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t("topup.amount", **kes_range(ctx))

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
            return expired(ctx)
        try:
            receipt = use_cases.top_up_with_code(ctx.svc, ctx.user, data["kes"], data["code"], ctx.key)
        except TopupNotConfirmed:
            return End(ctx.t("error.code"))
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
            return expired(ctx)
        started = use_cases.top_up_by_push(ctx.svc, ctx.user, data["kes"], data["sats"], ctx.key)
        if started.replay:
            return End(ctx.t("replay", ref=started.reference))
        if started.state is State.FAILED:
            return End(ctx.t("topup.push-failed"))
        return End(ctx.t("topup.push-sent", kes=data["kes"], sats=data["sats"], ref=started.reference))


class WithdrawAmount:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t("withdraw.amount", **kes_range(ctx))

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        kes = parse_amount(token)
        if kes is None:
            return Retry(ctx.t("error.amount"))
        policy = ctx.svc.policy
        sent = sent_today(ctx) if ctx.final else 0
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
        phone = ctx.user.phone if token == "1" else normalise(token, ctx.svc.settings.default_region)
        if phone is None:
            return Retry(ctx.t("error.phone"))
        if not ctx.svc.mpesa.accepts_phone(phone):
            return Retry(ctx.t("error.mpesa-phone"))
        return Push("pin", {**data, "phone": phone, "action": "withdraw"})

