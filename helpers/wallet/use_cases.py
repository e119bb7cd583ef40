"""What a customer can do, one function each: typed arguments in, a typed result or a typed
failure (helpers/wallet/errors.py) out. The USSD screens call these and turn the results into
text; nothing here knows a screen.

Money that leaves an account (send, Lightning payment, withdrawal, paying a request) needs a
`PinProof` from users.check_pin: `require_pin` is the one place that rule is enforced.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from helpers.lightning.lnurl_pay import PayParams
from helpers.infra.rail import Answer
from helpers.infra.refs import new_reference
from helpers.mpesa.rail import b2b_destination
from helpers.wallet import identity, prices
from helpers.infra import sms
from helpers.infra.i18n import t
from helpers.wallet.customers import limits, tiers, users
from helpers.wallet.chama import groups, proposals
from helpers.wallet.incoming import invoices
from helpers.wallet.ledger import movements
from helpers.wallet.mpesa import flows as mpesa_flows
from helpers.wallet.payouts import airtime, kes_out, payments
from helpers.wallet.chama.tables import TO_MPESA
from helpers.wallet.errors import (AirtimeOff, MpesaUnreachable, PolicyDenied, PriceUnavailable, QuoteExpired,
                                   RequestClosed, TopupNotConfirmed)
from helpers.wallet.prices import QuoteView
from helpers.wallet.savings import autosave, goals, orders
from helpers.wallet.services import Services
from helpers.wallet.ledger.movements import Receipt
from helpers.wallet.customers.users import PinProof, UserView
from models import AIRTIME_RAIL, MPESA_B2B_RAIL, MPESA_B2C_RAIL, PENDING


class PinNotChecked(RuntimeError):
    """A money use case was called without this user's PIN proof: a programming error."""


def require_pin(proof: PinProof | None, user: UserView) -> None:
    """The rule "the PIN is checked before any money moves out", in one place."""
    if proof is None or not proof.valid_for(user.id):
        raise PinNotChecked(f"user {user.id}: money moves out only after the PIN step")


# ------------------------------------------------------------------ money out (PIN first)
def send(svc: Services, user: UserView, proof: PinProof | None, phone: str, amount: int, key: str,
         within: movements.Within | None = None) -> Receipt:
    """Sats to another phone (registered or not), with `within`'s rows in its transaction. Raises
    InsufficientBalance, PolicyDenied, Interrupted."""
    require_pin(proof, user)
    try:
        return movements.transfer(svc.db, svc.policy, user, phone, amount, key, svc.service_code, within,
                                  svc.prices.for_limits())
    except PolicyDenied as exc:
        if exc.reason == tiers.RECIPIENT_FULL:
            notify_full(svc, user, phone, amount)
        raise


def pay_lightning(svc: Services, user: UserView, proof: PinProof | None, params: PayParams, amount: int,
                  key: str) -> payments.Payment:
    """Sats to a Lightning address. Raises LnurlPayError, InvoiceAlreadyPaid, InsufficientBalance,
    PolicyDenied (nothing reserved)."""
    require_pin(proof, user)
    return payments.pay_address(svc, user, params, amount, key)


@dataclass(frozen=True)
class Withdrawal:
    receipt: Receipt
    answer: Answer | None  # None: a replay, the first request paid out


def _check_quote(svc: Services, quote: QuoteView, user: UserView, kind: str, key: str) -> None:
    """A quote is used by the customer it was made for, for what it was made for, in time (a
    retry of a request that already moved money may come later: it answers as a replay)."""
    if quote.user_id != user.id or quote.kind != kind:
        raise QuoteExpired(quote.reference)  # not theirs: as good as none
    if not quote.valid() and movements.find_by_key(svc.db, key) is None:
        raise QuoteExpired(quote.reference)


def withdraw(svc: Services, user: UserView, proof: PinProof | None, quote: QuoteView, phone: str,
             key: str) -> Withdrawal:
    """KES to an M-Pesa number at a quote: its sats and fee are reserved, then the KES paid out.
    Raises QuoteExpired, MpesaUnreachable (not a number M-Pesa pays), InsufficientBalance,
    PolicyDenied (nothing reserved)."""
    require_pin(proof, user)
    _check_quote(svc, quote, user, prices.WITHDRAW, key)
    if not svc.mpesa.accepts_phone(phone):
        raise MpesaUnreachable(phone)
    return _pay_out(svc, user, quote, MPESA_B2C_RAIL, phone, phone, f"M-Pesa withdrawal KES {quote.kes}", key)


def _pay_out(svc: Services, user: UserView, quote: QuoteView, rail_name: str, destination: str, payee: str,
             description: str, key: str) -> Withdrawal:
    """A payout in KES on an M-Pesa rail at a quote: reserved with its payout row, then sent."""
    reference = new_reference()
    receipt = reserve_payout(svc, user, rail_name, quote.kes, quote.sats, quote.fee_sats, quote.kes_per_btc,
                             destination, payee, description, key, reference)
    if receipt.replay:
        return Withdrawal(receipt, None)
    return Withdrawal(receipt, kes_out.send(svc, rail_name, reference))


def reserve_payout(svc: Services, user: UserView, rail_name: str, kes: int, sats: int, fee: int, price: int,
                   destination: str, payee: str, description: str, key: str, reference: str | None = None
                   ) -> Receipt:
    """kes_out.reserve: callers check the PIN first."""
    return kes_out.reserve(svc, user, rail_name, kes, sats, fee, price, destination, payee, description, key,
                           reference)


def pay_request(svc: Services, user: UserView, proof: PinProof | None, request_id: int, payment_hash: str,
                key: str) -> Receipt:
    """Pay a payment request addressed to this user. The node is asked first: if the invoice behind
    it was paid by Lightning, it is credited now and the request is closed (RequestClosed), instead
    of being paid a second time. Raises RequestClosed, InsufficientBalance, PolicyDenied."""
    require_pin(proof, user)
    if invoices.sync(svc.db, svc.lightning, payment_hash) != PENDING:
        raise RequestClosed(request_id)
    return movements.pay_request(svc.db, svc.policy, user, request_id, key, svc.prices.for_limits())


# ------------------------------------------------------------------ money in
def check_room(svc: Services, user: UserView, amount: int) -> None:
    """Money in of `amount` sats that would lift the customer over their tier's balance cap is
    refused before it moves (PolicyDenied tiers.OVER_BALANCE). Money that came in anyway (an
    invoice paid late, a top-up M-Pesa confirmed) is credited: it is the customer's."""
    tiers.check_in(tiers.caps(svc.policy, user.tier, svc.prices.for_limits()), user.balance_sats, amount)


def notify_full(svc: Services, sender: UserView, phone: str, amount: int) -> None:
    """A send refused because the recipient's balance cap is reached: the recipient is told (at
    most once a day, so a sender cannot flood them) how to raise it."""
    if limits.allow(svc.db, svc.policy, ("cap-notices", phone)) is not None:
        return
    with svc.db.write() as s:
        recipient = users.get(s, phone)
        if recipient is None:
            return
        caps = tiers.caps(svc.policy, recipient.tier, svc.prices.for_limits())
        sms.queue(s, phone, t(recipient.language, "sms.recipient-full", phone=sender.phone, amount=amount,
                              cap_balance=caps.balance_kes, code=svc.service_code))


@dataclass(frozen=True)
class Issued:
    reference: str
    amount_sats: int
    expiry_s: int
    payer_phone: str | None


def issue_invoice(svc: Services, user: UserView, amount: int, payer_phone: str | None, key: str) -> Issued:
    """An invoice for `amount` sats: sent to the user by SMS (receive), or, with `payer_phone`, a
    payment request sent to that payer in their language. Raises RateLimited, LightningUnavailable,
    PolicyDenied (tiers.OVER_BALANCE: paid, it would lift the balance over the tier's cap)."""
    check_room(svc, user, amount)
    payer_language = "en"
    if payer_phone is not None:
        with svc.db.read() as s:
            payer = users.get(s, payer_phone)
            payer_language = payer.language if payer else svc.settings.default_language
    expiry = svc.settings.invoice_expiry_s
    issued = invoices.issue(svc.db, svc.policy, svc.lightning, user, amount, f"SatsPesa {user.phone[-4:]}",
                            expiry, key, payer_phone, payer_language, svc.service_code, svc.settings.rate_limits)
    return Issued(issued.reference, amount, expiry, payer_phone)


def top_up_with_code(svc: Services, user: UserView, quote: QuoteView, code: str, key: str) -> Receipt:
    """Credit a top-up the customer paid in M-Pesa, by its confirmation code, with the sats its
    quote promised. Raises QuoteExpired, TopupNotConfirmed (M-Pesa does not know it),
    CodeAlreadyUsed, PolicyDenied."""
    _check_quote(svc, quote, user, prices.TOPUP, key)
    if not svc.mpesa.confirm_topup(code, user.phone, quote.kes):
        raise TopupNotConfirmed(code)
    return movements.topup(svc.db, svc.policy, user, quote.kes, quote.sats, quote.kes_per_btc, code, key)


def top_up_by_push(svc: Services, user: UserView, quote: QuoteView, key: str) -> mpesa_flows.TopupStart:
    """Ask M-Pesa to prompt the user's own phone; the quote's sats are credited when M-Pesa
    confirms, however late. Raises QuoteExpired, PolicyDenied (the tier's balance cap: asked
    before the customer pays, as money that came in is always credited)."""
    _check_quote(svc, quote, user, prices.TOPUP, key)
    check_room(svc, user, quote.sats)
    return mpesa_flows.start_topup(svc.db, svc.mpesa, user, quote.kes, quote.sats, key)


def pay_business(svc: Services, user: UserView, proof: PinProof | None, quote: QuoteView, command: str,
                 party_b: str, account: str, payee: str, key: str) -> Withdrawal:
    """KES from the customer's sats to a till (BUY_GOODS) or a paybill (PAY_BILL, with `account`)
    at a quote: the sats and fee are reserved as a withdrawal is, then M-Pesa pays the business.
    `payee` is how statements and SMS name it. Raises QuoteExpired, InsufficientBalance,
    PolicyDenied (nothing reserved)."""
    require_pin(proof, user)
    _check_quote(svc, quote, user, prices.WITHDRAW, key)
    return _pay_out(svc, user, quote, MPESA_B2B_RAIL, b2b_destination(command, party_b, account, user.phone), payee,
                    f"M-Pesa payment KES {quote.kes} to {payee}", key)


def buy_airtime(svc: Services, user: UserView, proof: PinProof | None, quote: QuoteView, phone: str,
                key: str) -> airtime.Bought:
    """Airtime worth the quote's KES for `phone` (the caller's or another Kenyan number): the
    quote's sats and fee are reserved, then the airtime asked of the provider. Raises AirtimeOff,
    QuoteExpired, InsufficientBalance, PolicyDenied (nothing reserved)."""
    require_pin(proof, user)
    rail = svc.rail(AIRTIME_RAIL)
    if rail is None:
        raise AirtimeOff()
    _check_quote(svc, quote, user, prices.AIRTIME, key)
    receipt = airtime.reserve(svc.db, svc.policy, rail, user, phone, quote.kes, quote.sats, quote.fee_sats,
                              quote.kes_per_btc, key, svc.settings.default_region)
    if receipt.replay:
        return airtime.Bought(receipt, None)
    return airtime.Bought(receipt, airtime.buy(svc.db, rail, receipt))


# ------------------------------------------------------------------ identity (issue 34)
def verify_identity(svc: Services, user: UserView, proof: PinProof | None, id_number: str, names: str,
                    birth_date: dt.date) -> identity.Verified:
    """Tier 1 from the population registry, behind the PIN (a thief with the phone must not bind
    their own ID to it). Raises identity.IdRefused."""
    require_pin(proof, user)
    return identity.verify(svc, user, id_number, names, birth_date)


# ------------------------------------------------------------------ savings (issue 35)
def save_to_goal(svc: Services, user: UserView, proof: PinProof | None, goal_id: int, amount: int,
                 key: str) -> Receipt:
    """Sats from the balance into one of the customer's open goals, locked until its date. Behind
    the PIN: a phone in other hands could otherwise lock the owner's money away for years. Raises
    InsufficientBalance, GoalClosed, PolicyDenied."""
    require_pin(proof, user)
    return goals.move_in(svc.db, svc.policy, user, goal_id, amount, key)


def break_goal(svc: Services, user: UserView, proof: PinProof | None, goal_id: int, key: str) -> Receipt:
    """A goal's sats back before its date, less the policy's fee; the goal closes. Raises
    PolicyDenied (no early break), GoalClosed."""
    require_pin(proof, user)
    return goals.break_early(svc.db, svc.policy, user, goal_id, key)


def set_standing_order(svc: Services, user: UserView, proof: PinProof | None, kind: str, destination: str,
                       amount: int, period: str, key: str, unit: str = "sats", account: str | None = None
                       ) -> orders.OrderView:
    """A standing order of `amount` in `unit` (sats, or KES converted at each run's price): the PIN
    now is the customer's consent to the worker paying it each period without one (within
    standing-order-max-sats). Raises PolicyDenied."""
    require_pin(proof, user)
    return orders.create(svc.db, svc.policy, user, kind, destination, amount, period, key, unit, account,
                         svc.prices.for_limits())


def set_autosave(svc: Services, user: UserView, proof: PinProof | None, goal_id: int, percent: int) -> bool:
    """A goal takes `percent` of each receipt from now on (0: off); behind the PIN, as moving sats
    in is. False: not an open goal of this customer's. Raises PolicyDenied (autosave-max)."""
    require_pin(proof, user)
    return autosave.switch(svc.db, svc.policy, user, goal_id, percent)


# ------------------------------------------------------------------ chama (group) wallets, PIN first
def chama_contribute(svc: Services, user: UserView, proof: PinProof | None, chama_id: int, amount: int,
                     key: str) -> Receipt:
    """Sats from the member's balance into the group. Raises InsufficientBalance, PolicyDenied,
    ChamaRefused."""
    require_pin(proof, user)
    return groups.contribute(svc.db, svc.policy, user, chama_id, amount, key)


def chama_propose(svc: Services, user: UserView, proof: PinProof | None, chama_id: int, amount: int,
                  phone: str) -> int:
    """A payout from the group to a phone's wallet, paid when the group's rule of approvals is met.
    Raises PolicyDenied, ChamaRefused."""
    require_pin(proof, user)
    return proposals.propose(svc.db, svc.policy, user, chama_id, amount, phone)


def chama_propose_kes(svc: Services, user: UserView, proof: PinProof | None, chama_id: int, kind: str, kes: int,
                      to: str) -> tuple[int, int]:
    """A payout of `kes` from the group to M-Pesa (`to` a phone M-Pesa pays) or a till (`to` its
    number), paid when the rule is met: its sats and fee (a withdrawal's, atoms.metta) are quoted
    now at the current price, and again at the deciding vote, where the group pays the more of
    the two (proposals._repriced). Returns (proposal id, sats the group pays as quoted now).
    Raises PriceUnavailable, MpesaUnreachable, PolicyDenied (KES bounds, chama-balance),
    ChamaRefused."""
    require_pin(proof, user)
    decision = svc.policy.kes_range(kes)
    if not decision.allowed:
        raise PolicyDenied(decision.reason or "denied")
    if kind == TO_MPESA and not svc.mpesa.accepts_phone(to):
        raise MpesaUnreachable(to)
    price = svc.prices.current()
    if price is None:
        raise PriceUnavailable()
    sats = svc.policy.kes_to_sats_debit(kes, price.kes_per_btc)
    fee = svc.policy.fee_sats("mpesa-withdraw", sats)
    terms = proposals.InKes(kes, fee, price.kes_per_btc)
    return proposals.propose(svc.db, svc.policy, user, chama_id, sats, to, kind, terms), sats + fee


def chama_rails(svc: Services) -> proposals.Rails:
    """The M-Pesa rails that pay a group's KES payouts, as a customer's withdrawal and till are."""
    def key_for(rail_name: str, reference: str) -> str | None:
        return kes_out.rail_key_for(svc, rail_name, reference)

    def send(rail_name: str, reference: str) -> None:
        kes_out.send(svc, rail_name, reference)

    def price_now() -> int | None:
        price = svc.prices.current()
        return price.kes_per_btc if price is not None else None

    return proposals.Rails(svc.rail, key_for, send, price_now)


def chama_vote(svc: Services, user: UserView, proof: PinProof | None, proposal_id: int, yes: bool) -> str:
    """The member's vote on a proposal (the payout, when it meets the rule): proposals.vote's outcome."""
    require_pin(proof, user)
    return proposals.vote(svc.db, svc.policy, user.id, proposal_id, yes, rails=chama_rails(svc))


def chama_sms_reply(svc: Services, phone: str, text: str, message_id: str) -> str:
    """A member's vote by SMS reply (no PIN: the one-time code of their ballot stands for it)."""
    return proposals.sms_reply(svc.db, svc.policy, phone, text, message_id, chama_rails(svc))


def chama_leave(svc: Services, user: UserView, proof: PinProof | None, chama_id: int, key: str) -> Receipt:
    """Leave the group with what its rule gives back. Raises ChamaRefused."""
    require_pin(proof, user)
    return groups.leave(svc.db, user, chama_id, key)
