"""The console's monitoring pages at /admin/aml (issue 34), behind the console's own guard
(sign-in, CSRF, idle timeout: admin._guard runs before each): the cases a rule opened, a case with
its facts, movements and history, what an operator does with it (assign, note, hold or release
money out, mark suspicious, close with a reason; each audited) and a suspicious case's report."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from helpers.wallet.aml import cases, report
from helpers.wallet.operators import OperatorError
from helpers.web import admin
from helpers.web.admin import _logged, operator
from helpers.web.common import services

bp = Blueprint("aml", __name__, url_prefix="/admin/aml", template_folder="templates")
bp.before_request(admin._guard)


@bp.get("/")
def cases_page() -> str:
    status = request.args.get("status", "active")
    if status not in ("active", "all", *cases.STATUSES):
        status = "active"
    db = services().db
    return render_template("admin/aml_cases.html", rows=cases.listed(db, None if status == "all" else status),
                           status=status, statuses=("active", *cases.STATUSES, "all"), counts=cases.counts(db))


@bp.get("/<int:case_id>")
@_logged
def case_page(case_id: int) -> str:
    db = services().db
    case, history = cases.get(db, case_id)
    found = cases.facts_of(case)
    lines = report.movements_of(db, [int(i) for i in found.get("movement_ids", [])])
    return render_template("admin/aml_case.html", case=case, history=history, lines=lines,
                           facts={k: v for k, v in sorted(found.items()) if k != "movement_ids"})


def _back(case_id: int) -> Response:
    return redirect(url_for("aml.case_page", case_id=case_id))


@bp.post("/<int:case_id>/assign")
@_logged
def assign(case_id: int) -> Response:
    who = cases.assign(services().db, operator(), case_id, request.form.get("to", "").strip() or None)
    flash(f"Case {case_id} assigned to {who}.", "ok")
    return _back(case_id)


@bp.post("/<int:case_id>/note")
@_logged
def note(case_id: int) -> Response:
    cases.note(services().db, operator(), case_id, request.form.get("text", ""))
    flash("Note added.", "ok")
    return _back(case_id)


@bp.post("/<int:case_id>/hold")
@_logged
def hold(case_id: int) -> Response:
    cases.hold(services().db, operator(), case_id, request.form.get("reason", ""))
    flash("Money out held: sending, paying and withdrawing stop; receiving goes on.", "ok")
    return _back(case_id)


@bp.post("/<int:case_id>/release")
@_logged
def release(case_id: int) -> Response:
    cases.release(services().db, operator(), case_id, request.form.get("reason", ""))
    flash("Money out released.", "ok")
    return _back(case_id)


@bp.post("/<int:case_id>/suspicious")
@_logged
def suspicious(case_id: int) -> Response:
    cases.mark_suspicious(services().db, operator(), case_id, request.form.get("reason", ""))
    flash("Marked suspicious: download the report for the Financial Reporting Centre.", "ok")
    return _back(case_id)


@bp.post("/<int:case_id>/close")
@_logged
def close(case_id: int) -> Response:
    cases.close(services().db, operator(), case_id, request.form.get("reason", ""))
    flash(f"Case {case_id} closed.", "ok")
    return _back(case_id)


@bp.get("/<int:case_id>/report.xml")
def report_file(case_id: int) -> Any:
    svc = services()
    try:
        text = report.export(svc.db, case_id, svc.settings.frc_entity_id, svc.settings.service_name, operator())
    except OperatorError as exc:
        flash(str(exc), "error")
        return _back(case_id)
    cases.exported(svc.db, operator(), case_id)
    return Response(text, mimetype="application/xml",
                    headers={"Content-Disposition": f'attachment; filename="str-case-{case_id}.xml"'})
