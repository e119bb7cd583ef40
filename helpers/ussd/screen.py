"""What every screen works with: the request, its context (`Ctx`), and the shared parsing and
refusal texts. A screen has `secret` (its token is a PIN: never logged), `prompt(ctx, data)`
and `handle(ctx, data, token)`, which returns one of the walker's results."""

from __future__ import annotations

import datetime as dt

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from helpers.infra.i18n import CATALOGS, gsm7_length, receipt_text, t
from helpers.infra.refs import idempotency_key
from helpers.infra.text import parse_digits
from helpers.lightning.lnurl_pay import PayParams
from helpers.ussd import sessions
from helpers.ussd.walker import MAX_SCREEN, End, Result, Retry
from helpers.wallet.incoming import invoices
from helpers.wallet.customers import tiers
from helpers.wallet.errors import PolicyDenied
from helpers.wallet.ledger import movements
from helpers.wallet.ledger.movements import Receipt
from helpers.wallet.services import Services
from helpers.wallet.customers.users import UserView

MAX_AMOUNT_DIGITS = 12  # beyond this it is not an amount (and would overflow the policy engine)


@dataclass
class UssdRequest:
    session_id: str
    phone: str  # E.164
    service_code: str
    text: str


@dataclass
class Ctx:
    svc: Services
    req: UssdRequest
    user: UserView
    key: str  # idempotency key of this request's path
    choices: dict[str, Any]  # what earlier tokens of this session resolved to (session row)
    final: bool = False
    position: int = 0  # index of the token being handled in the whole path
    open_requests: int | None = None  # open payment requests to the caller (None: not read yet)
    # The actions of DEBIT_FIRST set this once they hold a receipt: a movement under `key` is
    # recorded (by this request, or by the earlier one it replays).
    recorded: bool = False
    acting: bool = False  # this request marked its session acting (sessions.begin_acting)
    saved: bool = False  # this request's END is saved already, with its money (sessions.acted_in)
    sent_out: tuple[int, int] | None = None  # (today, this month) sent by the caller, once read
    walked: list[str] = field(default_factory=list)  # the session row's trail so far, as the walk goes
    dialled: bool = False  # the first request of its session: the path came in the dialled code
    started_at: dt.datetime | None = None  # when the session began (a SIM answer after it is fresh)
    guard_row: Any = None  # the phone's SIM-swap row (sim_swap.Guard) when this request read it already

    def at(self, position: int, final: bool) -> None:
        self.position, self.final = position, final

    @property
    def lang(self) -> str:
        return self.user.language if self.user.language in CATALOGS else "en"

    def t(self, key: str, **values: Any) -> str:
        return t(self.lang, key, **values)

    def caps(self) -> tiers.Caps:
        """The caller's tier caps at the price for limits (customers/tiers.py)."""
        return tiers.caps(self.svc.policy, self.user.tier, self.svc.prices.for_limits())

    def receipt(self, key: str, receipt: Receipt, **values: Any) -> str:
        """A money-out END (`key`) that also says what is left of today's limit after `receipt`."""
        return receipt_text(self.lang, key, receipt.left_today, **values)

    def value(self, name: str) -> int:
        return self.svc.policy.value(name)

    def path_tag(self) -> int:
        """A number that stands for this session and the path up to the token being handled
        (keyed: the path holds PINs). What a token earned (an old PIN checked and right) is kept
        under it, so it holds for that exact path only, never another path or session."""
        prefix = "*".join(self.req.text.split("*")[: self.position + 1])
        return int(idempotency_key(self.req.session_id, prefix, "verified:" + self.svc.pepper)[:12], 16)

    def requests_open(self) -> int:
        """How many open payment requests the main menu announces (read with the step, or now)."""
        if self.open_requests is None:
            self.open_requests = invoices.count_open_requests(self.svc.db, self.user.phone)
        return self.open_requests


def parse_amount(token: str) -> int | None:
    token = token.strip()
    amount = parse_digits(token, MAX_AMOUNT_DIGITS)
    return amount if amount else None


def typed_sats(ctx: Ctx, token: str) -> int | Retry:
    """An amount of sats typed on an amount screen, within the policy's payment bounds, or the
    re-prompt that says what is wrong with it."""
    amount = parse_amount(token)
    if amount is None:
        return Retry(ctx.t("error.amount"))
    decision = ctx.svc.policy.amount(amount)
    return amount if decision.allowed else Retry(deny_text(ctx, decision.reason or ""))


def deny_text(ctx: Ctx, reason: str, unit: str = "sats", balance: int | None = None,
              bounds: tuple[int, int] | None = None) -> str:
    """The refusal's message; `bounds` are the (min, max) to quote instead of the policy's."""
    key = f"deny.{reason}"
    if key not in CATALOGS["en"]:
        key = "error.option"
    low, high = bounds or (ctx.value("payment-min-sats"), ctx.value("payment-max-sats"))
    return ctx.t(
        key,
        min=low,
        max=high,
        unit=unit,
        balance=ctx.user.balance_sats if balance is None else balance,
        limit=ctx.value("daily-send-limit-sats"),
        **tier_values(ctx),
    )


def tier_values(ctx: Ctx) -> dict[str, Any]:
    """The caller's tier caps in KES, and how to raise them (nothing at the top tier), for the
    messages that name them."""
    limits = tiers.caps(ctx.svc.policy, ctx.user.tier, ctx.svc.policy.value("fixed-kes-per-btc"))  # KES only
    top = ctx.user.tier >= ctx.value("top-tier")
    return {"cap_payment": limits.payment_kes, "cap_day": limits.day_kes, "cap_month": limits.month_kes,
            "cap_balance": limits.balance_kes,
            "how": "" if top else ctx.t("tier.how" if ctx.user.tier < tiers.ID_CHECKED else "tier.how-documents")}


def sats_range(ctx: Ctx) -> dict[str, int]:
    return {"min": ctx.value("payment-min-sats"), "max": ctx.value("payment-max-sats")}




def payee_bounds(ctx: Ctx, params: PayParams) -> tuple[int, int]:
    """What the payee accepts, within what we allow (for the prompt)."""
    return (max(params.min_sats, ctx.value("payment-min-sats")), min(params.max_sats, ctx.value("payment-max-sats")))


def sent_today(ctx: Ctx) -> int:
    """What the caller sent today (and, kept for tier_problem, this month): one read per request."""
    if ctx.sent_out is None:
        ctx.sent_out = movements.out_facts(ctx.svc.db, ctx.user.id)
    return ctx.sent_out[0]


def tier_problem(ctx: Ctx, amount: int, kes: int = 0) -> End | None:
    """Money out of `amount` sats (a payout of `kes`, if in KES) past the caller's tier caps: an
    END that says which cap and how to raise it (nothing typed now would pass it; the money step
    checks again under the lock). Only for the screen shown now (the last token)."""
    if not ctx.final:
        return None
    sent_today(ctx)
    today, month = ctx.sent_out or (0, 0)
    try:
        checked = tiers.payout_counted(ctx.svc.policy, ctx.svc.prices.for_limits(), kes, amount)
        tiers.check_out(ctx.caps(), checked, today, month)
    except PolicyDenied as exc:
        return End(deny_text(ctx, exc.reason))
    return None


def check_spend(ctx: Ctx, amount: int, fee: int) -> Result | None:
    """Pre-check a spend for a friendly re-prompt (or, past a tier cap, an END); the money step
    checks again atomically. Balance and limits are only looked up for the last token (the screen
    shown now)."""
    policy = ctx.svc.policy
    if not ctx.final:
        decision = policy.amount(amount)
    else:
        decision = policy.spend(amount, fee, ctx.user.balance_sats, sent_today(ctx))
    if not decision.allowed:
        return Retry(deny_text(ctx, decision.reason or ""))
    return tier_problem(ctx, amount)


def recent_screen(ctx: Ctx, key: str, shown: list[str], **values: str) -> str:
    """Catalog message `key` with the last payees as numbered lines (`{lines}`), as many as fit
    one screen (the oldest goes first); `shown`: each payee as the screen writes it."""
    lines = [ctx.t("send.recent-line", n=n, payee=payee) for n, payee in enumerate(shown, 1)]
    while len(lines) > 1 and (gsm7_length(ctx.t(key, lines="".join(lines), **values)) or MAX_SCREEN + 1) > MAX_SCREEN:
        lines.pop()
    return ctx.t(key, lines="".join(lines), **values)


def pick_recent(ctx: Ctx, token: str, kind: str, recent: Callable[[], list[str]]) -> str | Result | None:
    """`token` 1-3 on a screen that lists the customer's last payees: the one it picks (chosen
    once, when typed, and kept in the session, so a replay or a changed list means the same
    payee), the screen to show for a number beyond the list, or None when it is not a pick."""
    if token not in ("1", "2", "3"):
        return None
    slot = f"{kind}{ctx.position}"
    if slot not in ctx.choices:
        listed = recent()
        if int(token) > len(listed):
            return Retry(ctx.t("error.option"))
        ctx.choices[slot] = listed[int(token) - 1]
    return str(ctx.choices[slot])


def begin_acting(ctx: Ctx) -> End | None:
    """Mark this session acting before its step moves or starts money (sessions.begin_acting).
    None: act. Else the END to answer: the session was continued in another one meanwhile (only
    that one may act), or another request of this one is acting (what it recorded, if anything)."""
    if not sessions.begin_acting(ctx.svc.db, ctx.req.session_id):
        return acting_refused(ctx)
    ctx.acting = True
    return None


def acting_refused(ctx: Ctx) -> End:
    """The END of a request that may not act: what another request of this session recorded under
    its key, if anything, else that the session is over."""
    moved = movements.find_by_key(ctx.svc.db, ctx.key)
    return End(ctx.t("replay", ref=moved.reference)) if moved is not None else expired(ctx)


def expired(ctx: Ctx) -> End:
    """A path that goes on past a step that acts: a finished session replayed with more input,
    or a dialled code (`*384*123*...#`) that carries the path beyond such a step."""
    if ctx.dialled:
        return End(ctx.t("error.dialled-past", code=ctx.svc.service_code))
    return End(ctx.t("error.expired"))
