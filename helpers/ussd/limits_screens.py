"""My Account > Limits (issue 34): the caller's identity tier and what is left of its caps, and
Verify my ID (national ID number, names, date of birth, then the PIN step, which asks the
registry: helpers/wallet/identity.py)."""

from __future__ import annotations

from helpers.ussd.screen import Ctx, sent_today
from helpers.ussd.walker import End, Push, Result, Retry
from helpers.wallet import identity
from helpers.wallet.customers import tiers, users
from models import utcnow


class Limits:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        caps = ctx.caps()
        sent_today(ctx)
        today, month = ctx.sent_out or (0, 0)
        price = ctx.svc.prices.for_limits()
        policy = ctx.svc.policy
        # the tier's day and month caps in their own KES, and the policy's daily limit for everyone
        month_left = max(0, caps.month_kes - policy.sats_to_kes(month, price))
        day_left = min(max(0, caps.day_kes - policy.sats_to_kes(today, price)), month_left,
                       policy.sats_to_kes(policy.left_today(today), price))
        cap = ctx.t("limits.cap", kes=caps.balance_kes) if caps.balance is not None else ctx.t("limits.no-cap")
        top = ctx.user.tier >= ctx.value("top-tier")
        return ctx.t("limits", tier=ctx.user.tier, level=ctx.t(f"tier.{caps.tier}"), day=day_left,
                     month=month_left, cap=cap, verify="" if top or ctx.user.tier >= tiers.ID_CHECKED
                     else ctx.t("limits.verify"))

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        if token == "1" and ctx.user.tier < tiers.ID_CHECKED:
            if ctx.svc.id_registry is None:
                return End(ctx.t("kyc.off"))
            return Push("kyc.id")
        return Retry(ctx.t("error.option"))


class IdNumber:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t("kyc.id")

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        number = identity.clean_id_number(token)
        if number is None:
            low, high = identity.ID_DIGITS
            return Retry(ctx.t("error.id", low=low, high=high))
        return Push("kyc.names", {"id": number})


class IdNames:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t("kyc.names")

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        names = users.clean_name(token)
        if names is None or len(names.split()) < 2:
            return Retry(ctx.t("error.id-names"))
        return Push("kyc.birth", {**data, "names": names})


class IdBirth:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t("kyc.birth")

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        born = identity.parse_birth_date(token, utcnow().date())
        if born is None:
            return Retry(ctx.t("error.birth"))
        return Push("pin", {**data, "born": born.isoformat(), "action": "kyc"})
