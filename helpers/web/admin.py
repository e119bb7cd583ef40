"""The operator console at /admin: sign-in, a dashboard (customers, volume per day, solvency),
what is pending, failed SMS, a customer's page (balance, statement, PIN state; credit or debit,
unlock or reset the PIN, each with a reason), and reconcile now. Server-rendered, one column on a
phone. Every form carries a CSRF token bound to the session; every action is in the audit log."""

from __future__ import annotations

import datetime as dt
import hmac
import io
import re
import secrets
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Blueprint, flash, g, redirect, render_template, request, send_file, session, url_for
from sqlalchemy import func, select
from werkzeug.wrappers import Response

from helpers.infra.phone import normalise
from helpers.wallet import operators, privacy, sim_swap
from helpers.wallet.customers import users
from helpers.wallet.ledger import journal
from helpers.wallet.mpesa import flows as mpesa_flows
from helpers.wallet.payouts import lightning_out, payments
from helpers.wallet.reports import books
from helpers.wallet.errors import InsufficientBalance
from helpers.wallet.operators import OperatorError
from helpers.wallet.services import Services
from helpers.wallet.payouts import machine as payouts
from helpers.web import probes
from helpers.web.common import services
from models import DEBIT, FAILED, LIGHTNING_RAIL, RECEIVE, SETTLED, TOPUP, SmsOutbox, Transaction, User, utcnow

bp = Blueprint("admin", __name__, url_prefix="/admin", template_folder="templates")
VOLUME_DAYS = 14
FAILED_SIGN_IN_HOURS = 24  # the dashboard counts failed sign-ins over this long


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
    """CSRF on every form; outside the sign-in page, an operator loaded now from the database (the
    cookie only names them): a session whose operator is gone, locked or signed out, or which sat
    idle too long, goes back to the sign-in page."""
    svc = services()
    if request.method == "POST":
        sent = request.form.get("csrf", "")
        if not sent or not hmac.compare_digest(sent, session.get("csrf", "")):
            # The console's own page (an old tab is the usual cause), not the app's JSON error.
            back = url_for("admin.dashboard" if session.get("operator_id") else "admin.login")
            return Response(render_template("admin/form_expired.html", back=back), status=400, mimetype="text/html")
    if request.endpoint in ("admin.login", "admin.static"):
        return None
    seen = session.get("seen", 0)
    idle = dt.timedelta(minutes=svc.settings.admin_session_minutes).total_seconds()
    now = utcnow().timestamp()
    who = None
    if now - seen <= idle and isinstance(session.get("operator_id"), int):
        who = operators.session_operator(svc.db, session["operator_id"], str(session.get("session_key", "")))
    if who is None:
        session.clear()
        return redirect(url_for("admin.login", next=request.path))
    g.operator = who
    session["seen"] = now
    return None


def operator() -> str:
    """The signed-in operator's name, as loaded for this request."""
    return str(g.operator)


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


WRONG_SIGN_IN = "Wrong username, password or code."
THROTTLED = "Too many failed sign-ins from here: try again in {minutes} min."
LOCKED = "This operator is locked: ask another operator."
NO_SECOND_FACTOR = "No second factor yet: run `flask operator totp {username}` and add it to your authenticator."


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if request.method == "GET":
        return render_template("admin/login.html")
    svc = services()
    username = request.form.get("username", "").strip().lower()[:64]
    done = operators.login(svc.db, username, request.form.get("password", ""), request.form.get("code", ""),
                           request.remote_addr or "")
    if not done.ok:
        message, status = _refusal(done, username)
        return render_template("admin/login.html", error=message), status
    session.clear()
    session["operator_id"], session["session_key"] = done.operator_id, done.session_key
    session["seen"] = utcnow().timestamp()
    csrf_token()
    target = request.args.get("next", "")
    return redirect(target if target.startswith("/admin") else url_for("admin.dashboard"))


def _refusal(done: operators.Login, username: str) -> tuple[str, int]:
    """The page's text and status for a refused sign-in: the same for every name, known or not,
    unless the password and code were right."""
    if done.retry_minutes:
        return THROTTLED.format(minutes=done.retry_minutes), 429
    if done.locked:
        return LOCKED, 403
    if done.no_second_factor:
        return NO_SECOND_FACTOR.format(username=username), 403
    return WRONG_SIGN_IN, 401


@bp.post("/logout")
def logout() -> Response:
    """Sign out: every session of this operator ends (a copy of this cookie included)."""
    operators.sign_out(services().db, session["operator_id"], request.remote_addr or "")
    session.clear()
    return redirect(url_for("admin.login"))


# ------------------------------------------------------------------ pages
@bp.get("/")
def dashboard() -> str:
    svc = services()
    s = svc.db.session()
    node = svc.lightning.balance()
    solvency = books.solvency(s, node.balance_sat if node.ok else None)
    return render_template("admin/dashboard.html", customers=s.scalar(select(func.count()).select_from(User)),
                           volume=_volume(svc), solvency=solvency, details=probes.details(svc),
                           price=svc.prices.current(), audit=operators.recent_audit(s, 10),
                           failed=operators.failed_sign_ins(s, utcnow() - dt.timedelta(hours=FAILED_SIGN_IN_HOURS)),
                           failed_hours=FAILED_SIGN_IN_HOURS)


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
    others = [p for p in payouts.pending(svc.db, limit=100) if p.rail != LIGHTNING_RAIL]  # Lightning's: above
    return render_template("admin/pending.html", now=now, lightning=lightning,
                           mpesa=mpesa_flows.pending(svc.db)[:100], payouts=others,
                           orphans=mpesa_flows.orphans(svc.db), orphan_after_s=mpesa_flows.ORPHAN_AFTER_S)


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
    phone = typed if privacy.is_pseudonym(typed) else normalise(typed, svc.settings.default_region)
    s = svc.db.session()
    user = users.get(s, phone) if phone else None
    if user is None:
        flash(f"No customer with phone {typed}.", "error")
        return render_template("admin/customer.html", user=None, typed=typed)
    return render_template("admin/customer.html", user=user, typed=typed, locked=operators.pin_locked(user),
                           lines=journal.statement(s, user.id, limit=20),
                           audit=operators.recent_audit(s, 20, subject=user.phone),
                           aml_hold=sim_swap.read(svc.db, user.phone).aml_hold_case_id)


@bp.post("/customer/<phone>/adjust")
@_logged
def adjust(phone: str) -> Any:
    """The first step of a credit or debit: what it will do, to confirm. Nothing moves yet."""
    sats, reason, nonce = _adjust_form()
    now, after = operators.preview_adjust(services().db, phone, sats, reason)
    return render_template("admin/confirm_adjust.html", phone=phone, sats=sats, reason=reason, nonce=nonce,
                           balance=now, after=after)


@bp.post("/customer/<phone>/adjust/confirm")
@_logged
def adjust_confirmed(phone: str) -> Response:
    """The confirmed credit or debit: it moves the money (once per form), with its audit line."""
    sats, reason, nonce = _adjust_form()
    try:
        balance = operators.adjust(services().db, operator(), phone, sats, reason, nonce)
    except InsufficientBalance as exc:
        raise OperatorError(f"the balance is {exc.balance_sats:,} sats: a debit never overdraws") from None
    flash(f"{'Credited' if sats > 0 else 'Debited'} {abs(sats):,} sats; balance {balance:,} sats.", "ok")
    return redirect(url_for("admin.customer", phone=phone))


def _adjust_form() -> tuple[int, str, str]:
    """The credit or debit form: signed sats (a debit is negative), the reason, the form's nonce."""
    raw = request.form.get("sats", "").strip()
    sign = -1 if request.form.get("direction") == "debit" else 1
    if not raw.isdigit() or not 0 < int(raw) <= 10**9:
        raise OperatorError("the amount is a whole number of sats, 1 to 1,000,000,000")
    nonce = request.form.get("nonce", "")
    return sign * int(raw), request.form.get("reason", ""), nonce if re.fullmatch(r"[0-9a-f]{32}", nonce) else ""


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


@bp.post("/customer/<phone>/export")
@_logged
def export(phone: str) -> Any:
    """Everything we hold about the customer, as a zip (the JSON and one CSV per table): a
    data-protection request, registered and audited."""
    data = privacy.export(services().db, operator(), phone)
    return send_file(io.BytesIO(privacy.as_zip(data)), mimetype="application/zip", as_attachment=True,
                     download_name=f"{phone.lstrip('+')}-{utcnow():%Y%m%d}.zip")


@bp.post("/customer/<phone>/name")
@_logged
def correct_name(phone: str) -> Response:
    held = privacy.correct_name(services().db, operator(), phone, request.form.get("name", ""),
                                request.form.get("reason", ""))
    flash(f"Name corrected: {held}.", "ok")
    return redirect(url_for("admin.customer", phone=phone))


@bp.post("/customer/<phone>/erase")
@_logged
def erase(phone: str) -> Response:
    svc = services()
    done = privacy.erase(svc.db, svc.settings.pin_pepper, operator(), phone, request.form.get("reason", ""))
    flash(f"Erased: the account is now {done.pseudonym}; money records are kept for "
          f"{svc.policy.value('retention-years')} years.", "ok")
    return redirect(url_for("admin.customer", phone=done.pseudonym))  # the account, under its pseudonym


@bp.get("/sim-swaps")
def sim_swaps() -> str:
    """The queue of customers a recent SIM swap holds (issue 33), each cleared after the owner is
    verified."""
    svc = services()
    return render_template("admin/sim_swaps.html", rows=sim_swap.held(svc.db, svc.policy),
                           hold_days=svc.policy.value("sim-swap-hold-days"))


@bp.post("/sim-swaps/<phone>/clear")
@_logged
def clear_sim_swap(phone: str) -> Response:
    svc = services()
    operators.clear_sim_swap(svc.db, operator(), phone, request.form.get("reason", ""))
    flash(f"SIM swap hold of {phone} cleared: money out works again.", "ok")
    return redirect(url_for("admin.sim_swaps"))


@bp.post("/reconcile")
def reconcile() -> Response:
    svc = services()
    out = payments.reconcile(svc)
    done = f"lightning {out}"
    if svc.mpesa.payouts_async or svc.mpesa.topup_by_push:
        done += f"; mpesa {mpesa_flows.reconcile(svc.db, svc.mpesa, svc.rail, 0, 0)}"
    with svc.db.write() as s:
        operators.audit(s, operator(), "reconcile", "", "reconcile now", done)
    flash(f"Reconciled: {done}.", "ok")
    return redirect(url_for("admin.pending"))
