"""Airtime from sats, for the caller's own number or another Kenyan number: the amount is in KES,
quoted like a withdrawal (the sell spread; airtime's fee is atoms.metta's), bounded by
airtime-min-kes / airtime-max-kes; the PIN step buys it (helpers/ussd/actions.py)."""

from __future__ import annotations

from helpers.infra.phone import local, normalise
from helpers.ussd import quoting
from helpers.ussd.screen import Ctx, pick_recent, recent_screen
from helpers.ussd.send_screens import shown_payee
from helpers.ussd.walker import Push, Result, Retry
from helpers.wallet.payouts import payments
from helpers.wallet.prices import AIRTIME


def shown(phone: str, ctx: Ctx) -> str:
    return local(phone, ctx.svc.settings.default_region)


class AirtimeFor:
    """Whose phone: the caller's own, or another number."""

    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t("airtime", phone=shown(ctx.user.phone, ctx))

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        if token == "1":
            return Push("airtime.amount", {"phone": ctx.user.phone})
        if token == "2":
            return Push("airtime.phone")
        return Retry(ctx.t("error.option"))


class AirtimePhone:
    """Another number, or 1-3 for one of the last three this customer bought airtime for (the
    choice is kept in the session, so a replay means the same number)."""

    secret = False

    def _recent(self, ctx: Ctx) -> list[str]:
        return payments.recent_airtime(ctx.svc.db, ctx.user.id, ctx.user.phone)

    def prompt(self, ctx: Ctx, data: dict) -> str:
        recent = self._recent(ctx)
        if not recent:
            return ctx.t("airtime.phone")
        region = ctx.svc.settings.default_region
        return recent_screen(ctx, "airtime.recent", [shown_payee(p, region) for p in recent])

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        picked = pick_recent(ctx, token, "ra", lambda: self._recent(ctx))
        if picked is not None and not isinstance(picked, str):
            return picked
        phone = picked or normalise(token, ctx.svc.settings.default_region)
        if phone is None:
            return Retry(ctx.t("error.phone"))
        return Push("airtime.amount", {"phone": phone})


class AirtimeAmount:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        low, high = ctx.svc.policy.airtime_bounds()
        return ctx.t("airtime.amount", phone=shown(data["phone"], ctx), min=low, max=high)

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        amount = quoting.payout_amount(ctx, token, AIRTIME)  # airtime's own bounds, sold like a withdrawal
        if not isinstance(amount, tuple):
            return amount
        kes, slot = amount
        return Push("pin", {**data, "kes": kes, "quote": slot, "action": "airtime"})
