"""Save (main menu 9, issue 35): savings goals and standing orders. Money moves only behind the PIN
step (the actions at the end of this file); opening a goal moves none, and cancelling an order
only stops payments."""

from __future__ import annotations

import datetime as dt

from helpers.infra.i18n import gsm7_length
from helpers.ussd import order_screens, quoting
from helpers.ussd.screen import Ctx, deny_text, expired, parse_amount
from helpers.ussd.walker import MAX_SCREEN, End, Push, Result, Retry
from helpers.wallet import use_cases
from helpers.wallet.customers.users import PinProof
from helpers.wallet.errors import GoalClosed, InsufficientBalance, PolicyDenied
from helpers.wallet.savings import goals
from helpers.wallet.savings.goals import GoalView

EXAMPLE_DATE = "31122030"  # how a lock date is typed (a keypad has no '/'): 31/12/2030


def _date(goal_date: dt.date) -> str:
    return goal_date.strftime("%d/%m/%Y")


class SaveMenu:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t("save")

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        target = {"1": "goals", "2": "goal.name", "3": "orders", "4": "chama"}.get(token)  # 4: save together
        if target is None:
            return Retry(ctx.t("error.option"))
        if token == "1" and not goals.open_goals(ctx.svc.db, ctx.user.id):
            return Retry(ctx.t("goals.none"))
        return Push(target)


def goal_lines(ctx: Ctx, listed: list[GoalView]) -> str:
    return "".join(ctx.t("goals.line", n=n, name=goal.name, amount=goal.balance_sats)
                   for n, goal in enumerate(listed, 1))


class GoalList:
    """The open goals, numbered; `then`: the screen a pick goes to (a goal, or an order's amount)."""

    secret = False

    def __init__(self, key: str = "goals", then: str = "goal") -> None:
        self.key, self.then = key, then

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t(self.key, lines=goal_lines(ctx, goals.open_goals(ctx.svc.db, ctx.user.id)))

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        listed = goals.open_goals(ctx.svc.db, ctx.user.id)
        picked = order_screens.pick(ctx, token, "g", [goal.id for goal in listed])
        if picked is None:
            return Retry(ctx.t("error.option"))
        name = next((goal.name for goal in listed if goal.id == picked), "")
        if self.then == "goal":
            return Push("goal", {"goal": picked})
        return Push(self.then, {**data, "kind": "goal", "to": str(picked), "shown": name})


class GoalScreen:
    secret = False

    def _goal(self, ctx: Ctx, data: dict) -> GoalView | None:
        return goals.get(ctx.svc.db, ctx.user.id, data["goal"])

    def prompt(self, ctx: Ctx, data: dict) -> str:
        goal = self._goal(ctx, data)
        if goal is None:
            return ctx.t("goal.closed")
        price = quoting.price_now(ctx)
        kes = "" if price is None else ctx.t("goal.kes", kes=ctx.svc.policy.sats_to_kes(goal.balance_sats,
                                                                                         price.kes_per_btc))
        target = (ctx.t("goal.target-kes", kes=goal.target_kes) if goal.target_kes
                  else ctx.t("goal.target-sats", amount=goal.target_sats) if goal.target_sats else "")
        pct = goal.autosave_bps // 100
        screen = ctx.t("goal", name=goal.name, amount=goal.balance_sats, kes=kes, target=target,
                       date=_date(goal.matures_on), pct=pct)
        if (gsm7_length(screen) or MAX_SCREEN + 1) > MAX_SCREEN:  # a huge goal drops its KES worth
            screen = ctx.t("goal", name=goal.name, amount=goal.balance_sats, kes="", target=target,
                           date=_date(goal.matures_on), pct=pct)
        return screen

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        if token == "1":
            return Push("goal.amount", data)
        if token == "2":
            if not ctx.svc.policy.flag("savings-early-break-allowed"):
                return Retry(deny_text(ctx, "goal-break-off"))
            return Push("pin", {**data, "action": "goal-break"})
        if token == "3":
            return Push("goal.autosave", data)
        return Retry(ctx.t("error.option"))


class GoalAutosave:
    """The share of each receipt the goal takes, in whole percent (0: off)."""

    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        goal = goals.get(ctx.svc.db, ctx.user.id, data["goal"])
        return ctx.t("goal.autosave", name=goal.name if goal else "", max=ctx.value("savings-autosave-max-pct"))

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        most = ctx.value("savings-autosave-max-pct")
        if not token.isdigit() or len(token) > 3 or int(token) > most:
            return Retry(deny_text(ctx, "autosave-max", bounds=(0, most)))
        return Push("pin", {**data, "percent": int(token), "action": "goal-autosave"})


class GoalAmount:
    secret = False

    def _bounds(self, ctx: Ctx) -> tuple[int, int]:
        return ctx.value("savings-min-sats"), ctx.user.balance_sats

    def prompt(self, ctx: Ctx, data: dict) -> str:
        goal = goals.get(ctx.svc.db, ctx.user.id, data["goal"])
        low, high = self._bounds(ctx)
        return ctx.t("goal.amount", name=goal.name if goal else "", min=low, max=high)

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        amount = parse_amount(token)
        low, high = self._bounds(ctx)
        if amount is None or not low <= amount <= high:
            return Retry(deny_text(ctx, "goal-min", bounds=(low, max(low, high))))
        return Push("pin", {**data, "amount": amount, "action": "goal-in"})


class GoalName:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t("goal.new-name")

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        name = goals.clean_name(token)
        return Push("goal.target", {"name": name}) if name else Retry(ctx.t("error.goal-name"))


class GoalTargetUnit:
    """A target in KES or in sats."""

    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t("goal.new-target", name=data["name"])

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        unit = {"1": "goal.target-kes", "2": "goal.target-sats"}.get(token)
        return Push(unit, data) if unit else Retry(ctx.t("error.option"))


class GoalTarget:
    """The target's amount, in KES or (`in_sats`) in sats."""

    secret = False

    def __init__(self, in_sats: bool = False) -> None:
        self.in_sats = in_sats

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t("goal.new-target-sats" if self.in_sats else "goal.new-target-kes", name=data["name"])

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        amount = parse_amount(token)
        if amount is None:
            return Retry(ctx.t("error.option"))
        return Push("goal.date", {**data, "target_sats" if self.in_sats else "target_kes": amount})


class GoalDate:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t("goal.new-date", name=data["name"], date=EXAMPLE_DATE)

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        lock_until = goals.parse_date(token)
        if lock_until is None or goals.lock_problem(ctx.svc.policy, lock_until):
            return Retry(deny_text(ctx, "goal-date"))
        if not ctx.final:
            return expired(ctx)
        try:
            goal = goals.open_goal(ctx.svc.db, ctx.svc.policy, ctx.user, data["name"], lock_until, ctx.key,
                                   target_sats=data.get("target_sats"), target_kes=data.get("target_kes"))
        except PolicyDenied as exc:
            return End(deny_text(ctx, exc.reason))
        return End(ctx.t("goal.opened", name=goal.name, date=_date(goal.matures_on)))


# ------------------------------------------------------------------ behind the PIN
def pin_prompt(ctx: Ctx, data: dict) -> str | None:
    """The PIN step's prompt for a Save action (what the PIN agrees to), or None."""
    action = data["action"]
    if action == "goal-in":
        goal = goals.get(ctx.svc.db, ctx.user.id, data["goal"])
        if goal is not None:
            return ctx.t("goal.pin", amount=data["amount"], name=goal.name, date=_date(goal.matures_on))
    if action == "goal-break":
        goal = goals.get(ctx.svc.db, ctx.user.id, data["goal"])
        if goal is not None:
            back, fee = goals.break_terms(ctx.svc.policy, goal)
            return ctx.t("goal.break-pin", name=goal.name, date=_date(goal.matures_on), amount=back, fee=fee)
    if action == "goal-autosave":
        goal = goals.get(ctx.svc.db, ctx.user.id, data["goal"])
        if goal is not None:
            return ctx.t("goal.autosave-pin", pct=data["percent"], name=goal.name)
    if action == "order":
        return order_screens.pin_prompt(ctx, data)
    return None


def save_to_goal(ctx: Ctx, data: dict, proof: PinProof | None) -> str:
    try:
        receipt = use_cases.save_to_goal(ctx.svc, ctx.user, proof, data["goal"], data["amount"], ctx.key)
    except InsufficientBalance as exc:
        return deny_text(ctx, "insufficient-balance", balance=exc.balance_sats)
    except GoalClosed:
        return ctx.t("goal.closed")
    except PolicyDenied as exc:
        return deny_text(ctx, exc.reason, bounds=(ctx.value("savings-min-sats"), ctx.user.balance_sats))
    ctx.recorded = True
    if receipt.replay:
        return ctx.t("replay", ref=receipt.reference)
    goal = goals.get(ctx.svc.db, ctx.user.id, data["goal"])
    return ctx.t("goal.in-done", amount=receipt.amount_sats, name=goal.name if goal else "",
                 date=_date(goal.matures_on) if goal else "", ref=receipt.reference, balance=receipt.balance_sats)


def break_goal(ctx: Ctx, data: dict, proof: PinProof | None) -> str:
    try:
        receipt = use_cases.break_goal(ctx.svc, ctx.user, proof, data["goal"], ctx.key)
    except GoalClosed:
        return ctx.t("goal.closed")
    except PolicyDenied as exc:
        return deny_text(ctx, exc.reason)
    ctx.recorded = True
    if receipt.replay:
        return ctx.t("replay", ref=receipt.reference)
    goal = goals.get(ctx.svc.db, ctx.user.id, data["goal"])
    return ctx.t("goal.break-done", name=goal.name if goal else "", amount=receipt.amount_sats, fee=receipt.fee_sats,
                 ref=receipt.reference, balance=receipt.balance_sats)


def autosave_goal(ctx: Ctx, data: dict, proof: PinProof | None) -> str:
    try:
        switched = use_cases.set_autosave(ctx.svc, ctx.user, proof, data["goal"], data["percent"])
    except PolicyDenied as exc:
        return deny_text(ctx, exc.reason, bounds=(0, ctx.value("savings-autosave-max-pct")))
    goal = goals.get(ctx.svc.db, ctx.user.id, data["goal"])
    if not switched or goal is None:
        return ctx.t("goal.closed")
    return ctx.t("goal.autosave-done", name=goal.name, pct=data["percent"])
