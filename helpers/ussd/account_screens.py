"""The main menu and My Account: balance and address, history, language."""

from __future__ import annotations

from helpers.infra.i18n import CATALOGS, gsm7_length, t
from helpers.infra.phone import local
from helpers.ussd import guard, quoting
from helpers.ussd.screen import Ctx, expired
from helpers.ussd.walker import MAX_SCREEN, End, Push, Result, Retry
from helpers.wallet.customers import users
from helpers.wallet.incoming import lnurl
from helpers.wallet.ledger import journal
from helpers.wallet.prices import FIXED

MAIN_OPTIONS = {
    "1": "send.phone",
    "2": "receive.amount",
    "3": "request.phone",
    "4": "topup.amount",
    "5": "withdraw.amount",
    "6": "account",
    "8": "mpesapay",
    "9": "save",
}
MONEY_OUT_OPTIONS = ("1", "3", "5", "7", "8")  # SIM swap and Forgot PIN guard them (issue 33)


class MainMenu:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        count = ctx.requests_open()
        requests = ctx.t("main.requests", count=count) if count else ""
        return ctx.t("main", balance=ctx.user.balance_sats, requests=requests)

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        if token == "0":
            return End(ctx.t("exit"))
        if token in MONEY_OUT_OPTIONS and (held := guard.before_money_out(ctx)) is not None:
            return held
        if token in ("4", "5", "8"):  # in KES: only at a price, whose bounds the amount screen shows
            price = quoting.price_now(ctx)
            if price is None:
                return quoting.no_price(ctx)
            return Push(MAIN_OPTIONS[token], {"bounds": quoting.kes_bounds(ctx)})
        if token in MAIN_OPTIONS:
            return Push(MAIN_OPTIONS[token])
        if token == "7":
            return Push("payreq.list")
        return Retry(ctx.t("error.option"))


class Account:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        balance = ctx.user.balance_sats
        address = lnurl.address(ctx.svc.settings, ctx.user.phone)
        price = quoting.price_now(ctx)  # none: sats only
        if price is None:
            return ctx.t("account", balance=balance, kes="", address=address)
        worth = ctx.svc.policy.sats_to_kes(balance, price.kes_per_btc)
        fragments = [ctx.t("account.kes", kes=worth), ""]
        if price.source != FIXED:  # a market price says how old it is
            fragments.insert(0, ctx.t("account.kes-age", kes=worth, age=price.age_s() // 60))
        for kes in fragments:  # the fullest that fits one screen (a huge balance drops the KES)
            screen = ctx.t("account", balance=balance, kes=kes, address=address)
            if (gsm7_length(screen) or MAX_SCREEN + 1) <= MAX_SCREEN:
                break
        return screen

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        target = {"1": "history", "2": "language", "3": "pinchange.old", "4": "name.set", "5": "limits",
                  "6": "orders"}.get(token)  # 6: standing orders, the list Save shows
        if token == "3" and ctx.final and (held := guard.before_pin_change(ctx)) is not None:
            return held
        return Push(target) if target else Retry(ctx.t("error.option"))


# Who is on the other side of an entry that has no other customer in it, by the entry's kind.
_WHO = {"receive": "lightning", "lightning-pending": "lightning", "lightning-post": "lightning",
        "lightning-void": "lightning", "topup": "mpesa", "withdraw-pending": "mpesa", "withdraw-post": "mpesa",
        "withdraw-void": "mpesa", "adjustment": "adjust", "opening": "opening", "airtime-pending": "airtime",
        "airtime-post": "airtime", "airtime-void": "airtime"}
def _who(kind: str) -> str:
    """The catalog's word for the other side of an entry of `kind`: a payout rail's entries
    ("<rail kind>-pending|post|void") are named by the rail's own "who.<rail kind>" text."""
    if kind in _WHO:
        return _WHO[kind]
    rail = kind.rsplit("-", 1)[0]
    return rail if f"who.{rail}" in CATALOGS["en"] else "adjust"


HISTORY_LINES = 4  # the most a screen shows; fewer when long amounts would pass 160 characters


class History:
    """The customer's statement: their last journal postings, newest first, each with the amount
    (+ to them, - from them), who was on the other side, the date (* while pending) and the
    reference their SMS named."""

    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        with ctx.svc.db.read() as s:
            lines = journal.statement(s, ctx.user.id, limit=HISTORY_LINES)
        region = ctx.svc.settings.default_region
        shown = [ctx.t("history.line", sign="+" if line.amount > 0 else "-", amount=abs(line.amount),
                       who=local(line.counterparty, region) if line.counterparty
                       else ctx.t("who." + _who(line.kind)),
                       date=line.at.strftime("%d/%m") + ("*" if line.pending else ""), ref=line.reference)
                 for line in lines]
        while len(shown) > 1 and (gsm7_length(ctx.t("history", lines="".join(shown))) or MAX_SCREEN + 1) > MAX_SCREEN:
            shown.pop()  # the oldest goes first
        return ctx.t("history", lines="".join(shown) or ctx.t("history.empty"))

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



class NameSet:
    """The customer's name, as people who send to their number see it on the confirm screen
    (issue 33): typed on the keypad, tidied, saved; fixed once verified."""

    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        name, _verified = users.name_of(ctx.svc.db, ctx.user.id)
        return ctx.t("name.set", now=ctx.t("name.now", name=name) if name else "")

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        name = users.clean_name(token)
        if name is None:
            return Retry(ctx.t("error.name"))
        if not ctx.final:
            return expired(ctx)
        if not users.set_name(ctx.svc.db, ctx.user.id, name):
            fixed, _verified = users.name_of(ctx.svc.db, ctx.user.id)
            return End(ctx.t("name.fixed", name=fixed or ""))
        return End(ctx.t("name.done", name=name, shown=users.shown_name(name)))
