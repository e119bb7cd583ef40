"""Operator commands that end a payment no callback or status query can settle: `resolve` (any
payout, by its reference or the customer's), and the per-rail names runbooks already use
(resolve-payment, resolve-mpesa, resolve-airtime). Each acts once, audited in the same
transaction; added to the other commands by helpers/web/cli.py."""

from __future__ import annotations

import logging
import re

import click
from flask.cli import AppGroup

from helpers.infra.rail import Answer, Said
from helpers.wallet import operators
from helpers.wallet.mpesa import flows as mpesa_flows
from helpers.wallet.payouts import payments
from helpers.wallet.payouts import machine as payouts
from helpers.web.common import send_queued_sms, services
from models import AIRTIME_RAIL, LIGHTNING_RAIL, MPESA_B2B_RAIL, MPESA_B2C_RAIL, OPEN_PAYOUT

log = logging.getLogger("wallet")  # as the request log (README, Operations)
CLI = "cli"  # the audit log's name for whoever runs an operator command
_group = AppGroup("resolve-commands")  # its commands run in the app's context, as the others

@_group.command("resolve-payment")
@click.argument("reference")
@click.option("--outcome", type=click.Choice(["failed", "paid"]), required=True,
              help="what you established with the node's operator (the node is asked first and wins)")
@click.option("--reason", required=True, help="the support case: ticket and how it was established")
def resolve_payment(reference: str, outcome: str, reason: str) -> None:
    """End a pending Lightning payment out that the node cannot settle (it never heard of it):
    refund it (--outcome failed) or settle it (--outcome paid). See README, Operations."""
    svc = services()
    try:
        receipt, said = payments.resolve_by_operator(
            svc, reference.strip().upper(), outcome == "paid", reason,
            lambda s, done, said: operators.audit(s, CLI, "resolve-payment", reference.strip().upper(), reason,
                                                 f"{done} (the node said {said})"))
    except payments.CannotResolve as exc:
        raise click.ClickException(str(exc)) from exc
    log.warning("operator resolved payment %s as %s (node said %s): %s", receipt.reference, receipt.status,
                said, reason)
    click.echo(f"{receipt.reference}: {receipt.status} (the node said {said}); customer balance "
               f"{receipt.balance_sats} sats")

@_group.command("resolve-mpesa")
@click.argument("reference")
@click.option("--outcome", type=click.Choice(["failed", "paid"]), required=True,
              help="what M-Pesa's statement (the org portal) shows for this payout or business payment")
@click.option("--receipt", default="", help="the M-Pesa receipt, with --outcome paid")
@click.option("--reason", required=True, help="the support case: ticket and how it was established")
def resolve_mpesa(reference: str, outcome: str, receipt: str, reason: str) -> None:
    """End a pending M-Pesa payout or business payment (B2C, B2B) that no callback or status query
    can settle (Daraja never answered with its id): settle it with its receipt, or refund it.
    REFERENCE: the M-Pesa request's, or the one the customer was given (statement, SMS); a payout
    reserved without an M-Pesa request can only be refunded."""
    svc = services()
    reference = reference.strip().upper()
    orphan = next(iter(mpesa_flows.orphans(svc.db, limit=1, reference=reference)), None)
    if orphan is not None:  # reserved, and M-Pesa never asked: it can only be refunded
        if outcome == "paid":
            raise click.ClickException(f"{reference} has no M-Pesa request: M-Pesa was never asked to pay it. "
                                       "Use --outcome failed to refund it")
        if not mpesa_flows.void_orphan(svc.db, orphan.id, also=lambda s: operators.audit(
                s, CLI, "resolve-mpesa", reference, reason, "failed (no M-Pesa request)")):
            raise click.ClickException(f"{reference} was settled meanwhile; nothing changed")
        send_queued_sms(svc)
        click.echo(f"{reference}: failed (refunded; M-Pesa was never asked)")
        return
    payout = payouts.find(svc.db, reference)
    if payout is None or payout.rail not in (MPESA_B2C_RAIL, MPESA_B2B_RAIL) or payout.state not in OPEN_PAYOUT:
        raise click.ClickException(f"no pending M-Pesa payout with reference {reference!r}")
    receipt = receipt.strip().upper()
    if outcome == "paid" and not re.fullmatch(r"[A-Z0-9]{10}", receipt):
        raise click.ClickException("--outcome paid needs the 10-character M-Pesa --receipt")
    rail = svc.rail(payout.rail)
    if rail is None:
        raise click.ClickException(f"{reference} is a payout on {payout.rail}, which is turned off here")
    answer = Answer.paid(receipt=receipt, reason="operator") if outcome == "paid" else Answer.failed("operator")
    done = payouts.finish(svc.db, rail, payout.reference, answer, f"operator: {reason}"[:255],
                          also=lambda s: operators.audit(s, CLI, "resolve-mpesa", payout.reference, reason,
                                                         f"{outcome} {receipt}".strip()))
    if not done:
        raise click.ClickException(f"{payout.reference} was settled meanwhile; nothing changed")
    send_queued_sms(svc)
    click.echo(f"{payout.reference}: {outcome}")


def _resolve_payout(reference: str, paid: bool, reason: str, action: str, word: str, rail_name: str = "") -> None:
    svc = services()
    reference = reference.strip().upper()
    payout = payouts.find(svc.db, reference)
    if payout is None or payout.state not in OPEN_PAYOUT or (rail_name and payout.rail != rail_name):
        raise click.ClickException(f"no open {rail_name or 'payout'} with reference {reference!r}")
    rail = svc.rail(payout.rail)
    if rail is None:
        raise click.ClickException(f"{reference} is a payout on {payout.rail}, which is turned off here")
    if payout.rail == LIGHTNING_RAIL:  # the node is asked twice, a pending one keeps its hash: resolve-payment
        raise click.ClickException(f"{payout.reference} is a Lightning payment: use `flask resolve-payment "
                                   f"{payout.reference} --outcome paid|failed --reason ...`")
    if rail.books.receipt_is_mpesa_code:  # M-Pesa answers its status query later: its receipt is needed
        raise click.ClickException(f"{payout.reference} is an M-Pesa payout: use `flask resolve-mpesa "
                                   f"{payout.reference} --outcome paid --receipt ...` or `--outcome failed`")
    if payout.rail_key:  # the rail is asked first, and its own final word wins
        said = payouts.query(svc.db, rail, payout.reference)
        if said.reason == payouts.DONE:
            raise click.ClickException(f"{reference} was settled meanwhile; nothing changed")
        if said.reason == payouts.CLAIMED_ELSEWHERE:  # the worker is asking the rail right now
            raise click.ClickException(f"{reference} is being asked about by the worker; try again in a minute")
        if said.said is not Said.PENDING:
            raise click.ClickException(f"{payout.reference}: the rail itself says {said.said.value} "
                                       f"({said.reason}); that was applied, nothing else changed")
    answer = Answer.paid(reason="operator") if paid else Answer.failed("operator")
    if not payouts.finish(svc.db, rail, payout.reference, answer, f"operator: {reason}"[:255],
                          also=lambda s: operators.audit(s, CLI, action, payout.reference, reason, word)):
        raise click.ClickException(f"{reference} was settled meanwhile; nothing changed")
    send_queued_sms(svc)
    click.echo(f"{payout.reference}: {word}")


@_group.command("resolve")
@click.argument("reference")
@click.option("--outcome", type=click.Choice(["failed", "paid"]), required=True,
              help="what the rail's own dashboard shows for this payout")
@click.option("--reason", required=True, help="the support case: ticket and how it was established")
def resolve(reference: str, outcome: str, reason: str) -> None:
    """End an open payout (any rail; its reference or the customer's) that no callback or status
    query can settle: post it (paid), or void it and give the sats back (failed). Audited."""
    _resolve_payout(reference, outcome == "paid", reason, "resolve", outcome)


@_group.command("resolve-airtime")
@click.argument("reference")
@click.option("--outcome", type=click.Choice(["failed", "delivered"]), required=True,
              help="what Africa's Talking's dashboard (Airtime > Transactions) shows for this purchase")
@click.option("--reason", required=True, help="the support case: ticket and how it was established")
def resolve_airtime(reference: str, outcome: str, reason: str) -> None:
    """End a pending airtime purchase that no callback or status query can settle (Africa's
    Talking never answered the send with a requestId): settle it, or refund it. (`resolve` does
    this for any payout; this name stays for runbooks that use it.)"""
    _resolve_payout(reference, outcome == "delivered", reason, "resolve-airtime", outcome, AIRTIME_RAIL)


COMMANDS = (resolve, resolve_payment, resolve_mpesa, resolve_airtime)
