"""The Flask app: Africa's Talking USSD webhook, health probe, demo helpers, operator commands.

Development: `python app.py` (port 5000, embedded defaults). Production:
`gunicorn "app:create_app()"` with MySQL, see README.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import parse_qsl

import click
from dotenv import load_dotenv
from flask import Flask, Response, current_app, jsonify, render_template, request, url_for
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from werkzeug.exceptions import HTTPException

from database import Database
from handlers import UssdRequest, handle_ussd
from helpers import (
    callers,
    invoices,
    limits,
    lnurl,
    metrics,
    mpesa_callbacks,
    mpesa_flows,
    payments,
    poller,
    sessions,
    sms,
    transactions,
    users,
    webhooks,
)
from helpers.config import finalise, load_config
from helpers.i18n import t
from helpers.mpesa import create_provider
from helpers.phone import mask, normalise
from helpers.rules import policy
from helpers.services import Services
from lightning import MockBackend, create_backend
from models import Invoice

log = logging.getLogger("wallet")

_CALLBACK_SEGMENT = re.compile(r"[A-Za-z0-9]{1,16}")  # kinds, events and our references
_MAX_TEXT = 1000  # longer than any real session can type in 180 s
_MAX_FIELD = 128


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app: defaults, then environment (and .env), then `test_config`."""
    load_dotenv()
    app = Flask(__name__, instance_relative_config=True)
    os.makedirs(app.instance_path, exist_ok=True)
    app.config.update(load_config(app.instance_path))
    if test_config:
        app.config.update(test_config)
    finalise(app.config)
    if not app.testing:
        _configure_logging(app.config["LOG_LEVEL"])

    db = Database(app.config["DATABASE_URL"], app.config["DB_POOL_SIZE"], app.config["DB_POOL_RECYCLE_S"],
                  app.config["DB_TIMEOUT_S"])
    if app.config["AUTO_CREATE_SCHEMA"]:
        _migrate(db)
    backend = create_backend(app.config)
    svc = Services(db, policy(), backend, create_provider(app.config),
                   sms.SmsDispatcher(db, sms.make_sender(app.config)), app.config)
    svc.openings = sessions.Openings(db, app.config["WRITE_BEHIND_S"])
    app.extensions["wallet"] = svc
    app.extensions["request_counter"] = limits.RequestCounter(db, app.config["WRITE_BEHIND_S"])
    svc.policy.warm_up()
    if app.config["DEMO_MODE"]:
        users.seed_demo(db)

    if app.config["TRUSTED_PROXY_COUNT"]:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=app.config["TRUSTED_PROXY_COUNT"])
    app.teardown_appcontext(db.remove_session)
    if app.config["INVOICE_POLL_S"] > 0:  # also asks M-Pesa about pending pushes and payouts
        app.before_request(lambda: poller.ensure_started(svc))
    _register_routes(app)
    _register_commands(app)
    return app


def services() -> Services:
    return current_app.extensions["wallet"]


def _configure_logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


def _migrate(db: Database) -> None:
    try:
        db.migrate()
    except OperationalError:  # another worker migrated at the same moment; now it is a no-op
        db.migrate()


def _plain(reply: str, status: int = 200) -> Response:
    return Response(reply, status=status, mimetype="text/plain")


def _unavailable_reply() -> str:
    return "END " + t("en", "error.unavailable") + "\n" + t("sw", "error.unavailable")


@dataclass
class _Step:
    reply: str
    outcome: str  # con, end, forbidden, invalid, limited, unavailable: a metric label
    status: int = 200
    screen: str = "-"
    session_id: str = ""
    phone: str = ""
    depth: int = 0


def _answer_ussd(svc: Services, token: str | None) -> _Step:
    if not callers.token_ok(svc.config["USSD_CALLBACK_TOKEN"], token, request.headers.get("X-Callback-Token")):
        log.warning("ussd refused: bad callback token from %s", request.remote_addr)
        return _Step("Forbidden", "forbidden", 403)
    if not callers.address_ok(svc.config["USSD_ALLOWED_NETWORKS"], request.remote_addr):
        log.warning("ussd refused: %s is not an allowed network", request.remote_addr)
        return _Step("Forbidden", "forbidden", 403)
    form = _form_fields()
    session_id = form.get("sessionId", "").strip()[:_MAX_FIELD]
    raw_phone = form.get("phoneNumber", "").strip()[:_MAX_FIELD]
    service_code = form.get("serviceCode", "").strip()[:32]
    text = form.get("text", "")
    lang = svc.config["DEFAULT_LANGUAGE"]
    if not session_id or not raw_phone:
        return _Step("END " + t(lang, "error.expired"), "invalid", session_id=session_id)
    phone = normalise(raw_phone, svc.config["DEFAULT_REGION"])
    if phone is None:
        return _Step("END " + t(lang, "error.phone"), "invalid", session_id=session_id)
    depth = text.count("*") + bool(text)
    if len(text) > _MAX_TEXT:
        return _Step("END " + t(lang, "error.expired"), "invalid", session_id=session_id, phone=phone, depth=depth)
    step = _Step("", "end", session_id=session_id, phone=phone, depth=depth)
    try:
        checks = (("requests-per-phone", phone), ("requests-per-source", request.remote_addr or "unknown"))
        counter = current_app.extensions["request_counter"]
        exceeded = counter.allow(svc.policy, *checks) if svc.config["RATE_LIMITS"] else None
        if exceeded:
            log.warning("ussd limit %s reached by %s / %s", exceeded, mask(phone), request.remote_addr)
            step.reply, step.outcome = "END " + t(lang, "error.too-many"), "limited"
        else:
            step.reply, step.screen = handle_ussd(svc, UssdRequest(session_id, phone, service_code, text))
            step.outcome = step.reply[:3].lower()
    except SQLAlchemyError as exc:
        log.error("database unavailable for /ussd: %s", type(exc).__name__)
        step.reply, step.outcome = _unavailable_reply(), "unavailable"
    finally:
        if sms.take_queued() and svc.config["SMS_AUTO_FLUSH"]:
            svc.sms.kick()
    return step


def _form_fields() -> Mapping[str, str]:
    """The POST's form fields. Africa's Talking posts them urlencoded: read here straight from the
    body (bounded by MAX_CONTENT_LENGTH), about half the cost of werkzeug's form parser, which
    builds a MultiDict through its stream wrappers and was ~6% of a worker's time under load.
    A repeated field keeps its first value, as MultiDict.get does; any other encoding (a
    multipart test post) goes through request.form."""
    if request.mimetype != "application/x-www-form-urlencoded":
        return request.form
    fields: dict[str, str] = {}
    for name, value in parse_qsl(request.get_data(cache=False).decode("utf-8", "replace"),
                                 keep_blank_values=True, errors="replace"):
        fields.setdefault(name, value)
    return fields


def _flush_written_behind(counter: limits.RequestCounter, svc: Services) -> None:
    """Write this worker's kept counts and session openings if their interval has passed, and
    checkpoint SQLite's log when due: here, between requests, outside the reply's time, rather
    than from a second thread that would hold the database's write lock while it waits for the
    GIL (helpers/writebehind.py)."""
    flushed = counter.flush_if_due()
    flushed = svc.openings.flush_if_due() or flushed
    flushed = svc.db.checkpoint_if_due() or flushed
    if flushed:
        svc.db.remove_session()  # the connection rests again, as at the end of a request


def _register_routes(app: Flask) -> None:
    @app.post("/ussd")
    @app.post("/ussd/<token>")
    def ussd(token: str | None = None) -> Response:
        """Africa's Talking's callback. One structured log line and one metric per request."""
        started = time.perf_counter()
        request_id = uuid.uuid4().hex[:12]
        step = _answer_ussd(services(), token)
        elapsed = time.perf_counter() - started
        metrics.observe(step.outcome, elapsed)
        log.info("ussd request_id=%s session=%s phone=%s depth=%d screen=%s outcome=%s status=%d ms=%.1f",
                 request_id, step.session_id[:16] or "-", mask(step.phone) if step.phone else "-", step.depth,
                 step.screen, step.outcome, step.status, elapsed * 1000)
        response = _plain(step.reply, step.status)
        response.headers["X-Request-Id"] = request_id
        # After the reply has gone out (the request's context is gone by then: pass what it needs).
        response.call_on_close(partial(_flush_written_behind, current_app.extensions["request_counter"], services()))
        return response

    @app.get("/.well-known/lnurlp/<name>")
    def lnurl_pay_request(name: str) -> tuple[Response, int]:
        """LUD-16: a user's Lightning address resolves here."""
        try:
            return jsonify(lnurl.pay_request(services(), name[:32])), 200
        except lnurl.LnurlError as exc:
            return jsonify({"status": "ERROR", "reason": str(exc)}), 404

    @app.get("/lnurlp/<name>/callback")
    def lnurl_callback(name: str) -> tuple[Response, int]:
        """LUD-06: the payer's wallet asks for an invoice of `amount` msat."""
        try:
            return jsonify(lnurl.invoice(services(), name[:32], request.args.get("amount"),
                                         request.remote_addr or "unknown")), 200
        except lnurl.LnurlError as exc:
            return jsonify({"status": "ERROR", "reason": str(exc)}), 200
        finally:
            if sms.take_queued() and services().config["SMS_AUTO_FLUSH"]:
                services().sms.kick()

    @app.post("/lightning/webhook/<token>")
    def lightning_webhook(token: str) -> tuple[Response, int]:
        """The node says an invoice changed. A hint only: the node is asked before any credit."""
        svc = services()
        expected = svc.config["LIGHTNING_WEBHOOK_TOKEN"]
        if not expected or not callers.token_ok(expected, token):
            log.warning("lightning webhook refused: bad token from %s", request.remote_addr)
            return jsonify({"error": "forbidden"}), 403
        secret = svc.config["BTCPAY_WEBHOOK_SECRET"]
        if (svc.lightning.name == "btcpay" or secret) and not webhooks.btcpay_signature_ok(
                secret, request.get_data(), request.headers.get("BTCPay-Sig", "")):
            log.warning("lightning webhook refused: bad BTCPay-Sig from %s%s", request.remote_addr,
                        "" if secret else " (BTCPAY_WEBHOOK_SECRET is not set)")
            return jsonify({"error": "bad signature"}), 403
        payment_hash = webhooks.payment_hash(request.get_data(as_text=True))
        if payment_hash is None:
            return jsonify({"error": "no payment hash"}), 400
        status = invoices.status_of(svc.db, payment_hash)
        if status is None:
            log.warning("lightning webhook for an unknown payment hash %s...", payment_hash[:12])
            return jsonify({"status": "unknown"}), 200
        if status == "pending":
            status = invoices.sync(svc.db, svc.lightning, payment_hash)
        if sms.take_queued() and svc.config["SMS_AUTO_FLUSH"]:
            svc.sms.kick()
        return jsonify({"status": status}), 200

    @app.post("/mpesa/<token>/<kind>/<reference>")
    @app.post("/mpesa/<token>/<kind>/<event>/<reference>")
    def mpesa_callback(token: str, kind: str, reference: str, event: str = "") -> tuple[Response, int]:
        """Daraja's callbacks: STK push results, B2C results and queue timeouts, Transaction Status
        results. No signature: the secret token in the URL (compared in constant time), then the
        request the reference names, whose ids, amount and phone the body must match."""
        svc = services()
        expected = svc.config["MPESA_CALLBACK_TOKEN"]
        if not svc.mpesa.payouts_async or not expected or not callers.token_ok(expected, token):
            log.warning("mpesa callback refused: bad token from %s", request.remote_addr)
            return jsonify({"ResultCode": 1, "ResultDesc": "forbidden"}), 403
        if not all(_CALLBACK_SEGMENT.fullmatch(part) for part in (kind, event or "x", reference)):
            log.warning("mpesa callback refused: malformed path from %s", request.remote_addr)
            return jsonify({"ResultCode": 1, "ResultDesc": "unknown callback"}), 404
        try:
            body = json.loads(request.get_data(as_text=True) or "null")
        except ValueError:
            body = None
        status, outcome = mpesa_callbacks.handle(svc.db, kind, event, reference, body)
        if sms.take_queued() and svc.config["SMS_AUTO_FLUSH"]:
            svc.sms.kick()
        return jsonify({"ResultCode": 0 if status == 200 else 1, "ResultDesc": outcome}), status

    @app.get("/metrics")
    def prometheus() -> Response:
        svc = services()
        if not callers.token_ok(svc.config["METRICS_TOKEN"], request.headers.get("Authorization", "")[7:]):
            return _plain("Forbidden", 403)
        try:
            text = metrics.render(svc.db.session, svc.lightning.name)
        except SQLAlchemyError:
            return _plain("database unavailable", 503)
        return Response(text, mimetype="text/plain; version=0.0.4")

    @app.get("/status")
    def status() -> tuple[Response, int]:
        svc = services()
        db_ok = svc.db.healthy()
        body: dict[str, Any] = {
            "status": "ok" if db_ok else "degraded",
            "database": {"ok": db_ok, "dialect": svc.db.engine.dialect.name},
            "lightning": svc.lightning.health(),
            "lightning_address_domain": lnurl.domain(svc.config),
            "mpesa": svc.mpesa.name,
            "sms_sender": svc.sms.sender.name,
        }
        if db_ok:
            try:
                s = svc.db.session
                body["active_sessions"] = sessions.active_count(s, svc.config["USSD_SESSION_TIMEOUT_S"])
                body["sms_queue"] = svc.sms.pending_count(s)
                body.update(transactions.totals(s))
            except SQLAlchemyError:
                body["status"], body["database"]["ok"] = "degraded", False
        return jsonify(body), 200 if body["database"]["ok"] else 503

    @app.get("/simulator")
    def simulator() -> Response | tuple[Response, int]:
        """A feature phone in the browser that talks to /ussd like Africa's Talking."""
        svc = services()
        if not svc.config["SIMULATOR_ENABLED"]:
            return jsonify({"error": "the simulator is off (SIMULATOR_ENABLED)"}), 404
        token = svc.config["USSD_CALLBACK_TOKEN"]
        ussd_url = url_for("ussd", token=token) if token else url_for("ussd")
        return Response(render_template(
            "simulator.html", ussd_url=ussd_url, ussd_path_shown="/ussd" + ("/<token>" if token else ""),
            service_code=svc.service_code,
            demo_phones=[phone for phone, _ in users.DEMO_USERS] if svc.config["DEMO_MODE"] else [],
        ), mimetype="text/html")

    @app.get("/test")
    def demo_info() -> tuple[Response, int]:
        svc = services()
        if not svc.config["DEMO_MODE"]:
            return jsonify({"error": "demo mode is off"}), 404
        phone = users.DEMO_USERS[0][0]
        user = users.get(svc.db.session, phone)
        return jsonify({
            "phone": phone,
            "balance_sats": user.balance_sats if user else None,
            "service_code": svc.service_code,
            "try": f"curl -d sessionId=demo1 -d phoneNumber={phone} -d text= http://localhost:5000/ussd",
        }), 200

    @app.post("/test/pay-invoice")
    def demo_pay_invoice() -> tuple[Response, int]:
        """Demo mode with the mock node: act as an outside payer of one of our invoices."""
        svc = services()
        if not svc.config["DEMO_MODE"] or not isinstance(svc.lightning, MockBackend):
            return jsonify({"error": "only in demo mode with the mock Lightning backend"}), 404
        reference = (request.values.get("reference") or "").strip().upper()[:16]
        invoice = svc.db.session.query(Invoice).filter_by(reference=reference).one_or_none()
        if invoice is None:
            return jsonify({"error": "unknown invoice reference"}), 404
        svc.lightning.simulate_payment(invoice.payment_hash)
        state = invoices.sync(svc.db, svc.lightning, invoice.payment_hash)
        if sms.take_queued() and svc.config["SMS_AUTO_FLUSH"]:
            svc.sms.kick()
        return jsonify({"reference": reference, "status": state}), 200

    @app.get("/test/invoice")
    def demo_invoice() -> tuple[Response, int]:
        """Demo mode: the BOLT11 of one of our invoices (what its owner got by SMS), so a script can
        pay it from an outside wallet on a real node."""
        svc = services()
        if not svc.config["DEMO_MODE"]:
            return jsonify({"error": "only in demo mode"}), 404
        reference = (request.values.get("reference") or "").strip().upper()[:16]
        invoice = svc.db.session.query(Invoice).filter_by(reference=reference).one_or_none()
        if invoice is None:
            return jsonify({"error": "unknown invoice reference"}), 404
        return jsonify({"reference": reference, "bolt11": invoice.bolt11, "status": invoice.status}), 200

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        return jsonify({"error": exc.name}), exc.code or 500

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.path)
        if request.path.startswith("/ussd"):
            return _plain(_unavailable_reply())
        return Response('{"error": "internal error"}', status=500, mimetype="application/json")


def _register_commands(app: Flask) -> None:
    @app.cli.command("db-upgrade")
    def db_upgrade() -> None:
        """Apply the schema migrations (same as `alembic upgrade head`)."""
        services().db.migrate()
        click.echo("schema at head")

    @app.cli.command("seed-demo")
    def seed_demo() -> None:
        """Create the demo users if missing."""
        click.echo(f"demo users created: {users.seed_demo(services().db)}")

    @app.cli.command("ledger-check")
    def ledger_check() -> None:
        """Check every balance against its transactions, and every payment hash the ledger paid out
        against the node (settled once, and paid there); exit 1 on any difference."""
        svc = services()
        with svc.db.read() as s:
            mismatches = transactions.ledger_check(s)
            summary = transactions.totals(s)
        for m in mismatches:
            click.echo(f"MISMATCH user={m.user_id} phone={mask(m.phone)} balance={m.balance_sats} "
                       f"ledger={m.ledger_sats}")
        node = payments.compare_with_node(svc)
        for n in node:
            click.echo(f"NODE MISMATCH hash={n.payment_hash} refs={','.join(n.references)}: {n.problem}")
        click.echo(f"ledger check: {len(mismatches)} mismatches, {len(node)} against the node; "
                   f"liabilities {summary['liabilities_sats']} sats")
        if mismatches or node:
            raise SystemExit(1)

    @app.cli.command("flush-sms")
    def flush_sms() -> None:
        """Send the SMS outbox now."""
        sent, failed = services().sms.flush()
        click.echo(f"sms sent={sent} failed={failed}")

    @app.cli.command("poll-invoices")
    def poll_invoices() -> None:
        """Ask the node about every pending invoice; credit paid ones, expire dead ones."""
        svc = services()
        click.echo(f"invoices: {invoices.poll_pending(svc.db, svc.lightning)}")

    @app.cli.command("create-user")
    @click.argument("phone")
    @click.option("--language", type=click.Choice(["en", "sw"]), default="en", show_default=True)
    def create_user(phone: str, language: str) -> None:
        """Register a customer (they create their PIN on their first dial)."""
        svc = services()
        e164 = normalise(phone, svc.config["DEFAULT_REGION"])
        if e164 is None:
            raise click.ClickException(f"{phone!r} is not a valid mobile number")
        user = users.register(svc.db, e164, language, svc.service_code)
        click.echo(f"user {user.id} {mask(e164)} ready")

    @app.cli.command("credit")
    @click.argument("phone")
    @click.argument("sats", type=click.IntRange(min=1))
    @click.option("--reason", required=True, help="the support case: ticket and why")
    def credit(phone: str, sats: int, reason: str) -> None:
        """Credit a customer for a support case: an 'adjust' ledger row carrying the reason."""
        svc = services()
        e164 = normalise(phone, svc.config["DEFAULT_REGION"])
        with svc.db.write() as s:
            user = users.get(s, e164) if e164 else None
            if user is None:
                raise click.ClickException(f"no customer with phone {phone!r}")
            balance = transactions.credit_adjustment(s, user.id, sats, f"support: {reason}",
                                                     key=f"support:{uuid.uuid4().hex}")
        log.warning("operator credit of %s sats to %s: %s", sats, mask(e164), reason)
        click.echo(f"credited {sats} sats to {mask(e164)}; balance {balance}")

    @app.cli.command("resolve-payment")
    @click.argument("reference")
    @click.option("--outcome", type=click.Choice(["failed", "paid"]), required=True,
                  help="what you established with the node's operator (the node is asked first and wins)")
    @click.option("--reason", required=True, help="the support case: ticket and how it was established")
    def resolve_payment(reference: str, outcome: str, reason: str) -> None:
        """End a pending Lightning payment out that the node cannot settle (it never heard of it):
        refund it (--outcome failed) or settle it (--outcome paid). See README, Operations."""
        svc = services()
        try:
            receipt, said = payments.resolve_by_operator(svc, reference.strip().upper(), outcome == "paid", reason)
        except payments.CannotResolve as exc:
            raise click.ClickException(str(exc)) from exc
        log.warning("operator resolved payment %s as %s (node said %s): %s", receipt.reference, receipt.status,
                    said, reason)
        click.echo(f"{receipt.reference}: {receipt.status} (the node said {said}); customer balance "
                   f"{receipt.balance_sats} sats")

    @app.cli.command("export-transactions")
    @click.option("--out", type=click.File("w"), default="-", help="CSV file (default: standard output)")
    @click.option("--since", type=click.DateTime(["%Y-%m-%d"]), default=None, help="from this day (UTC)")
    def export_transactions(out, since) -> None:
        """All ledger rows as CSV, oldest first."""
        import csv

        svc = services()
        writer = csv.writer(out)
        writer.writerow(["id", "created_at", "phone", "type", "direction", "amount_sats", "fee_sats", "status",
                         "reference", "counterparty", "mpesa_code", "payment_hash", "description"])
        with svc.db.read() as s:
            for row in transactions.export_rows(s, since):
                writer.writerow(row)

    @app.cli.command("reconcile")
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
            after = svc.config["MPESA_QUERY_AFTER_S"] if mpesa_after_seconds is None else mpesa_after_seconds
            every = 0 if mpesa_after_seconds is not None else svc.config["MPESA_QUERY_EVERY_S"]
            click.echo(f"mpesa: {mpesa_flows.reconcile(svc.db, svc.mpesa, after, every)}")
            for req in mpesa_flows.pending(svc.db):
                click.echo(f"PENDING mpesa {req.kind} ref={req.reference} {req.amount_kes} KES {mask(req.phone)} "
                           f"queries={req.queries} since {req.created_at:%Y-%m-%d %H:%M}")
        with svc.db.read() as s:
            stuck = transactions.pending_older_than(s, older_than_minutes)
        for row in stuck:
            click.echo(f"PENDING {row.type} ref={row.reference} id={row.id} {row.amount_sats}+{row.fee_sats} sats "
                       f"since {row.created_at:%Y-%m-%d %H:%M}")
        click.echo(f"pending money movements older than {older_than_minutes} min: {len(stuck)}")

    @app.cli.command("reset-pin")
    @click.argument("phone")
    @click.option("--reason", required=True, help="ticket number and how the identity was verified")
    def reset_pin(phone: str, reason: str) -> None:
        """Clear a customer's PIN after verifying their identity out of band (see SECURITY.md)."""
        e164 = normalise(phone, services().config["DEFAULT_REGION"])
        if e164 is None or not users.reset_pin(services().db, e164):
            raise click.ClickException(f"no customer with phone {phone!r}")
        log.warning("PIN reset for %s by operator: %s", mask(e164), reason)
        click.echo(f"PIN cleared for {mask(e164)}; they will create a new one on their next dial")

    @app.cli.command("clean-sessions")
    @click.option("--keep-days", default=30, show_default=True, help="delete sessions older than this")
    def clean_sessions(keep_days: int) -> None:
        """Close expired USSD sessions and delete old ones."""
        svc = services()
        closed, deleted = sessions.clean(svc.db, svc.config["USSD_SESSION_TIMEOUT_S"], keep_days)
        counters = limits.clean(svc.db)
        click.echo(f"sessions closed={closed} deleted={deleted}; rate counters deleted={counters}")


if __name__ == "__main__":
    create_app().run(host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "5000")))
