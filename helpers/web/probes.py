"""What watches the service: GET /status (health, for load balancers and people) and GET /metrics
(Prometheus, behind METRICS_TOKEN)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request
from sqlalchemy.exc import SQLAlchemyError

from helpers.infra import metrics
from helpers.ussd import sessions
from helpers.wallet import books, journal, lnurl
from helpers.wallet.services import Services
from helpers.web import callers
from helpers.web.common import plain, services
from models import utcnow

bp = Blueprint("probes", __name__)


@bp.get("/metrics")
def prometheus() -> Response:
    svc = services()
    if not callers.token_ok(svc.settings.metrics_token, request.headers.get("Authorization", "")[7:]):
        return plain("Forbidden", 403)
    try:
        text = metrics.render(svc.db.session(), svc.lightning.name)
        found = _solvency()
    except SQLAlchemyError:
        return plain("database unavailable", 503)
    text += _price_metrics(svc)
    if found.coverage is not None:
        text += ("# HELP wallet_coverage_ratio Assets (node as it reports, M-Pesa float as recorded) over "
                 "liabilities (customers and payments in flight).\n# TYPE wallet_coverage_ratio gauge\n"
                 f"wallet_coverage_ratio {found.coverage:.6f}\n")
    return Response(text, mimetype="text/plain; version=0.0.4")


def _price_metrics(svc: Services) -> str:
    """The price in use (none: KES operations stopped), the stored one's age and sources."""
    current = svc.prices.current()
    lines = ["# HELP wallet_price_fresh 1 when a price is in use (KES operations run), else 0\n"
             f"# TYPE wallet_price_fresh gauge\nwallet_price_fresh {int(current is not None)}\n"]
    if current is not None:
        lines.append("# HELP wallet_price_kes_per_btc The BTC/KES price in use\n# TYPE wallet_price_kes_per_btc gauge\n"
                     f'wallet_price_kes_per_btc{{source="{current.source}"}} {current.kes_per_btc}\n')
    row = svc.prices.newest_row() if svc.prices.sources else None
    if row is not None:
        age = (utcnow() - row.created_at).total_seconds()
        lines.append("# HELP wallet_price_age_seconds Age of the newest price the feed stored\n"
                     f"# TYPE wallet_price_age_seconds gauge\nwallet_price_age_seconds {age:.0f}\n"
                     "# HELP wallet_price_sources_up Sources that agreed on the newest price\n"
                     f"# TYPE wallet_price_sources_up gauge\nwallet_price_sources_up {len(row.sources.split(','))}\n")
    return "".join(lines)


def _solvency() -> journal.Solvency:
    svc = services()
    node = svc.lightning.balance()
    return journal.solvency(svc.db.session(), node.balance_sat if node.ok else None)


@bp.get("/ledger/solvency")
def solvency() -> Response | tuple[Response, int]:
    """The solvency report as JSON, for the operator (behind METRICS_TOKEN, as /metrics)."""
    svc = services()
    if not callers.token_ok(svc.settings.metrics_token, request.headers.get("Authorization", "")[7:]):
        return plain("Forbidden", 403)
    try:
        return jsonify(_solvency().as_dict()), 200
    except SQLAlchemyError:
        return plain("database unavailable", 503)


@bp.get("/status")
def status() -> tuple[Response, int]:
    svc = services()
    db_ok = svc.db.healthy()
    body: dict[str, Any] = {
        "status": "ok" if db_ok else "degraded",
        "database": {"ok": db_ok, "dialect": svc.db.engine.dialect.name},
        "lightning": svc.lightning.health(),
        "lightning_address_domain": lnurl.domain(svc.settings),
        "mpesa": svc.mpesa.name,
        "sms_sender": svc.sms.sender.name,
    }
    if db_ok:
        try:
            s = svc.db.session()  # the request's session
            body["active_sessions"] = sessions.active_count(s, svc.settings.ussd_session_timeout_s)
            body["sms_queue"] = svc.sms.pending_count(s)
            body.update(books.totals(s))
        except SQLAlchemyError:
            body["status"], body["database"]["ok"] = "degraded", False
    return jsonify(body), 200 if body["database"]["ok"] else 503
