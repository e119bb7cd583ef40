"""Operator commands: `flask <command>` (README, Operations). Each runs in the app's context and
does its work through the wallet's functions; what it changed is logged with the reason given."""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Callable
from typing import TypeVar

import click
from flask import Flask
from flask.cli import AppGroup

from helpers.infra.phone import mask, normalise
from helpers.ussd import sessions
from helpers.wallet import operators
from helpers.wallet.customers import limits, users
from helpers.wallet import demo
from helpers.wallet.incoming import invoices
from helpers.wallet.ledger import journal
from helpers.wallet.mpesa import flows as mpesa_flows
from helpers.wallet.reports import mpesa_float
from helpers.wallet.payouts import payments
from helpers.wallet.reports import books
from helpers.wallet.payouts import machine as payouts
from helpers.web import privacy_cli
from helpers.web.common import services
from helpers.web.aml_cli import aml
from helpers.web.resolve_cli import CLI, COMMANDS as RESOLVE_COMMANDS
from helpers.prices import feed
from models import MPESA_B2B_RAIL, MPESA_B2C_RAIL, PENDING, utcnow

log = logging.getLogger("wallet")  # as the request log (README, Operations)
T = TypeVar("T")
commands = AppGroup("wallet", help="Operator commands (also at the top level: flask <command>).")


def register(app: Flask) -> None:
    """Every operator command, at the top level of `flask` and under `flask wallet`."""
    for command in RESOLVE_COMMANDS:
        commands.add_command(command)
    app.cli.add_command(commands)
    for command in commands.commands.values():
        app.cli.add_command(command)
    app.cli.add_command(ledger)
    app.cli.add_command(price)
    app.cli.add_command(operator)
    app.cli.add_command(aml)
    app.cli.add_command(privacy_cli.customer)


@commands.command("db-upgrade")
def db_upgrade() -> None:
    """Apply the schema migrations (same as `alembic upgrade head`)."""
    services().db.migrate()
    click.echo("schema at head")

@commands.command("seed-demo")
def seed_demo() -> None:
    """Create the demo users if missing."""
    click.echo(f"demo users created: {demo.seed_demo(services().db)}")

@commands.command("ledger-check")
def ledger_check() -> None:
    """Check the books (same as `flask ledger check`); exit 1 on any difference."""
    _check_books()


def _check_books() -> None:
    """The journal (every entry sums to zero, every balance kept is the sum of its postings, no
    customer below zero, every pending entry posted or voided once at most) and every payment
    hash paid out against the node (settled once, and paid there); exit 1 on any difference."""
    svc = services()
    with svc.db.read() as s:
        problems = journal.check(s)
        summary = books.totals(s)
    for p in problems:
        click.echo(f"JOURNAL {p.what} {p.subject}: expected {p.expected}, found {p.found}")
    node = payments.compare_with_node(svc)
    for n in node:
        click.echo(f"NODE MISMATCH hash={n.payment_hash} refs={','.join(n.references)}: {n.problem}")
    click.echo(f"ledger check: {len(problems)} in the journal, {len(node)} against the node; "
               f"liabilities {summary['liabilities_sats']} sats")
    if problems or node:
        raise SystemExit(1)


ledger = AppGroup("ledger", help="The books: check, solvency, statements.")


@ledger.command("check")
def ledger_check_command() -> None:
    """Prove the books: see `flask ledger-check`."""
    _check_books()


@ledger.command("solvency")
@click.option("--json", "as_json", is_flag=True, help="one JSON object instead of the table")
@click.option("--query-float", is_flag=True, help="ask M-Pesa for the float first (Daraja's Account Balance)")
@click.option("--wait", default=30.0, show_default=True, help="seconds to wait for M-Pesa's answer")
def ledger_solvency(as_json: bool, query_float: bool, wait: float) -> None:
    """What we owe customers (and hold for payments in flight) against what we hold: the node's
    balance as the node reports it and the M-Pesa float as recorded, beside the float as M-Pesa
    last reported it."""
    svc = services()
    if query_float:
        _query_float(svc, wait)
    node = svc.lightning.balance()
    with svc.db.read() as s:
        found = books.solvency(s, node.balance_sat if node.ok else None)
    if as_json:
        click.echo(json.dumps(found.as_dict()))
        return
    coverage = "unknown (the node did not answer)" if found.coverage is None else f"{found.coverage:.2%}"
    rows = [("customers' balances", found.customers_sats), ("Lightning payments in flight",
            found.lightning_in_flight_sats), ("M-Pesa payouts in flight", found.mpesa_in_flight_sats),
            ("airtime in flight", found.airtime_in_flight_sats),
            ("liabilities", found.liabilities_sats), ("Lightning node (as it reports)", found.node_sats),
            ("M-Pesa float (as recorded)", found.float_sats), ("airtime float (as recorded)", found.airtime_float_sats),
            ("assets", found.assets_sats)]
    for label, sats in rows:
        click.echo(f"{label:<32} {'?' if sats is None else f'{sats:,}':>16} sats")
    click.echo(f"{'coverage':<32} {coverage:>16}")
    reading = found.float_reading
    if reading is None:
        click.echo("M-Pesa float (as M-Pesa reports): never asked (--query-float, with Daraja)")
    else:
        click.echo(f"{'M-Pesa float (as M-Pesa reports)':<32} {reading.available_kes:>16,} KES "
                   f"at {reading.at:%Y-%m-%d %H:%M} UTC")
        price = svc.prices.current()
        recorded = ("no price now" if price is None
                    else f"{svc.policy.sats_to_kes(found.float_sats, price.kes_per_btc):,}")
        click.echo(f"{'  recorded float, at the price now':<32} {recorded:>16} KES")


def _query_float(svc, wait: float) -> None:
    reference = mpesa_float.ask(svc.db, svc.mpesa)
    if reference is None:
        raise click.ClickException(f"M-Pesa ({svc.mpesa.name}) cannot be asked for the float")
    deadline = time.monotonic() + wait
    while mpesa_float.status_of(svc.db, reference) == PENDING:
        if time.monotonic() > deadline:
            raise click.ClickException(f"M-Pesa did not answer the float query {reference} within {wait:g} s "
                                       "(its answer is recorded when it comes)")
        time.sleep(0.25)


@ledger.command("statement")
@click.argument("phone")
@click.option("--out", type=click.File("w"), default="-", help="CSV file (default: standard output)")
def ledger_statement(phone: str, out) -> None:
    """A customer's journal postings as CSV, newest first (+ credit to them, - debit)."""
    svc = services()
    e164 = normalise(phone, svc.settings.default_region)
    with svc.db.read() as s:
        user = users.get(s, e164) if e164 else None
        if user is None:
            raise click.ClickException(f"no customer with phone {phone!r}")
        writer = csv.writer(out)
        writer.writerow(["date", "kind", "reference", "amount_sats", "counterparty", "pending", "memo"])
        for line in journal.statement(s, user.id):
            writer.writerow([f"{line.at:%Y-%m-%d %H:%M:%S}", line.kind, line.reference, line.amount,
                             line.counterparty or "", "yes" if line.pending else "", line.memo])


price = AppGroup("price", help="The BTC/KES price: what the sources say, and what is in use.")


@price.command("show")
@click.option("--ask/--no-ask", default=True, help="ask every source now (no: the stored price only)")
def price_show(ask: bool) -> None:
    """Each source's answer now, the median they agree on, and the price in use with its age."""
    svc = services()
    book = svc.prices
    if ask and book.sources:
        reference = feed.agree(feed.ask_all(book.sources, svc.settings.price_timeout_s, book.http),
                               svc.settings.price_min_sources, svc.settings.price_outlier_pct)
        for answer in reference.answers:
            said = (f"{answer.kes_per_btc:,.0f} KES/BTC" if answer.kes_per_btc is not None else answer.error)
            click.echo(f"{answer.source:<12} {said}{'  (dropped: outlier)' if answer.dropped else ''}")
        agreed = "too few sources agree" if reference.kes_per_btc is None else f"{reference.kes_per_btc:,} KES/BTC"
        click.echo(f"{'median':<12} {agreed}")
    elif not book.sources:
        click.echo("no PRICE_SOURCES: the fixed price of atoms.metta")
    stored = book.newest_row()
    if stored is not None:
        age = int((utcnow() - stored.created_at).total_seconds())
        click.echo(f"{'stored':<12} {stored.kes_per_btc:,} KES/BTC, {age} s old, from {stored.sources}")
    current = book.current()
    if current is None:
        click.echo(f"{'in use':<12} none: KES operations are stopped (no price younger than "
                   f"{svc.policy.value('price-max-age-s')} s)")
    else:
        click.echo(f"{'in use':<12} {current.kes_per_btc:,} KES/BTC ({current.source}, {current.age_s()} s old)")


@price.command("refresh")
def price_refresh() -> None:
    """Ask the sources now and store the price they agree on (the worker does this on its own)."""
    svc = services()
    if not svc.prices.sources:
        raise click.ClickException("no PRICE_SOURCES configured: the fixed price needs no refresh")
    reference = svc.prices.refresh()
    if reference.kes_per_btc is None:
        raise click.ClickException("too few sources agree; nothing stored:\n" + reference.describe())
    click.echo(f"stored {reference.kes_per_btc:,} KES/BTC from {', '.join(reference.used)}")


operator = AppGroup("operator", help="The people who sign in to the console at /admin.")




def _operator_action(action: Callable[[], T]) -> T:
    """Run an operator function; its refusal becomes the command's error (exit 1)."""
    try:
        return action()
    except operators.OperatorError as exc:
        raise click.ClickException(str(exc)) from None


def _show_enrolment(username: str, enrolment: operators.Enrolment) -> None:
    click.echo(f"second factor of {username} (shown once: add it to an authenticator app now):")
    click.echo(f"  {enrolment.uri}")
    click.echo(f"  secret {enrolment.secret}")


@operator.command("add")
@click.argument("username")
@click.password_option(help="at least 12 characters (asked twice when not given)")
def operator_add(username: str, password: str) -> None:
    """Create an operator of the console, with a second factor (TOTP) shown once."""
    name = username.strip().lower()
    enrolment = _operator_action(lambda: operators.add(services().db, name, password))
    click.echo(f"operator {name} created; sign in at /admin")
    _show_enrolment(name, enrolment)


@operator.command("totp")
@click.argument("username")
def operator_totp(username: str) -> None:
    """A new second factor (TOTP) for an operator, shown once; the old one stops working and every
    session of theirs ends."""
    name = username.strip().lower()
    _show_enrolment(name, _operator_action(lambda: operators.enrol_totp(services().db, CLI, name)))


@operator.command("password")
@click.argument("username")
@click.password_option(help="at least 12 characters (asked twice when not given)")
def operator_password(username: str, password: str) -> None:
    """Set an operator's password; every session of theirs ends."""
    name = username.strip().lower()
    _operator_action(lambda: operators.set_password(services().db, CLI, name, password))
    click.echo(f"password of {name} changed; their sessions are ended")


@operator.command("lock")
@click.argument("username")
@click.option("--reason", required=True, help="why: ticket, what happened")
def operator_lock(username: str, reason: str) -> None:
    """Lock an operator out of the console: no sign-in, every session ended at once."""
    name = username.strip().lower()
    _operator_action(lambda: operators.lock(services().db, CLI, name, reason))
    click.echo(f"operator {name} locked; their sessions are ended")


@operator.command("unlock")
@click.argument("username")
@click.option("--reason", required=True, help="why: ticket, what was checked")
def operator_unlock(username: str, reason: str) -> None:
    """Lift an operator's lock."""
    name = username.strip().lower()
    _operator_action(lambda: operators.unlock(services().db, CLI, name, reason))
    click.echo(f"operator {name} unlocked")


@operator.command("remove")
@click.argument("username")
@click.option("--reason", required=True, help="why: ticket, who asked")
def operator_remove(username: str, reason: str) -> None:
    """Delete an operator; every session of theirs ends."""
    name = username.strip().lower()
    _operator_action(lambda: operators.remove(services().db, CLI, name, reason))
    click.echo(f"operator {name} removed")


@commands.command("worker")
@click.option("--once", is_flag=True, help="do what is due now, then exit (for cron or a test)")
def worker_command(once: bool) -> None:
    """Run the background jobs (pending payments and invoices, M-Pesa queries, the SMS outbox,
    prices, cleanup) until SIGTERM. Any number may run, on any machine: each job is leased to one."""
    import signal
    import threading

    from helpers.web import worker

    svc = services()
    stop = threading.Event()
    if once:
        worker.ensure_periodic(svc)
        me = worker.worker_id()
        while claimed := worker.claim(svc, me):
            for job in claimed:
                worker.run_one(svc, job, me)
        return
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    worker.run(svc, stop)


@commands.command("flush-sms")
def flush_sms() -> None:
    """Send the SMS outbox now."""
    sent, failed = services().sms.flush()
    click.echo(f"sms sent={sent} failed={failed}")

@commands.command("poll-invoices")
def poll_invoices() -> None:
    """Ask the node about every pending invoice; credit paid ones, expire dead ones."""
    svc = services()
    click.echo(f"invoices: {invoices.poll_pending(svc.db, svc.lightning)}")

@commands.command("create-user")
@click.argument("phone")
@click.option("--language", type=click.Choice(["en", "sw"]), default="en", show_default=True)
def create_user(phone: str, language: str) -> None:
    """Register a customer (they create their PIN on their first dial)."""
    svc = services()
    e164 = normalise(phone, svc.settings.default_region)
    if e164 is None:
        raise click.ClickException(f"{phone!r} is not a valid mobile number")
    user = users.register(svc.db, e164, language, svc.service_code, also=lambda s: operators.audit(
        s, CLI, "create-user", e164, "registered from the command line", language))
    click.echo(f"user {user.id} {mask(e164)} ready")

@commands.command("credit")
@click.argument("phone")
@click.argument("sats", type=click.IntRange(min=1))
@click.option("--reason", required=True, help="the support case: ticket and why")
def credit(phone: str, sats: int, reason: str) -> None:
    """Credit a customer for a support case: an 'adjust' ledger row carrying the reason, and its
    audit line, in one transaction; the customer is told by SMS."""
    svc = services()
    e164 = normalise(phone, svc.settings.default_region)
    if e164 is None:
        raise click.ClickException(f"no customer with phone {phone!r}")
    balance = _operator_action(lambda: operators.adjust(svc.db, CLI, e164, sats, reason))
    click.echo(f"credited {sats} sats to {mask(e164)}; balance {balance}")

@commands.command("export-transactions")
@click.option("--out", type=click.File("w"), default="-", help="CSV file (default: standard output)")
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), default=None, help="from this day (UTC)")
def export_transactions(out, since) -> None:
    """All ledger rows as CSV, oldest first."""

    svc = services()
    writer = csv.writer(out)
    writer.writerow(["id", "created_at", "phone", "type", "direction", "amount_sats", "fee_sats", "status",
                     "reference", "counterparty", "mpesa_code", "payment_hash", "description"])
    with svc.db.read() as s:
        for row in books.export_rows(s, since):
            writer.writerow(row)

@commands.command("reconcile")
@click.option("--older-than-minutes", default=10, show_default=True)
@click.option("--mpesa-after-seconds", type=int, default=None,
              help="query M-Pesa requests pending longer than this (default MPESA_QUERY_AFTER_S)")
def reconcile(older_than_minutes: int, mpesa_after_seconds: int | None) -> None:
    """Settle what can be settled (invoices and Lightning payments out, by asking the node; M-Pesa
    pushes and payouts, by Daraja's status queries) and list the money movements still pending."""
    svc = services()
    click.echo(f"invoices: {invoices.poll_pending(svc.db, svc.lightning)}")
    click.echo(f"lightning payments out: {payments.reconcile(svc)}")
    if svc.mpesa.payouts_async or svc.mpesa.topup_by_push:
        after = svc.settings.mpesa_query_after_s if mpesa_after_seconds is None else mpesa_after_seconds
        every = 0 if mpesa_after_seconds is not None else svc.settings.mpesa_query_every_s
        click.echo(f"mpesa: {mpesa_flows.reconcile(svc.db, svc.mpesa, svc.rail, after, every)}")
        for req in mpesa_flows.pending(svc.db):
            click.echo(f"PENDING mpesa {req.kind} ref={req.reference} {req.amount_kes} KES {mask(req.phone)} "
                       f"queries={req.queries} since {req.created_at:%Y-%m-%d %H:%M}")
        for payout in payouts.pending(svc.db):
            if payout.rail in (MPESA_B2C_RAIL, MPESA_B2B_RAIL):
                kind = "b2c" if payout.rail == MPESA_B2C_RAIL else "b2b"
                phone = payout.destination if kind == "b2c" else payout.destination.rsplit("|", 1)[-1]
                click.echo(f"PENDING mpesa {kind} ref={payout.reference} {payout.amount_kes} KES {mask(phone)} "
                           f"queries={payout.queries} since {payout.created_at:%Y-%m-%d %H:%M}")
    with svc.db.read() as s:
        stuck = books.pending_older_than(s, older_than_minutes)
    for row in stuck:
        click.echo(f"PENDING {row.type} ref={row.reference} id={row.id} {row.amount_sats}+{row.fee_sats} sats "
                   f"since {row.created_at:%Y-%m-%d %H:%M}")
    click.echo(f"pending money movements older than {older_than_minutes} min: {len(stuck)}")

@commands.command("reset-pin")
@click.argument("phone")
@click.option("--reason", required=True, help="ticket number and how the identity was verified")
def reset_pin(phone: str, reason: str) -> None:
    """Clear a customer's PIN after verifying their identity out of band (see SECURITY.md)."""
    e164 = normalise(phone, services().settings.default_region)
    if e164 is None:
        raise click.ClickException(f"no customer with phone {phone!r}")
    _operator_action(lambda: operators.reset_pin(services().db, CLI, e164, reason))
    log.warning("PIN reset for %s by operator: %s", mask(e164), reason)
    click.echo(f"PIN cleared for {mask(e164)}; they will create a new one on their next dial")

@commands.command("clean-sessions")
@click.option("--keep-days", default=30, show_default=True, help="delete sessions older than this")
def clean_sessions(keep_days: int) -> None:
    """Close expired USSD sessions and delete old ones."""
    svc = services()
    closed, deleted = sessions.clean(svc.db, svc.settings.ussd_session_timeout_s, keep_days)
    counters = limits.clean(svc.db)
    click.echo(f"sessions closed={closed} deleted={deleted}; rate counters deleted={counters}")
