"""The vocabulary the settings are declared in (helpers/infra/settings.py): a kind for each sort of
value (text, whole number, decimal, on/off flag, list of networks), its allowed values, whether it
is a secret, its one-line description; and the one function that reads a value of each kind from
the environment, refusing a bad one with a ConfigError that names the setting and what is allowed.

A secret's value is never repeated in a message (a DATABASE_URL holds a password).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from helpers.infra.text import is_digits

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


class ConfigError(RuntimeError):
    """A setting is missing or wrong; the message names it (one line)."""


@dataclass(frozen=True)
class Context:
    """What a default that follows other settings may look at."""

    env: Mapping[str, str]
    instance_path: str
    embedded: bool  # DATABASE_URL is the embedded SQLite default
    production: bool  # APP_ENV=production


@dataclass(frozen=True)
class Declared:
    """One setting as declared: everything the reader, .env.example and the checks need."""

    name: str  # the environment variable
    kind: str  # text | whole | decimal | flag | networks
    default: Any
    doc: str  # one line
    section: str = ""  # starts a section of .env.example
    choices: tuple[str, ...] = ()
    secret: bool = False
    example: str | None = None  # shown in .env.example instead of the default
    default_doc: str = ""  # a default that follows other settings, in words
    derived: Callable[[Context], Any] | None = None  # ... and as a rule
    minimum: float = 0
    maximum: float | None = None
    case: str = ""  # lower | upper: how a value is written before it is checked
    check: Callable[[str], str] | None = None  # returns what is wrong with a set value, or ""
    aliases: tuple[str, ...] = ()  # former or other names, read when the name is not set
    from_env: bool = True  # False: set by tests' config only, never from the environment

    def shown_default(self) -> str:
        """The default as .env.example writes it."""
        if self.default_doc:
            return self.default_doc
        if self.kind == "flag":
            return "1" if self.default else "0"
        if self.default is None or self.default == "" or self.default == ():
            return "empty"
        return str(self.default)


def setting(kind: str, default: Any, doc: str, **how: Any) -> Any:
    """A dataclass field carrying its declaration (completed with its name by `declarations`)."""
    return dataclasses.field(default=default, repr=not how.get("secret", False),
                             metadata={"declared": Declared("", kind, default, doc, **how)})


def text(default: str, doc: str, **how: Any) -> Any:
    return setting("text", default, doc, **how)


def whole(default: int | None, doc: str, **how: Any) -> Any:
    return setting("whole", default, doc, **how)


def decimal(default: float, doc: str, **how: Any) -> Any:
    return setting("decimal", default, doc, **how)


def flag(default: bool, doc: str, **how: Any) -> Any:
    return setting("flag", default, doc, **how)


def networks(doc: str, **how: Any) -> Any:
    return setting("networks", (), doc, **how)


def declarations(cls: type) -> tuple[Declared, ...]:
    """The declarations of a settings dataclass's fields, in order, named by their variable."""
    return tuple(dataclasses.replace(field.metadata["declared"], name=field.name.upper())
                 for field in dataclasses.fields(cls) if "declared" in field.metadata)


def _shown(item: Declared, raw: str) -> str:
    return f"{item.name} (value not shown: a secret)" if item.secret else f"{item.name}={raw!r}"


def parse(item: Declared, raw: str) -> Any:
    """The typed value of `raw` (a non-empty string from the environment). Raises ConfigError."""
    if item.kind == "text":
        return raw.lower() if item.case == "lower" else raw.upper() if item.case == "upper" else raw
    if item.kind == "flag":
        word = raw.strip().lower()
        if word in TRUE or word in FALSE:
            return word in TRUE
        raise ConfigError(f"{_shown(item, raw)} is not on or off: use one of {', '.join(TRUE + FALSE)}")
    if item.kind == "networks":
        return parse_networks(item.name, raw)
    return _number(item, raw.strip())


def _number(item: Declared, raw: str) -> int | float:
    decimal_kind = item.kind == "decimal"
    value: float | None
    try:
        value = float(raw) if decimal_kind else int(raw) if is_digits(raw) else None
    except ValueError:
        value = None
    in_range = value is not None and item.minimum <= value < float("inf")  # also NaN and infinity
    if value is None or not in_range or (item.maximum is not None and value > item.maximum):
        kind = "a decimal number" if decimal_kind else "a whole number"
        minimum = int(item.minimum) if float(item.minimum).is_integer() else item.minimum
        span = f"of {minimum} or more" if item.maximum is None else f"from {minimum} to {int(item.maximum)}"
        example = item.example if item.default is None else item.default
        raise ConfigError(f"{item.name}={raw!r} is not {kind} {span}; for example {item.name}={example}")
    return value


def parse_networks(name: str, value: str) -> list:
    """Comma-separated CIDRs, e.g. '196.201.214.0/24,127.0.0.1/32'. Raises ConfigError."""
    found = []
    for part in filter(None, (p.strip() for p in value.split(","))):
        try:
            found.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ConfigError(f"{name}: {part!r} is not a network (CIDR, e.g. 196.201.214.0/24)") from None
    return found


def check(item: Declared, value: Any) -> None:
    """Refuse a value outside the declared choices or failing the declared check. Raises ConfigError."""
    if not isinstance(value, str):
        return  # a typed value a test passed in
    if item.choices and value not in item.choices:
        raise ConfigError(f"{_shown(item, value)} is not one of {', '.join(item.choices)}")
    problem = item.check(value) if item.check and value else ""
    if problem:
        raise ConfigError(f"{_shown(item, value)}: {problem}")


# --- checks of one value, named in the declaration ---------------------------------------------------

def web_address(value: str) -> str:
    parts = urlparse(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// address with a host, e.g. https://wallet.example.com"
    if parts.path not in ("",) or parts.query or parts.fragment:
        # the reverse proxy (deploy/Caddyfile) would serve only that path: no path, no trailing slash
        return "must be the scheme and host alone, with no path and no trailing slash, e.g. https://wallet.example.com"
    return ""


DATABASE_DRIVERS = ("sqlite", "mysql+pymysql", "mariadb+pymysql")  # what the app has a driver for


def database_address(value: str) -> str:
    import os

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(value)
    except ArgumentError:
        url = None
    if url is None or url.drivername not in DATABASE_DRIVERS:
        return ("must be sqlite:///<file> or mysql+pymysql://<user>:<password>@<host>:3306/<db>?charset=utf8mb4 "
                "(the driver named: sqlite, mysql+pymysql or mariadb+pymysql)")
    folder = os.path.dirname(url.database or "")
    if url.drivername == "sqlite" and os.path.isabs(url.database or "") and not os.path.isdir(folder):
        return f"the folder {folder} of the SQLite file does not exist"
    return ""


def listen_address(value: str) -> str:
    import ipaddress
    import re

    try:
        ipaddress.ip_address(value)
        return ""
    except ValueError:
        pass
    if value == "localhost" or re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?"
                                            r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*", value):
        import socket

        try:
            socket.getaddrinfo(value, None)
            return ""
        except OSError:
            return "is not an address this machine can listen on (0.0.0.0, 127.0.0.1 or one of its names)"
    return "must be an IP address or a host name, e.g. 127.0.0.1 or 0.0.0.0"


def long_secret(value: str) -> str:
    if len(value) < 16:
        return ("must be 16 or more random characters: "
                "python -c \"import secrets; print(secrets.token_urlsafe(32))\"")
    return ""


def phone_region(value: str) -> str:
    import phonenumbers

    if value not in phonenumbers.SUPPORTED_REGIONS:
        return "must be a region code phone numbers are known for (ISO 3166, upper case), e.g. KE, TZ, UG"
    return ""
