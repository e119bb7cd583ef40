"""Failures that callers handle. The USSD screens turn each into text; nothing here is text."""

from __future__ import annotations


class WalletError(Exception):
    """A request the wallet refuses; nothing was changed."""


class InsufficientBalance(WalletError):
    def __init__(self, balance_sats: int) -> None:
        super().__init__(f"balance {balance_sats}")
        self.balance_sats = balance_sats


class PolicyDenied(WalletError):
    """atoms.metta said (Deny <reason>)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CodeAlreadyUsed(WalletError):
    """This M-Pesa confirmation code has credited a top-up before."""


class TopupNotConfirmed(WalletError):
    """M-Pesa does not confirm a payment with this code, amount and phone."""


class RequestClosed(WalletError):
    """The payment request was paid, expired or is not this user's to pay."""


class InvoiceAlreadyPaid(WalletError):
    """A payment of this invoice (its payment hash) is pending or paid already: nothing reserved."""


class LightningUnavailable(WalletError):
    """The Lightning node could not do what we asked; nothing was reserved."""


class RateLimited(WalletError):
    """Too many of these in the policy's window; try later."""


class AccountLocked(WalletError):
    """The PIN lock was taken (by a wrong guess in a parallel session) after this request's PIN
    was read as right; the debit refused the locked account."""

    def __init__(self, minutes: int) -> None:
        super().__init__(f"locked for {minutes} min")
        self.minutes = minutes


class PriceUnavailable(WalletError):
    """No fresh price: an amount in KES cannot be converted now (sats operations go on)."""


class QuoteExpired(WalletError):
    """The quote a confirmation names has ended (or is not the caller's): quote again."""


class MpesaUnreachable(WalletError):
    """M-Pesa cannot pay this number (not Safaricom): checked before any sats are reserved."""


class AirtimeOff(WalletError):
    """This deployment sells no airtime (AIRTIME_PROVIDER=off)."""


class GoalClosed(WalletError):
    """A savings goal that is not open (matured, broken, not this customer's, or none): no sats
    move in or out of it."""
