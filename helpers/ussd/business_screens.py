"""Paying a business with M-Pesa from sats: a shop's till (Buy Goods) or a bill's paybill number
with its account reference. The amount is in KES, quoted like a withdrawal (the sell spread and
the M-Pesa fee); the PIN step pays (helpers/ussd/actions.py)."""

from __future__ import annotations

import re

from helpers.mpesa.provider import BUY_GOODS, PAY_BILL
from helpers.ussd import quoting
from helpers.ussd.screen import Ctx, pick_recent, recent_screen
from helpers.ussd.walker import Push, Result, Retry
from helpers.wallet.payouts import kes_out, payments

SHORTCODE = re.compile(r"[0-9]{5,7}")  # tills and paybills are 5-7 digits
ACCOUNT = re.compile(r"[A-Za-z0-9-]{1,13}")  # Daraja's AccountReference: up to 13 characters


def payee(data: dict) -> str:
    """How statements, screens and SMS name the business."""
    return kes_out.payee_name(data["cmd"], data["party"], data["account"])


class BusinessKind:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t("mpesapay")

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        if token == "3":  # airtime: its own bounds, not M-Pesa's
            return Push("airtime") if ctx.svc.airtime is not None else Retry(ctx.t("airtime.off"))
        target = {"1": "mpesapay.till", "2": "mpesapay.paybill"}.get(token)
        return Push(target, {"bounds": data["bounds"]}) if target else Retry(ctx.t("error.option"))


_PAID = re.compile(r"^(Till|Paybill) ([0-9]{5,7})(?: acct (\S{1,13}))?$")  # how payee() names them


class BusinessNumber:
    """A till or paybill number, or 1-3 for one of the last three this customer paid (a paybill
    with its account); the choice is kept in the session, so a replay means the same business."""

    secret = False

    def __init__(self, prompt_key: str, command: str) -> None:
        self.prompt_key, self.command = prompt_key, command
        self.label = "Till" if command == BUY_GOODS else "Paybill"

    def _recent(self, ctx: Ctx) -> list[str]:
        return payments.recent_businesses(ctx.svc.db, ctx.user.id, self.label)

    def prompt(self, ctx: Ctx, data: dict) -> str:
        recent = self._recent(ctx)
        if not recent:
            return ctx.t(self.prompt_key)
        return recent_screen(ctx, "mpesapay.recent", recent, prompt=ctx.t(self.prompt_key))

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        picked = pick_recent(ctx, token, "rb", lambda: self._recent(ctx))
        if picked is not None and not isinstance(picked, str):
            return picked
        if picked is not None:
            paid = _PAID.match(picked)
            if paid is None:
                return Retry(ctx.t("error.option"))
            return Push("mpesapay.amount", {**data, "cmd": self.command, "party": paid.group(2),
                                            "account": paid.group(3) or ""})
        if not SHORTCODE.fullmatch(token):
            return Retry(ctx.t("error.shortcode"))
        chosen = {**data, "cmd": self.command, "party": token, "account": ""}
        return Push("mpesapay.account" if self.command == PAY_BILL else "mpesapay.amount", chosen)


class PaybillAccount:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t("mpesapay.account", party=data["party"])

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        if not ACCOUNT.fullmatch(token):
            return Retry(ctx.t("error.account"))
        return Push("mpesapay.amount", {**data, "account": token})


class BusinessAmount:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        low, high = data["bounds"]
        return ctx.t("mpesapay.amount", payee=payee(data), min=low, max=high)

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        amount = quoting.payout_amount(ctx, token)  # the same rules as a withdrawal
        if not isinstance(amount, tuple):
            return amount
        kes, slot = amount
        return Push("pin", {**data, "kes": kes, "quote": slot, "action": "mpesapay"})
