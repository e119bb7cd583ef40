"""One log format for every line: a JSON object per line, with the request and USSD session it
belongs to. What a line must never hold is kept out where the line is made (PINs are never
logged; phone numbers are masked); secret path segments of callback URLs are replaced here too,
whatever logged them."""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import re

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
session_id: contextvars.ContextVar[str] = contextvars.ContextVar("session_id", default="")

# /ussd/<token>, /lightning/webhook/<token>, /mpesa/<token>/..., /airtime/<token>/...: the token is a secret
SECRET_PATH = re.compile(r"(/ussd|/lightning/webhook|/mpesa|/airtime)/[^\s?/\"]+")


def clear() -> None:
    """A new request: no ids of the one this thread served before (the USSD endpoint sets its own)."""
    request_id.set("")
    session_id.set("")


def redact(text: str) -> str:
    return SECRET_PATH.sub(r"\1/<token>", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        if request_id.get():
            line["request_id"] = request_id.get()
        if session_id.get():
            line["session_id"] = session_id.get()
        if record.exc_info:
            line["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False)
