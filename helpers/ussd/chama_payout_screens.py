"""A group's payout proposed in KES, to M-Pesa (a phone) or a till (Buy Goods): where to, the KES,
then the PIN step (`propose_kes`), which fixes the sats at the current price. The group's rule of
approvals then pays it through the M-Pesa rails (helpers/wallet/chama/proposals.py)."""

from __future__ import annotations

import re

from helpers.infra.phone import local, normalise
from helpers.ussd.screen import Ctx, deny_text, parse_amount
from helpers.ussd.walker import Push, Result, Retry, Screen
from helpers.wallet import use_cases
from helpers.wallet.chama import groups, proposals
from helpers.wallet.chama.groups import ChamaRefused
from helpers.wallet.chama.tables import TO_MPESA, TO_TILL
from helpers.wallet.customers.users import PinProof
from helpers.wallet.errors import MpesaUnreachable, PolicyDenied, PriceUnavailable

_TILL = re.compile(r"[0-9]{5,7}")  # tills are 5-7 digits, as a customer's own till payment


def _group_name(ctx: Ctx, data: dict) -> str:
    group = groups.get(ctx.svc.db, ctx.user.id, data["chama"])
    return group.name if group else ""


def label(ctx: Ctx, kind: str, to: str, kes: int | None) -> str:
    """A proposal's payee as the screens show it (phones in local form), with its KES if any."""
    return proposals.payee_label(kind, to, kes, lambda phone: local(phone, ctx.svc.settings.default_region))


def payee(ctx: Ctx, kind: str, to: str) -> str:
    """"M-Pesa 0712345678" or "Till 123456"."""
    return label(ctx, kind, to, None).split(" (")[0]


class ProposeKind:
    secret = False
    targets = {"1": "chama.propose.phone", "2": "chama.propose.mpesa", "3": "chama.propose.till"}

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t("chama.propose.kind", group=_group_name(ctx, data))

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        if token not in self.targets:
            return Retry(ctx.t("error.option"))
        return Push(self.targets[token], {"chama": data["chama"]})


class KesPayee:
    """An M-Pesa phone or a till number, then the KES."""

    secret = False

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t(f"chama.propose.{self.kind}", group=_group_name(ctx, data))

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        if self.kind == TO_TILL:
            if not _TILL.fullmatch(token):
                return Retry(ctx.t("error.shortcode"))
            to: str | None = token
        else:
            to = normalise(token, ctx.svc.settings.default_region)
            if to is None:
                return Retry(ctx.t("error.phone"))
        return Push("chama.propose.kes", {"chama": data["chama"], "kind": self.kind, "to": to})


class KesAmount:
    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        low, high = ctx.svc.policy.kes_bounds()
        return ctx.t("chama.propose.kes", to=payee(ctx, data["kind"], data["to"]), group=_group_name(ctx, data),
                     min=low, max=high)

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        kes = parse_amount(token)
        if kes is None:
            return Retry(ctx.t("error.amount"))
        decision = ctx.svc.policy.kes_range(kes)
        if not decision.allowed:
            return Retry(deny_text(ctx, decision.reason or "", "KES", bounds=ctx.svc.policy.kes_bounds()))
        return Push("pin", {**data, "action": "chama-propose-kes", "kes": kes, "amount": 0})


def propose_kes(ctx: Ctx, data: dict, proof: PinProof | None) -> str:
    """The PIN step's action: the proposal, its sats fixed at the current price."""
    group = groups.get(ctx.svc.db, ctx.user.id, data["chama"])
    try:
        _proposal, sats = use_cases.chama_propose_kes(ctx.svc, ctx.user, proof, data["chama"], data["kind"],
                                                      data["kes"], data["to"])
    except PriceUnavailable:
        return ctx.t("price.unavailable")
    except MpesaUnreachable:
        return ctx.t("error.mpesa-phone")
    except PolicyDenied as exc:
        if exc.reason == "chama-balance" and group is not None:
            return ctx.t("chama.short", group=group.name, amount=group.holds)
        return deny_text(ctx, exc.reason, "KES", bounds=ctx.svc.policy.kes_bounds())
    except ChamaRefused as exc:
        return ctx.t(f"chama.refused.{exc.reason}")
    return ctx.t("chama.proposed-kes", kes=data["kes"], to=payee(ctx, data["kind"], data["to"]),
                 amount=sats, count=group.approvals_needed if group else 0, hours=ctx.value("chama-proposal-hours"))


PAYOUT_SCREENS: dict[str, Screen] = {"chama.propose.kind": ProposeKind(), "chama.propose.mpesa": KesPayee(TO_MPESA),
                  "chama.propose.till": KesPayee(TO_TILL), "chama.propose.kes": KesAmount()}
