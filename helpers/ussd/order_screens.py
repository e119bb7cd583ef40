"""Standing orders (issue 35), under Save > Standing orders and My Account > Orders: the list (each
order's destination and amount; one picked can be cancelled) and the setup: whom to pay (a phone,
a goal, a Lightning address, a till, a paybill), in sats or KES (a till or paybill: KES), how
often, and the PIN, which is the customer's consent to the runs the worker makes without one."""

from __future__ import annotations

from helpers.infra.i18n import gsm7_length
from helpers.infra.phone import local, normalise
from helpers.infra.text import is_digits
from helpers.lightning import lnurl_pay
from helpers.ussd.business_screens import ACCOUNT, SHORTCODE
from helpers.ussd.screen import Ctx, deny_text, expired, parse_amount
from helpers.ussd.walker import MAX_SCREEN, End, Push, Result, Retry
from helpers.wallet import use_cases
from helpers.wallet.customers.users import PinProof
from helpers.wallet.errors import PolicyDenied
from helpers.wallet.incoming import lnurl
from helpers.wallet.ledger.savings_tables import (ORDER_ADDRESS, ORDER_GOAL, ORDER_PAYBILL, ORDER_PHONE, ORDER_TILL,
                                                  UNIT_KES, UNIT_SATS)
from helpers.wallet.savings import goals, orders
from helpers.wallet.savings.orders import OrderView

SHORT_TO = 15  # the list names a destination in at most this: a 7-digit paybill ("Paybill 1234567") whole


def pick(ctx: Ctx, token: str, kind: str, ids: list[int]) -> int | None:
    """The id a numbered line picks, chosen once when typed and kept in the session (a replay, or a
    list that changed since, means the same one); None if the number is not on the list."""
    slot = f"{kind}{ctx.position}"
    if slot not in ctx.choices:
        if not token.isdigit() or not 1 <= int(token) <= len(ids):
            return None
        ctx.choices[slot] = ids[int(token) - 1]
    return int(ctx.choices[slot])


def order_to(ctx: Ctx, order: OrderView | dict, short: bool = False) -> str:
    """Whom an order pays, as a screen says it: a phone in local form, the goal's name, the address,
    the till or paybill (with its account); `short`: cut to a list line's length."""
    if isinstance(order, OrderView):
        kind, to, account = order.kind, order.destination, order.account
    else:
        kind, to, account = order["kind"], order["to"], order.get("account")
    if kind == ORDER_PHONE:
        return local(to, ctx.svc.settings.default_region)
    if kind == ORDER_GOAL:
        if isinstance(order, dict) and order.get("shown"):
            return str(order["shown"])
        goal = goals.get(ctx.svc.db, ctx.user.id, int(to))
        return goal.name if goal else "-"
    shown = orders.payee_name(kind, to, None if short else account) if kind in orders.MPESA_KINDS else to
    if short and kind == ORDER_PAYBILL:
        shown = shown.split(" acct ")[0]
    return shown if not short or len(shown) <= SHORT_TO else shown[:SHORT_TO - 2] + ".."


def money(ctx: Ctx, unit: str, amount: int) -> str:
    """An order's amount as typed: sats, or KES."""
    return ctx.t("order.kes", kes=amount) if unit == UNIT_KES else ctx.t("order.sats", amount=amount)


MORE = "8"


def _page(ctx: Ctx, listed: list[OrderView], start: int) -> tuple[str, int | None]:
    """The list from its `start`th order, as many lines as fit one screen with "8 More" (when some
    are left) and "9 New order"; and where the next page starts (None: this is the last)."""
    lines = [ctx.t("orders.line", n=n, amount=money(ctx, order.unit, order.amount),
                   period=ctx.t(f"period.{order.period}"), to=order_to(ctx, order, short=True))
             for n, order in enumerate(listed, 1)][start:]
    if not lines:
        return ctx.t("orders", lines=ctx.t("orders.none")), None
    shown = len(lines)
    while True:
        left = start + shown < len(listed)
        text = ctx.t("orders", lines="".join(lines[:shown]) + (ctx.t("orders.more") if left else ""))
        if shown == 1 or (gsm7_length(text) or MAX_SCREEN + 1) <= MAX_SCREEN:
            return text, start + shown if left else None
        shown -= 1


class OrderList:
    """The customer's active orders, a page at a time (8 More), numbered across pages."""

    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return _page(ctx, orders.active(ctx.svc.db, ctx.user.id), int(data.get("from", 0)))[0]

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        if token == "9":
            return Push("order.to")
        listed = orders.active(ctx.svc.db, ctx.user.id)
        if token == MORE and (after := _page(ctx, listed, int(data.get("from", 0)))[1]) is not None:
            return Push("orders", {"from": after})
        picked = pick(ctx, token, "o", [order.id for order in listed])
        return Retry(ctx.t("error.option")) if picked is None else Push("order", {"order": picked})


class OrderScreen:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        order = next((o for o in orders.active(ctx.svc.db, ctx.user.id) if o.id == data["order"]), None)
        if order is None:
            return ctx.t("order.cancelled")
        return ctx.t("order", amount=money(ctx, order.unit, order.amount), period=ctx.t(f"period.{order.period}"),
                     to=order_to(ctx, order), date=order.next_run_at.strftime("%d/%m"))

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        if token != "1":
            return Retry(ctx.t("error.option"))
        if not ctx.final:
            return expired(ctx)
        orders.cancel(ctx.svc.db, ctx.user.id, data["order"])
        return End(ctx.t("order.cancelled"))


class OrderTo:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t("order.to")

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        if token == "2":
            return Push("order.goal") if goals.open_goals(ctx.svc.db, ctx.user.id) else Retry(ctx.t("goals.none"))
        target = {"1": "order.phone", "3": "order.address", "4": "order.till", "5": "order.paybill"}.get(token)
        return Push(target) if target else Retry(ctx.t("error.option"))


class OrderPhone:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t("order.phone")

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        phone = normalise(token, ctx.svc.settings.default_region)
        if phone is None:
            return Retry(ctx.t("error.phone"))
        if phone == ctx.user.phone:
            return Retry(deny_text(ctx, "own-phone"))
        return Push("order.unit", {"kind": ORDER_PHONE, "to": phone})


class OrderAddress:
    """A Lightning address; one at our own domain is a customer's phone (an order to the phone)."""

    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t("order.address")

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        parsed = lnurl_pay.parse_address(token)
        if parsed is None:
            return Retry(ctx.t("error.address"))
        name, domain = parsed
        if domain == lnurl.domain(ctx.svc.settings).lower():
            phone = normalise("+" + name, ctx.svc.settings.default_region) if is_digits(name) else None
            if phone is None:
                return Retry(ctx.t("error.address"))
            return OrderPhone().handle(ctx, data, phone)
        return Push("order.unit", {"kind": ORDER_ADDRESS, "to": f"{name}@{domain}"})


class OrderBusiness:
    """A till or paybill number (a paybill then asks its account); paid in KES."""

    secret = False

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t("mpesapay.till" if self.kind == ORDER_TILL else "mpesapay.paybill")

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        if not SHORTCODE.fullmatch(token):
            return Retry(ctx.t("error.shortcode"))
        chosen = {"kind": self.kind, "to": token, "unit": UNIT_KES}
        return Push("order.account" if self.kind == ORDER_PAYBILL else "order.amount", chosen)


class OrderAccount:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t("mpesapay.account", party=data["to"])

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        if not ACCOUNT.fullmatch(token):
            return Retry(ctx.t("error.account"))
        return Push("order.amount", {**data, "account": token})


class OrderUnit:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t("order.unit")

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        unit = {"1": UNIT_SATS, "2": UNIT_KES}.get(token)
        return Push("order.amount", {**data, "unit": unit}) if unit else Retry(ctx.t("error.option"))


class OrderAmount:
    secret = False

    def _bounds(self, ctx: Ctx, data: dict) -> tuple[int, int]:
        if data.get("unit") == UNIT_KES:  # at most what the cap (with its fee) is worth at today's price
            return ctx.svc.policy.kes_bounds()[0], orders.kes_max(ctx.svc.policy, data["kind"],
                                                                  ctx.svc.prices.for_limits())
        low = ctx.value("savings-min-sats" if data["kind"] == ORDER_GOAL else "payment-min-sats")
        return low, ctx.value("standing-order-max-sats")

    def prompt(self, ctx: Ctx, data: dict) -> str:
        low, high = self._bounds(ctx, data)
        return ctx.t("order.amount-kes" if data.get("unit") == UNIT_KES else "order.amount", min=low, max=high)

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        amount = parse_amount(token)
        low, high = self._bounds(ctx, data)
        if amount is None or not low <= amount <= high:
            return Retry(deny_text(ctx, "order-kes" if data.get("unit") == UNIT_KES else "order-cap",
                                   bounds=(low, high)))
        if data.get("unit") != UNIT_KES:
            return Push("order.period", {**data, "amount": amount})
        # "amount" is the PIN step's sats out for the SIM-swap guard: a KES order's worth now
        price = ctx.svc.prices.for_limits()
        worth = (ctx.svc.policy.kes_to_sats_debit(amount, price) if data["kind"] in orders.MPESA_KINDS
                 else ctx.svc.policy.kes_to_sats_send(amount, price))
        return Push("order.period", {**data, "kes": amount, "amount": worth})


class OrderPeriod:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t("order.period")

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        period = {"1": "daily", "2": "weekly", "3": "monthly"}.get(token)
        if period is None:
            return Retry(ctx.t("error.option"))
        # "amount" is the PIN step's sats out for the SIM-swap guard: a run's, as a send's
        return Push("pin", {**data, "period": period, "action": "order"})


def _typed(data: dict) -> tuple[str, int]:
    unit = data.get("unit", UNIT_SATS)
    return unit, data["kes"] if unit == UNIT_KES else data["amount"]


def pin_prompt(ctx: Ctx, data: dict) -> str:
    unit, amount = _typed(data)
    return ctx.t("order.pin", amount=money(ctx, unit, amount), period=ctx.t(f"period.{data['period']}"),
                 to=order_to(ctx, data))


def set_order(ctx: Ctx, data: dict, proof: PinProof | None) -> str:
    unit, amount = _typed(data)
    try:
        order = use_cases.set_standing_order(ctx.svc, ctx.user, proof, data["kind"], data["to"], amount,
                                             data["period"], ctx.key, unit=unit, account=data.get("account"))
    except PolicyDenied as exc:
        if unit == UNIT_KES and exc.reason != "order-cap":
            return deny_text(ctx, exc.reason, unit="KES", bounds=ctx.svc.policy.kes_bounds())
        return deny_text(ctx, exc.reason, bounds=(ctx.value("payment-min-sats"), ctx.value("standing-order-max-sats")))
    return ctx.t("order.done", amount=money(ctx, order.unit, order.amount), period=ctx.t(f"period.{order.period}"),
                 to=order_to(ctx, data))
