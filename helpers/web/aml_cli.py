"""`flask aml ...`: monitoring against money laundering (issue 34) from the command line: run the
rules now, list the cases, close one, export a suspicious case's report. The console (/admin/aml)
does the same and more (assign, note, hold money out); each action is audited as `cli`."""

from __future__ import annotations

from pathlib import Path

import click
from flask.cli import AppGroup

from helpers.infra.phone import mask
from helpers.wallet.aml import cases, report
from helpers.wallet.operators import OperatorError
from helpers.web.common import services
from helpers.web.resolve_cli import CLI

aml = AppGroup("aml", help="Monitoring against money laundering: rules, cases, reports (issue 34).")


@aml.command("scan")
def scan() -> None:
    """Run every monitoring rule over the journal now; open a case for each new hit."""
    svc = services()
    done = cases.scan(svc.db, svc.policy, CLI)
    click.echo(f"hits {done.hits}; cases opened {len(done.opened)}"
               + (f": {', '.join(str(i) for i in done.opened)}" if done.opened else ""))


@aml.command("cases")
@click.option("--status", type=click.Choice(["active", *cases.STATUSES, "all"]), default="all", show_default=True)
@click.option("--full-phone", is_flag=True, help="show whole phone numbers (masked by default)")
def list_cases(status: str, full_phone: bool) -> None:
    """The cases, newest first: id, status, rule, customer, when opened, who has it."""
    rows = cases.listed(services().db, None if status == "all" else status)
    for case in rows:
        facts = {k: v for k, v in cases.facts_of(case).items() if k != "movement_ids"}
        click.echo(f"{case.id}\t{case.status}{' suspicious' if case.suspicious else ''}\t{case.rule}\t"
                   f"{case.phone if full_phone else mask(case.phone)}\t{case.opened_at:%Y-%m-%d %H:%M}\t"
                   f"{case.assigned_to or '-'}\t{' '.join(f'{k}={v}' for k, v in sorted(facts.items()))}"
                   + (f"\tclosed: {case.close_reason}" if case.close_reason else ""))
    click.echo(f"cases: {len(rows)}")


@aml.command("close")
@click.argument("case_id", type=int)
@click.option("--reason", required=True, help="what was found (and, if suspicious, that it was reported)")
def close(case_id: int, reason: str) -> None:
    """Close a case with the reason (a hold of money out it put is released)."""
    try:
        cases.close(services().db, CLI, case_id, reason)
    except OperatorError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"case {case_id} closed")


@aml.command("report")
@click.argument("case_id", type=int)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="write to this file (default: print)")
def export(case_id: int, out: Path | None) -> None:
    """A suspicious case's report for the Financial Reporting Centre (goAML-shaped XML)."""
    svc = services()
    try:
        text = report.export(svc.db, case_id, svc.settings.frc_entity_id, svc.settings.service_name, CLI)
    except OperatorError as exc:
        raise click.ClickException(str(exc)) from None
    cases.exported(svc.db, CLI, case_id)
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        click.echo(f"report of case {case_id} written to {out}")
