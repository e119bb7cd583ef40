"""KES on the phone: the price a screen converts at, and the quote a confirm screen shows.

A quote is made when the customer types the KES amount (the last token of the request), kept in
the session (`choices`, under the amount's position) and in its row; every later step of the
session reads the same quote. The step that acts checks it first: expired, it is quoted again at
the price now and the screen shown again with the new numbers and a note saying so (a customer
never confirms numbers they did not see). No price: the screen says so and the session ends.
"""

from __future__ import annotations

from helpers.ussd.screen import Ctx, deny_text, expired, parse_amount, sent_today, tier_problem
from helpers.ussd.walker import End, Result, Retry
from helpers.wallet.ledger import movements
from helpers.wallet.prices import AIRTIME, WITHDRAW, CurrentPrice, QuoteView


def price_now(ctx: Ctx) -> CurrentPrice | None:
    return ctx.svc.prices.current()


def no_price(ctx: Ctx) -> End:
    return End(ctx.t("price.unavailable"))


def typed_kes(ctx: Ctx, token: str) -> tuple[int, CurrentPrice] | Result:
    """A KES amount typed as `token` and the price it converts at, or the screen to show (not
    an amount: asked again; no price: the session ends)."""
    kes = parse_amount(token)
    if kes is None:
        return Retry(ctx.t("error.amount"))
    price = price_now(ctx)
    if price is None:
        return no_price(ctx)
    return kes, price


def kes_bounds(ctx: Ctx) -> tuple[int, int]:
    """The KES a customer may type: atoms.metta's round numbers, whatever the price."""
    return ctx.svc.policy.kes_bounds()


def hold(ctx: Ctx, kind: str, kes: int) -> str | Result:
    """The session slot of this amount's quote (made now if the amount is the last token), or
    the screen to show instead."""
    slot = f"q{ctx.position}"
    held = ctx.choices.get(slot)
    if isinstance(held, dict) and held.get("k") == kind and held.get("kes") == kes:
        return slot
    if not ctx.final:
        return expired(ctx)  # quoted only when typed: a replay never makes a new quote
    price = price_now(ctx)
    if price is None:
        return no_price(ctx)
    ctx.choices[slot] = ctx.svc.prices.quote(ctx.user.id, kind, kes, price).to_choice()
    return slot


def quote_of(ctx: Ctx, slot: str) -> QuoteView:
    return QuoteView.from_choice(ctx.choices[slot])


def renewed(ctx: Ctx, slot: str) -> Result | None:
    """Before the step that acts: None to go on with the quote held, else the screen to show.
    An expired quote is replaced by one at the price now and the screen asks again, unless this
    very request already acted (a retry of it by Africa's Talking: the action answers it)."""
    quote = quote_of(ctx, slot)
    if quote.valid() or movements.find_by_key(ctx.svc.db, ctx.key) is not None:
        return None
    price = price_now(ctx)
    if price is None:
        return no_price(ctx)
    fresh = ctx.svc.prices.quote(ctx.user.id, quote.kind, quote.kes, price)
    ctx.choices[slot] = fresh.to_choice()
    return Retry(ctx.t("quote.renewed", kes=fresh.kes, sats=fresh.sats))


def valid_minutes(ctx: Ctx) -> int:
    """How long a quote holds, in whole minutes (rounded up), for the confirm screens."""
    return -(-ctx.value("quote-valid-s") // 60)


def payout_amount(ctx: Ctx, token: str, kind: str = WITHDRAW) -> tuple[int, str] | Result:
    """The KES typed for money that leaves in KES: through M-Pesa (WITHDRAW: a withdrawal, a till
    or a paybill) or as AIRTIME: (kes, its quote's slot), or the screen to show. That kind's rules
    in atoms.metta decide; balance and daily limit only for the screen shown now (the reservation
    checks again)."""
    typed = typed_kes(ctx, token)
    if not isinstance(typed, tuple):
        return typed
    kes, price = typed
    policy = ctx.svc.policy
    sent = sent_today(ctx) if ctx.final else 0
    balance = ctx.user.balance_sats if ctx.final else policy.value("payment-max-sats") * 2
    decide = policy.airtime if kind == AIRTIME else policy.withdraw
    decision = decide(kes, balance, sent, price.kes_per_btc)
    if not decision.allowed:
        kes_reason = decision.reason in ("below-minimum", "above-maximum")
        bounds = (policy.airtime_bounds() if kind == AIRTIME else kes_bounds(ctx)) if kes_reason else None
        return Retry(deny_text(ctx, decision.reason or "", "KES" if kes_reason else "sats", bounds=bounds))
    past_tier = tier_problem(ctx, policy.kes_to_sats_debit(kes, price.kes_per_btc), kes) if ctx.final else None
    if past_tier is not None:
        return past_tier
    slot = hold(ctx, kind, kes)
    return (kes, slot) if isinstance(slot, str) else slot
