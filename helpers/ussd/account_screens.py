"""The main menu and My Account: balance and address, history, language."""

from __future__ import annotations

from helpers.infra.i18n import CATALOGS, t
from helpers.ussd.screen import Ctx, expired
from helpers.ussd.walker import End, Push, Result, Retry
from helpers.wallet import books, lnurl, users
from models import CREDIT, PENDING

MAIN_OPTIONS = {
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
        if token in MAIN_OPTIONS:
            return Push(MAIN_OPTIONS[token])
        if token == "7":
            return Push("payreq.list")
        return Retry(ctx.t("error.option"))


class Account:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        balance = ctx.user.balance_sats
        return ctx.t("account", balance=balance, kes=ctx.svc.policy.sats_to_kes(balance),
                     address=lnurl.address(ctx.svc.settings, ctx.user.phone))

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        target = {"1": "history", "2": "language", "3": "pinchange.old"}.get(token)
        return Push(target) if target else Retry(ctx.t("error.option"))


class History:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        with ctx.svc.db.read() as s:
            rows = books.recent(s, ctx.user.id)
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
            return expired(ctx)
        users.set_language(ctx.svc.db, ctx.user.id, chosen)
        return End(t(chosen, "language.done"))

