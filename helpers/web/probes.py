"""What watches the service: GET /health (liveness), GET /ready (readiness, for load balancers),
GET /status (public: ok, version, backends), GET /metrics (Prometheus, behind METRICS_TOKEN) and
GET /ledger/solvency (behind METRICS_TOKEN)."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, jsonify, request
from sqlalchemy.exc import SQLAlchemyError

from helpers.infra import metrics
from helpers.infra.version import VERSION
from helpers.ussd import sessions
from helpers.wallet.incoming import lnurl
from helpers.wallet.reports import books
from helpers.wallet.services import Services
from helpers.web import callers
from helpers.web.common import plain, services
from models import utcnow

bp = Blueprint("probes", __name__)


def _operator_asks(svc: Services) -> bool:
    """The caller presents METRICS_TOKEN as a bearer token. With no token configured (possible
    outside production only) nobody does: these routes show customers' money and ask the node."""
    token = svc.settings.metrics_token
    offered = request.headers.get("Authorization", "")
    return bool(token) and offered.startswith("Bearer ") and callers.token_ok(token, offered[7:])


@bp.get("/metrics")
def prometheus() -> Response:
    svc = services()
    if not _operator_asks(svc):
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


def _solvency() -> books.Solvency:
    svc = services()
    node = svc.lightning.balance()
    return books.solvency(svc.db.session(), node.balance_sat if node.ok else None)


@bp.get("/ledger/solvency")
def solvency() -> Response | tuple[Response, int]:
    """The solvency report as JSON, for the operator (behind METRICS_TOKEN, as /metrics)."""
    svc = services()
    if not _operator_asks(svc):
        return plain("Forbidden", 403)
    try:
        return jsonify(_solvency().as_dict()), 200
    except SQLAlchemyError:
        return plain("database unavailable", 503)


@bp.get("/health")
def health() -> Response:
    """Liveness: the process answers. No database, no node: a load balancer restarts what fails it."""
    return jsonify({"status": "ok"})


_ready_cache: dict[int, tuple[float, tuple[dict[str, Any], int]]] = {}  # id(app services) -> (until, answer)
READY_CACHE_S = 5.0


@bp.get("/ready")
def ready() -> tuple[Response, int]:
    """Readiness: the database answers and is at the newest migration, and the Lightning backend
    answers. Cached a few seconds, so a probe every second does not hammer the node."""
    svc = services()
    now = time.monotonic()
    cached = _ready_cache.get(id(svc))
    if cached is None or now >= cached[0]:
        cached = (now + READY_CACHE_S, _readiness(svc))
        _ready_cache[id(svc)] = cached
    body, status = cached[1]
    return jsonify(body), status


def _readiness(svc: Services) -> tuple[dict[str, Any], int]:
    checks: dict[str, Any] = {"database": svc.db.healthy()}
    try:
        checks["migrations"] = checks["database"] and svc.db.schema_revision() == svc.db.head_revision()
    except SQLAlchemyError:
        checks["migrations"] = False
    checks["lightning"] = bool(svc.lightning.health().get("ok"))
    ok = all(checks.values())
    return {"status": "ready" if ok else "not ready", **checks}, 200 if ok else 503


@bp.get("/status")
def status() -> tuple[Response, int]:
    """The design card's health probe, public: only what anyone may know. Balances, queues and
    sessions are on the operator console (/admin)."""
    svc = services()
    db_ok = svc.db.healthy()
    body: dict[str, Any] = {
        "status": "ok" if db_ok else "degraded",
        "version": VERSION,
        "lightning": svc.lightning.name,
        "mpesa": svc.mpesa.name,
        "airtime": svc.airtime.name if svc.airtime is not None else "off",
        "lightning_address_domain": lnurl.domain(svc.settings),
    }
    if db_ok:  # the BTC/KES price KES operations convert at now (null: they are stopped)
        price = svc.prices.current()
        body["price"] = None if price is None else {"kes_per_btc": price.kes_per_btc, "source": price.source}
    return jsonify(body), 200 if db_ok else 503


def details(svc: Services) -> dict[str, Any]:
    """What /status used to tell everyone, for the operator console."""
    s = svc.db.session()
    return {"database": svc.db.engine.dialect.name,
            "lightning": svc.lightning.health(), "mpesa": svc.mpesa.name, "sms_sender": svc.sms.sender.name,
            "active_sessions": sessions.active_count(s, svc.settings.ussd_session_timeout_s),
            "sms_queue": svc.sms.pending_count(s), **books.totals(s)}
