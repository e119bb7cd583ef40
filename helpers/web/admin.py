"""The operator console at /admin: sign-in, a dashboard (customers, volume per day, solvency),
what is pending, failed SMS, a customer's page (balance, statement, PIN state; credit or debit,
unlock or reset the PIN, each with a reason), and reconcile now. Server-rendered, one column on a
phone. Every form carries a CSRF token bound to the session; every action is in the audit log."""

from __future__ import annotations

import datetime as dt
import hmac
import re
import secrets
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, session, url_for
from sqlalchemy import func, select
from werkzeug.wrappers import Response

from helpers.infra.phone import normalise
from helpers.wallet import airtime, journal, lightning_out, mpesa_flows, operators, payments, users
from helpers.wallet.errors import InsufficientBalance
from helpers.wallet.operators import OperatorError
from helpers.wallet.services import Services
from helpers.web import probes
from helpers.web.common import services
from models import DEBIT, FAILED, RECEIVE, SETTLED, TOPUP, SmsOutbox, Transaction, User, utcnow

bp = Blueprint("admin", __name__, url_prefix="/admin", template_folder="templates")
VOLUME_DAYS = 14


# ------------------------------------------------------------------ sign-in, session, CSRF
def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return str(session["csrf"])


def form_nonce() -> str:
    """A one-time id for a form that moves money: sent twice, it moves money once."""
    return secrets.token_hex(16)


@bp.app_context_processor
def _template_globals() -> dict[str, Any]:
    return {"csrf_token": csrf_token, "form_nonce": form_nonce}


@bp.before_request
def _guard() -> Response | None:
    svc = services()
    if request.method == "POST":
        sent = request.form.get("csrf", "")
        if not sent or not hmac.compare_digest(sent, session.get("csrf", "")):
            abort(400, "the form's CSRF token is missing or wrong: reload the page")
    if request.endpoint in ("admin.login", "admin.static"):
        return None
    who, seen = session.get("operator"), session.get("seen", 0)
    idle = dt.timedelta(minutes=svc.settings.admin_session_minutes).total_seconds()
    now = utcnow().timestamp()
    if not who or now - seen > idle:
        session.clear()
        return redirect(url_for("admin.login", next=request.path))
    session["seen"] = now
    return None


def operator() -> str:
    return str(session["operator"])


def _logged(view: Callable[..., Any]) -> Callable[..., Any]:
    """Turn an operator's refusal into a message on the page it came from."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return view(*args, **kwargs)
        except OperatorError as exc:
            flash(str(exc), "error")
            return redirect(request.referrer or url_for("admin.dashboard"))

    return wrapped


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if request.method == "GET":
        return render_template("admin/login.html")
    svc = services()
    username = request.form.get("username", "").strip().lower()[:64]
    done = operators.login(svc.db, username, request.form.get("password", ""), request.remote_addr or "")
    if not done.ok:
        message = (f"Too many wrong passwords: locked for {done.locked_minutes} min."
                   if done.locked_minutes else "Wrong username or password.")
        return render_template("admin/login.html", error=message), 401 if not done.locked_minutes else 429
    session.clear()
    session["operator"], session["seen"] = username, utcnow().timestamp()
    csrf_token()
    target = request.args.get("next", "")
    return redirect(target if target.startswith("/admin") else url_for("admin.dashboard"))


@bp.post("/logout")
def logout() -> Response:
    session.clear()
    return redirect(url_for("admin.login"))


# ------------------------------------------------------------------ pages
@bp.get("/")
def dashboard() -> str:
    svc = services()
    s = svc.db.session()
    node = svc.lightning.balance()
    solvency = journal.solvency(s, node.balance_sat if node.ok else None)
    return render_template("admin/dashboard.html", customers=s.scalar(select(func.count()).select_from(User)),
                           volume=_volume(svc), solvency=solvency, details=probes.details(svc),
                           price=svc.prices.current(), audit=operators.recent_audit(s, 10))


def _volume(svc: Services) -> list[tuple[str, int, int]]:
    """(day, sats, movements) for the last VOLUME_DAYS days: what customers spent, withdrew, topped
    up and received by Lightning (each movement once; a transfer is its debit)."""
    since = utcnow() - dt.timedelta(days=VOLUME_DAYS - 1)
    day = func.date(Transaction.created_at)
    counted = ((Transaction.direction == DEBIT) | (Transaction.type == TOPUP)
               | ((Transaction.type == RECEIVE) & (Transaction.counterparty == "lightning")))
    rows = dict((str(d), (int(total or 0), int(n))) for d, total, n in svc.db.session().execute(
        select(day, func.sum(Transaction.amount_sats), func.count()).where(
            Transaction.status == SETTLED, Transaction.type != "adjust", Transaction.created_at >= since.replace(
                hour=0, minute=0, second=0, microsecond=0), counted).group_by(day)))
    out = []
    for back in range(VOLUME_DAYS - 1, -1, -1):
        key = (utcnow() - dt.timedelta(days=back)).date().isoformat()
        sats, n = rows.get(key, (0, 0))
        out.append((key, sats, n))
    return out


@bp.get("/pending")
def pending() -> str:
    svc = services()
    now = utcnow()
    lightning = [(row, svc.lightning.payment_status(row.payment_hash) if row.payment_hash else None)
                 for row in lightning_out.pending_lightning(svc.db.session(), limit=50)]
    return render_template("admin/pending.html", now=now, lightning=lightning,
                           mpesa=mpesa_flows.pending(svc.db)[:100], airtime=airtime.pending(svc.db)[:100])


@bp.get("/sms")
def failed_sms() -> str:
    rows = services().db.session().scalars(select(SmsOutbox).where(SmsOutbox.status == FAILED)
                                           .order_by(SmsOutbox.id.desc()).limit(100))
    return render_template("admin/sms.html", rows=list(rows))


@bp.get("/customer")
def customer() -> Any:
    svc = services()
    typed = request.args.get("phone", "").strip()
    if not typed:
        return render_template("admin/customer.html", user=None, typed="")
    phone = normalise(typed, svc.settings.default_region)
    s = svc.db.session()
    user = users.get(s, phone) if phone else None
    if user is None:
        flash(f"No customer with phone {typed}.", "error")
        return render_template("admin/customer.html", user=None, typed=typed)
    return render_template("admin/customer.html", user=user, typed=typed, locked=operators.pin_locked(user),
                           lines=journal.statement(s, user.id, limit=20),
                           audit=operators.recent_audit(s, 20, subject=user.phone))


@bp.post("/customer/<phone>/adjust")
@_logged
def adjust(phone: str) -> Response:
    raw = request.form.get("sats", "").strip()
    sign = -1 if request.form.get("direction") == "debit" else 1
    if not raw.isdigit() or not 0 < int(raw) <= 10**9:
        raise OperatorError("the amount is a whole number of sats, 1 to 1,000,000,000")
    try:
        nonce = request.form.get("nonce", "")
        balance = operators.adjust(services().db, operator(), phone, sign * int(raw), request.form.get("reason", ""),
                                   nonce if re.fullmatch(r"[0-9a-f]{32}", nonce) else "")
    except InsufficientBalance as exc:
        raise OperatorError(f"the balance is {exc.balance_sats:,} sats: a debit never overdraws") from None
    flash(f"{'Credited' if sign > 0 else 'Debited'} {int(raw):,} sats; balance {balance:,} sats.", "ok")
    return redirect(url_for("admin.customer", phone=phone))


@bp.post("/customer/<phone>/unlock")
@_logged
def unlock(phone: str) -> Response:
    operators.unlock_pin(services().db, operator(), phone, request.form.get("reason", ""))
    flash("PIN unlocked.", "ok")
    return redirect(url_for("admin.customer", phone=phone))


@bp.post("/customer/<phone>/reset-pin")
@_logged
def reset_pin(phone: str) -> Response:
    operators.reset_pin(services().db, operator(), phone, request.form.get("reason", ""))
    flash("PIN cleared: the customer creates a new one at the next dial.", "ok")
    return redirect(url_for("admin.customer", phone=phone))


@bp.post("/reconcile")
def reconcile() -> Response:
    svc = services()
    out = payments.reconcile(svc)
    done = f"lightning {out}"
    if svc.mpesa.payouts_async or svc.mpesa.topup_by_push:
        done += f"; mpesa {mpesa_flows.reconcile(svc.db, svc.mpesa, 0, 0)}"
    with svc.db.write() as s:
        operators.audit(s, operator(), "reconcile", "", "reconcile now", done)
    flash(f"Reconciled: {done}.", "ok")
    return redirect(url_for("admin.pending"))
