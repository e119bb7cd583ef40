"""`flask customer ...`: a person's data-protection requests from the command line (README, Data
protection): export what we hold about them, correct their name, erase them, list the register.
Each is registered (privacy_requests) and audited by the wallet's privacy module."""

from __future__ import annotations

from pathlib import Path

import click
from flask.cli import AppGroup

from helpers.infra.phone import mask, normalise
from helpers.wallet import privacy
from helpers.web.common import services
from helpers.web.resolve_cli import CLI

customer = AppGroup("customer", help="A person's data: export, name correction, erasure (Data Protection Act).")


def _phone(typed: str) -> str:
    e164 = normalise(typed, services().settings.default_region)
    if e164 is None:
        raise click.ClickException(f"{typed!r} is not a valid mobile number")
    return e164


@customer.command("export")
@click.argument("phone")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="folder to write <phone>.json and <phone>.zip (the JSON and one CSV per table) into")
def export(phone: str, out_dir: Path) -> None:
    """Everything we hold about a customer, as one JSON document and a zip of CSVs."""
    e164 = _phone(phone)
    try:
        data = privacy.export(services().db, CLI, e164)
    except privacy.PrivacyRefused as exc:
        raise click.ClickException(str(exc)) from None
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = e164.lstrip("+")
    (out_dir / f"{stem}.json").write_text(privacy.as_json(data), encoding="utf-8")
    (out_dir / f"{stem}.zip").write_bytes(privacy.as_zip(data))
    rows = sum(len(r) for r in data["tables"].values())
    click.echo(f"exported {rows} rows about {mask(e164)} to {out_dir / stem}.json and .zip")


@customer.command("correct-name")
@click.argument("phone")
@click.argument("name")
@click.option("--reason", default="", help="why (required for a verified name: the ID seen)")
def correct_name(phone: str, name: str, reason: str) -> None:
    """Correct a customer's name (a verified one only with a reason)."""
    e164 = _phone(phone)
    try:
        held = privacy.correct_name(services().db, CLI, e164, name, reason)
    except privacy.PrivacyRefused as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"name of {mask(e164)} is now {held}")


@customer.command("erase")
@click.argument("phone")
@click.option("--reason", required=True, help="the request: ticket, how identity was checked")
def erase(phone: str, reason: str) -> None:
    """Erase a customer's personal data (refused while money is held or anything is open); money
    records are kept for retention-years, then pseudonymised by the worker."""
    e164 = _phone(phone)
    svc = services()
    try:
        done = privacy.erase(svc.db, svc.settings.pin_pepper, CLI, e164, reason)
    except privacy.PrivacyRefused as exc:
        raise click.ClickException(f"not erased: {exc}") from None
    click.echo(f"erased {mask(e164)}: now {done.pseudonym}; {done.sessions} sessions deleted, {done.sms} SMS blanked")


@customer.command("requests")
@click.option("--limit", default=50, show_default=True)
def requests(limit: int) -> None:
    """The register of data-protection requests, newest first."""
    for row in privacy.register_rows(services().db, limit):
        done = f"{row.done_at:%Y-%m-%d %H:%M}" if row.done_at else "refused"
        click.echo(f"{row.requested_at:%Y-%m-%d %H:%M} {row.kind:<7} {row.subject:<16} {done:<16} "
                   f"{row.operator}: {row.outcome}")
