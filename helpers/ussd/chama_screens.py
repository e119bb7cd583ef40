"""Chama (group wallet) screens, self-contained: `CHAMA_SCREENS` (the root is "chama", reached from
one menu line) and `CHAMA_ACTIONS` (the PIN step's money actions: contribute, propose, vote,
leave). Groups and proposals picked from a list are kept in the session's choices when typed, so a
replay means the same one even if the list changed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from helpers.infra import sms
from helpers.infra.i18n import gsm7_length, t
from helpers.infra.phone import local, normalise
from helpers.ussd.chama_payout_screens import PAYOUT_SCREENS, label, propose_kes
from helpers.ussd.screen import Ctx, deny_text, expired, typed_sats
from helpers.ussd.walker import MAX_SCREEN, End, Push, Result, Retry, Screen
from helpers.wallet import use_cases
from helpers.wallet.chama import groups, proposals
from helpers.wallet.chama.groups import ChamaRefused
from helpers.wallet.chama.tables import INVITED, KES_KINDS, MEMBER, SECRETARY, TO_WALLET, TREASURER
from helpers.wallet.customers.users import PinProof
from helpers.wallet.errors import InsufficientBalance, PolicyDenied, PriceUnavailable

NEW = "8"


def _fitted(ctx: Ctx, key: str, lines: list[str], lang: str | None = None, **values: Any) -> str:
    """Catalog message `key` with as many of `lines` as fit one screen or SMS (`{lines}`)."""
    lang = lang or ctx.lang
    while lines and (gsm7_length(t(lang, key, lines="".join(lines), **values)) or MAX_SCREEN + 1) > MAX_SCREEN:
        lines = lines[:-1]
    return t(lang, key, lines="".join(lines), **values)


def _pick(ctx: Ctx, token: str, slot: str, listed: Callable[[], list[int]]) -> int | None:
    """The id the numbered `token` picks from `listed` (kept in the session when typed)."""
    key = f"{slot}{ctx.position}"
    if key not in ctx.choices:
        if not token.isdigit():
            return None
        found = listed()
        if not 1 <= int(token) <= len(found):
            return None
        ctx.choices[key] = found[int(token) - 1]
    return int(ctx.choices[key])


def _refused(ctx: Ctx, exc: ChamaRefused) -> str:
    return ctx.t(f"chama.refused.{exc.reason}")


class ChamaHome:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        lines = [ctx.t("chama.line-invited" if group.status == INVITED else "chama.line", n=n, group=group.name)
                 for n, group in enumerate(groups.mine(ctx.svc.db, ctx.user.id)[:7], 1)]
        return _fitted(ctx, "chama", lines)

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        if token == NEW:
            return Push("chama.new.name")
        chama_id = _pick(ctx, token, "g", lambda: [group.id for group in groups.mine(ctx.svc.db, ctx.user.id)[:7]])
        group = None if chama_id is None else groups.get(ctx.svc.db, ctx.user.id, chama_id)
        if group is None:
            return Retry(ctx.t("error.option"))
        return Push("chama.invitation" if group.status == INVITED else "chama.group", {"chama": group.id})


class NewName:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t("chama.new.name", min=ctx.value("chama-name-min"), max=ctx.value("chama-name-max"))

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        name = groups.tidy_name(ctx.svc.policy, token)
        if name is None:
            return Retry(ctx.t("chama.bad-name", min=ctx.value("chama-name-min"), max=ctx.value("chama-name-max")))
        return Push("chama.new.rule", {"name": name})


class NewRule:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t("chama.new.rule", group=data["name"], max=ctx.value("chama-max-approvals"))

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        most = ctx.value("chama-max-approvals")
        if not token.isdigit() or not 1 <= int(token) <= most:
            return Retry(ctx.t("chama.bad-rule", max=most))
        return Push("chama.new.leave", {"name": data["name"], "rule": int(token)})


class NewLeaveRule:
    """The group's leave rule: what a member who leaves gets back, one of atoms.metta's choices."""

    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        lines = [ctx.t("chama.new.leave-line", n=n, pct=pct)
                 for n, pct in enumerate(groups.leave_choices(ctx.svc.policy), 1)]
        return _fitted(ctx, "chama.new.leave", lines, group=data["name"])

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        choices = groups.leave_choices(ctx.svc.policy)
        if not token.isdigit() or not 1 <= int(token) <= len(choices):
            return Retry(ctx.t("error.option"))
        if not ctx.final:
            return expired(ctx)
        groups.create(ctx.svc.db, ctx.svc.policy, ctx.user, data["name"], data["rule"], choices[int(token) - 1])
        return End(ctx.t("chama.created", group=data["name"], code=ctx.svc.service_code))


def _group(ctx: Ctx, data: dict) -> groups.GroupView | None:
    return groups.get(ctx.svc.db, ctx.user.id, data["chama"])


class Invitation:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        group = _group(ctx, data)
        return ctx.t("chama.invitation", group=group.name if group else "")

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        if token not in ("1", "2"):
            return Retry(ctx.t("error.option"))
        if not ctx.final:
            return expired(ctx)
        group = _group(ctx, data)
        if group is None or not groups.answer_invite(ctx.svc.db, ctx.user, data["chama"], token == "1"):
            return End(ctx.t("chama.refused.not-member"))
        return End(ctx.t("chama.joined" if token == "1" else "chama.declined", group=group.name))


class GroupMenu:
    secret = False
    targets = {"1": "chama.contribute", "2": "chama.propose.kind", "3": "chama.pending", "4": "chama.statement",
               "5": "chama.invite", "6": "chama.leave", "7": "chama.officials"}

    def prompt(self, ctx: Ctx, data: dict) -> str:
        group = _group(ctx, data)
        if group is None:
            return ctx.t("chama.refused.not-member")
        waiting = len(proposals.pending_for(ctx.svc.db, ctx.user.id, group.id))
        return ctx.t("chama.group", group=group.name, amount=group.holds, count=waiting)

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        if token not in self.targets:
            return Retry(ctx.t("error.option"))
        return Push(self.targets[token], data)


class Contribute:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        group = _group(ctx, data)
        return ctx.t("chama.contribute", group=group.name if group else "", min=ctx.value("payment-min-sats"),
                     max=ctx.value("payment-max-sats"))

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        amount = typed_sats(ctx, token)
        if isinstance(amount, Retry):
            return amount
        if ctx.final and amount > ctx.user.balance_sats:
            return Retry(deny_text(ctx, "insufficient-balance"))
        return Push("pin", {"action": "chama-in", "chama": data["chama"], "amount": amount})


class GroupPhone:
    """A phone number typed for the group on screen (a payee, an invitee, an official), then
    `next_screen` with it."""

    secret = False

    def __init__(self, prompt_key: str, next_screen: str = "") -> None:
        self.prompt_key, self.next_screen = prompt_key, next_screen

    def prompt(self, ctx: Ctx, data: dict) -> str:
        group = _group(ctx, data)
        return ctx.t(self.prompt_key, group=group.name if group else "")

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        phone = normalise(token, ctx.svc.settings.default_region)
        if phone is None:
            return Retry(ctx.t("error.phone"))
        return Push(self.next_screen, {"chama": data["chama"], "phone": phone})


class PayoutAmount:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        group = _group(ctx, data)
        return ctx.t("chama.propose.amount", group=group.name if group else "",
                     phone=local(data["phone"], ctx.svc.settings.default_region),
                     min=ctx.value("payment-min-sats"), max=ctx.value("payment-max-sats"))

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        amount = typed_sats(ctx, token)
        if isinstance(amount, Retry):
            return amount
        group = _group(ctx, data)
        if ctx.final and group is not None and group.holds < amount:
            return Retry(ctx.t("chama.short", group=group.name, amount=group.holds))
        return Push("pin", {"action": "chama-propose", "chama": data["chama"], "phone": data["phone"],
                            "amount": amount})


class Pending:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        waiting = proposals.pending_for(ctx.svc.db, ctx.user.id, data["chama"])
        if not waiting:
            return ctx.t("chama.pending-none")
        return _fitted(ctx, "chama.pending", [ctx.t("chama.pending-line", n=n, amount=p.amount,
                                                    phone=label(ctx, p.to_kind, p.to_phone, p.amount_kes))
                                              for n, p in enumerate(waiting[:5], 1)])

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        waiting = {p.id: p for p in proposals.pending_for(ctx.svc.db, ctx.user.id, data["chama"])}
        proposal_id = _pick(ctx, token, "p", lambda: list(waiting)[:5])
        if proposal_id is None:
            return Retry(ctx.t("error.option"))
        if proposal_id not in waiting:
            return Retry(ctx.t("chama.vote.closed"))
        found = waiting[proposal_id]
        return Push("chama.vote", {"chama": data["chama"], "proposal": found.id, "group": found.group,
                                   "amount": found.amount, "phone": found.to_phone, "by": found.proposer_phone,
                                   "kind": found.to_kind, "kes": found.amount_kes})


class Vote:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        region = ctx.svc.settings.default_region
        return ctx.t("chama.vote", group=data["group"], amount=data["amount"], phone=_payee(ctx, data),
                     by=local(data["by"], region))

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        if token not in ("1", "2"):
            return Retry(ctx.t("error.option"))
        return Push("pin", {**data, "action": "chama-vote", "yes": token == "1"})


def _payee(ctx: Ctx, data: dict) -> str:
    return label(ctx, data.get("kind", TO_WALLET), data["phone"], data.get("kes"))


def statement_lines(ctx: Ctx, chama_id: int, lang: str) -> tuple[int, list[str]]:
    holds, members = groups.statement(ctx.svc.db, chama_id)
    region = ctx.svc.settings.default_region
    return holds, [t(lang, "chama.member-line", phone=local(m.phone, region), amount=m.contributed) for m in members]


class Statement:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        group = _group(ctx, data)
        holds, lines = statement_lines(ctx, data["chama"], ctx.lang)
        return _fitted(ctx, "chama.statement", lines, group=group.name if group else "", amount=holds,
                       pct=group.leave_refund_pct if group else 0)

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        if token != "1":
            return Retry(ctx.t("error.option"))
        if not ctx.final:
            return expired(ctx)
        group = _group(ctx, data)
        if group is None:
            return End(ctx.t("chama.refused.not-member"))
        holds, lines = statement_lines(ctx, group.id, ctx.lang)
        with ctx.svc.db.write() as s:
            sms.queue(s, ctx.user.phone, _fitted(ctx, "sms.chama-statement", lines, group=group.name, amount=holds,
                                                 pct=group.leave_refund_pct))
        return End(ctx.t("chama.statement-sent"))


class Invite(GroupPhone):
    """The invitee's number: invited when it is the last token."""

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        typed = super().handle(ctx, data, token)
        if not isinstance(typed, Push):
            return typed
        phone = typed.data["phone"]
        if not ctx.final:
            return expired(ctx)
        group = _group(ctx, data)
        try:
            groups.invite(ctx.svc.db, ctx.svc.policy, ctx.user, data["chama"], phone, ctx.svc.service_code)
        except ChamaRefused as exc:
            return End(_refused(ctx, exc))
        return End(ctx.t("chama.invited", phone=local(phone, ctx.svc.settings.default_region),
                         group=group.name if group else "", code=ctx.svc.service_code))


class Leave:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        group = _group(ctx, data)
        return ctx.t("chama.leave", group=group.name if group else "",
                     amount=groups.leave_refund(ctx.svc.db, ctx.user.id, data["chama"]))

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        if token != "1":
            return Retry(ctx.t("error.option"))
        return Push("pin", {"action": "chama-leave", "chama": data["chama"], "amount": 0})


class OfficialRole:
    secret = False
    roles = {"1": TREASURER, "2": SECRETARY, "3": MEMBER}

    def prompt(self, ctx: Ctx, data: dict) -> str:
        group = _group(ctx, data)
        return ctx.t("chama.official.role", phone=local(data["phone"], ctx.svc.settings.default_region),
                     group=group.name if group else "")

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        if token not in self.roles:
            return Retry(ctx.t("error.option"))
        if not ctx.final:
            return expired(ctx)
        group = _group(ctx, data)
        try:
            groups.appoint(ctx.svc.db, ctx.user, data["chama"], data["phone"], self.roles[token])
        except ChamaRefused as exc:
            return End(_refused(ctx, exc))
        return End(ctx.t("chama.appointed", phone=local(data["phone"], ctx.svc.settings.default_region),
                         group=group.name if group else ""))


CHAMA_SCREENS: dict[str, Screen] = {
    "chama": ChamaHome(), "chama.new.name": NewName(), "chama.new.rule": NewRule(), "chama.new.leave": NewLeaveRule(),
    "chama.invitation": Invitation(),
    "chama.group": GroupMenu(), "chama.contribute": Contribute(),
    "chama.propose.phone": GroupPhone("chama.propose.phone", "chama.propose.amount"),
    "chama.propose.amount": PayoutAmount(), "chama.pending": Pending(), "chama.vote": Vote(),
    "chama.statement": Statement(), "chama.invite": Invite("chama.invite"), "chama.leave": Leave(),
    "chama.officials": GroupPhone("chama.officials", "chama.official.role"), "chama.official.role": OfficialRole(),
    **PAYOUT_SCREENS,
}


# ------------------------------------------------------------------ the PIN step's chama actions
def contribute(ctx: Ctx, data: dict, proof: PinProof | None) -> str:
    try:
        receipt = use_cases.chama_contribute(ctx.svc, ctx.user, proof, data["chama"], data["amount"], ctx.key)
    except InsufficientBalance as exc:
        return deny_text(ctx, "insufficient-balance", balance=exc.balance_sats)
    except PolicyDenied as exc:
        return deny_text(ctx, exc.reason)
    except ChamaRefused as exc:
        return _refused(ctx, exc)
    ctx.recorded = True
    if receipt.replay:
        return ctx.t("replay", ref=receipt.reference)
    group = _group(ctx, data)
    return ctx.t("chama.contributed", amount=receipt.amount_sats, group=group.name if group else "",
                 ref=receipt.reference, balance=receipt.balance_sats)


def propose(ctx: Ctx, data: dict, proof: PinProof | None) -> str:
    group = _group(ctx, data)
    try:
        use_cases.chama_propose(ctx.svc, ctx.user, proof, data["chama"], data["amount"], data["phone"])
    except PolicyDenied as exc:
        if exc.reason == "chama-balance" and group is not None:
            return ctx.t("chama.short", group=group.name, amount=group.holds)
        return deny_text(ctx, exc.reason)
    except ChamaRefused as exc:
        return _refused(ctx, exc)
    return ctx.t("chama.proposed", amount=data["amount"], phone=local(data["phone"], ctx.svc.settings.default_region),
                 count=group.approvals_needed if group else 0, hours=ctx.value("chama-proposal-hours"))


_VOTE_TEXTS = {proposals.COUNTED: "chama.vote.counted", proposals.PAID: "chama.vote.paid",
               proposals.REJECTED: "chama.vote.rejected", proposals.FAILED: "chama.vote.failed",
               proposals.NOT_MEMBER: "chama.refused.not-member"}


def vote(ctx: Ctx, data: dict, proof: PinProof | None) -> str:
    try:
        outcome = use_cases.chama_vote(ctx.svc, ctx.user, proof, data["proposal"], data["yes"])
    except PriceUnavailable:  # it would have paid in KES: nothing counted, vote again later
        return ctx.t("chama.vote.no-price")
    key = _VOTE_TEXTS.get(outcome, "chama.vote.closed")
    if outcome == proposals.PAID and data.get("kind") in KES_KINDS:
        key = "chama.vote.sent"  # M-Pesa has it now; the proposer hears how it ended
    return ctx.t(key, group=data["group"], amount=data["amount"], phone=_payee(ctx, data))


def leave(ctx: Ctx, data: dict, proof: PinProof | None) -> str:
    group = _group(ctx, data)
    try:
        receipt = use_cases.chama_leave(ctx.svc, ctx.user, proof, data["chama"], ctx.key)
    except ChamaRefused as exc:
        return _refused(ctx, exc)
    if receipt.replay:
        return ctx.t("replay", ref=receipt.reference)
    return ctx.t("chama.left", group=group.name if group else "", amount=receipt.amount_sats,
                 balance=receipt.balance_sats)


CHAMA_ACTIONS: dict[str, Callable[[Ctx, dict, PinProof | None], str]] = {
    "chama-in": contribute, "chama-propose": propose, "chama-vote": vote, "chama-leave": leave,
    "chama-propose-kes": propose_kes,
}
