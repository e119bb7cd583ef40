"""What every blueprint needs: the app's Services, a plain-text reply, the SMS kick after a request."""

from __future__ import annotations

from flask import Response, current_app

from helpers.infra import sms
from helpers.infra.i18n import t
from helpers.wallet.services import Services


def services() -> Services:
    return current_app.extensions["wallet"]


def plain(reply: str, status: int = 200) -> Response:
    return Response(reply, status=status, mimetype="text/plain")


def unavailable_reply() -> str:
    return "END " + t("en", "error.unavailable") + "\n" + t("sw", "error.unavailable")


def send_queued_sms(svc: Services) -> None:
    """SMS queued by this request go out now (in the dispatcher's thread), unless turned off or
    the worker runs apart (production: `flask worker` sends the outbox; web starts no thread)."""
    if sms.take_queued() and svc.settings.sms_auto_flush and svc.settings.worker_in_process:
        svc.sms.kick()
