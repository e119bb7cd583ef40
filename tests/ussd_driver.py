"""The HTTP side of test_ussd.py: a client that posts like Africa's Talking and checks every reply,
a dialer that walks the menu screen by screen, the expected screens from the catalog and the
policy, and the shared steps of the flows (balances, the PIN step, registering a user)."""

from __future__ import annotations

import argparse
import random
import re
import secrets
import string
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
try:
    from helpers.infra.i18n import receipt_text, t
    try:
        from helpers.wallet.customers import tiers
    except ImportError:  # a server from before the identity tiers
        tiers = None  # type: ignore[assignment]
    from helpers.wallet.rules import policy
except ImportError as _exc:  # pragma: no cover - depends on where it is run from
    print(f"cannot import the catalog and the policy ({_exc}); run this from the project folder "
          "with its virtualenv, e.g. `.venv/bin/python test_ussd.py`", file=sys.stderr)
    sys.exit(2)

try:
    from helpers.infra.i18n import gsm7_length
except ImportError:  # an older catalog without it: the plain length check still runs
    gsm7_length = None

try:  # the fake Daraja's outcome table (MPESA_PROVIDER=daraja runs against tests/fakes/fake_daraja.py)
    from tests.fakes.fake_daraja import kes_for
except ImportError:
    kes_for = None

try:
    import phonenumbers
    import phonenumbers.carrier
except ImportError:  # optional: the numbers are valid by construction most of the time
    phonenumbers = None

DEFAULT_URL = "http://localhost:5000"
DEFAULT_SERVICE_CODE = "*384*123#"
NETWORK_CODE = "63902"  # Safaricom
MAX_SCREEN = 160
TIMEOUT_S = 20
LNBITS_CREDIT_WAIT_S = 30  # a real node's payment reaches us by webhook or the next poll
SETTLE_WAIT_S = 20  # how long an M-Pesa callback may take to arrive (daraja)


class Failure(AssertionError):
    """A check failed; the message says what was sent, what came back and what was expected."""


class RateLimited(Failure):
    """The server refused a dial with its abuse limits (RATE_LIMITS=1): the flows cannot go on,
    and that says nothing about the flows."""


def _too_many_replies() -> set[str]:
    from helpers.infra.i18n import CATALOGS

    return {"END " + t(lang, "error.too-many") for lang in CATALOGS}


RATE_LIMITED_ADVICE = (
    "The server at {url} has its abuse limits on (RATE_LIMITS=1, as production requires): it answered "
    "{reply!r} after {count} requests. The flows dial one phone many times a minute, more than "
    "atoms.metta's requests-per-phone allows, so they cannot run against it. Run them against a server "
    "started with RATE_LIMITS=0 (the embedded default: `make run`).")


# ------------------------------------------------------------------ catalog helpers
def num(text: str) -> int:
    """A number as the catalog shows it ("1,234") back to an int."""
    cleaned = text.replace(",", "").strip()
    if not cleaned.isdigit():
        raise Failure(f"expected a number, got {text!r}")
    return int(cleaned)


def screen_pattern(lang: str, key: str, **known: object) -> re.Pattern[str]:
    """A regex for catalog message `key`: known values formatted by the catalog itself, every
    other placeholder a named group (a repeated one must repeat the same value)."""
    values: dict[str, object] = dict(known)
    while True:
        try:
            text = t(lang, key, **values)
            break
        except KeyError as exc:
            name = exc.args[0]
            if name in values:
                raise
            values[name] = f"\x01{name}\x01"
    parts = re.split("\x01(\\w+)\x01", text)
    regex, seen = [], set()
    for index, part in enumerate(parts):
        if index % 2 == 0:
            regex.append(re.escape(part))
        elif part in seen:
            regex.append(f"(?P={part})")
        else:
            seen.add(part)
            regex.append(f"(?P<{part}>.*?)")
    return re.compile("".join(regex), re.S)


def lines(*parts: str) -> str:
    """A screen made of a note and a prompt, as the menu joins them."""
    return "\n".join(parts)


ADDRESS_DOMAIN = [""]  # the server's Lightning address domain, from GET /status

# ------------------------------------------------------------------ phones, PINs, codes
RESUME_OFFERS = ("Continue where you stopped?", "Endelea ulipoishia?")


def random_kenyan_mobile(taken: set[str]) -> str:
    """A new valid Kenyan mobile number of Safaricom's, in E.164 (+2547XXXXXXXX)."""
    for _ in range(1000):
        phone = "+2547" + "".join(random.choice(string.digits) for _ in range(8))
        if phone in taken:
            continue
        if phonenumbers is not None:
            parsed = phonenumbers.parse(phone, "KE")
            if not phonenumbers.is_valid_number(parsed) or phonenumbers.number_type(parsed) not in (
                phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE
            ):
                continue
            if phonenumbers.carrier.name_for_number(parsed, "en") != "Safaricom":
                continue  # users withdraw to their own number: one M-Pesa can pay
        taken.add(phone)
        return phone
    raise RuntimeError("could not make a valid Kenyan mobile number")


def local_form(e164: str) -> str:
    """How a person types it on a keypad: 07XXXXXXXX."""
    return "0" + e164[4:]


def strong_pin(avoid: set[str] = frozenset()) -> str:
    digits = policy().value("pin-length")
    for _ in range(1000):
        pin = "".join(random.choice(string.digits) for _ in range(digits))
        if pin not in avoid and policy().pin(pin).allowed:
            return pin
    raise RuntimeError("no strong PIN found")


def weak_pin(kind: str) -> str:
    """A PIN the policy must refuse: all the same digit, or ascending digits."""
    digits = policy().value("pin-length")
    if kind == "same":
        pin = random.choice(string.digits) * digits
    else:
        start = random.randint(0, 10 - digits)
        pin = "".join(str(start + i) for i in range(digits))
    decision = policy().pin(pin)
    if decision.allowed or decision.reason != "weak-pin":
        raise Failure(f"precondition: the policy should call PIN {pin} weak, it answered {decision}")
    return pin


def mpesa_code() -> str:
    return "".join(random.choice(string.ascii_uppercase) for _ in range(10))


# ------------------------------------------------------------------ HTTP and sessions
@dataclass
class Reply:
    kind: str  # "CON" or "END"
    screen: str
    text: str  # the `text` field that was sent


class Client:
    def __init__(self, base_url: str) -> None:
        self.base = base_url.rstrip("/")
        self.http = requests.Session()
        self.requests = 0
        self.service_code = DEFAULT_SERVICE_CODE

    def ussd(self, session_id: str, phone: str, text: str) -> Reply:
        form = {"sessionId": session_id, "serviceCode": self.service_code, "phoneNumber": phone,
                "networkCode": NETWORK_CODE, "text": text}
        self.requests += 1
        try:
            response = self.http.post(self.base + "/ussd", data=form, timeout=TIMEOUT_S)
        except requests.RequestException as exc:
            raise Failure(f"POST /ussd text={text!r}: {type(exc).__name__}: {exc}") from exc
        body = response.text
        if response.status_code != 200:
            raise Failure(f"POST /ussd text={text!r}: HTTP {response.status_code}, body {body[:200]!r}")
        if not (body.startswith("CON ") or body.startswith("END ")):
            raise Failure(f"POST /ussd text={text!r}: reply does not start with 'CON ' or 'END ': {body[:200]!r}")
        if body in _too_many_replies():
            raise RateLimited(RATE_LIMITED_ADVICE.format(url=self.base, reply=body, count=self.requests))
        screen = body[4:]
        if len(screen) > MAX_SCREEN:
            raise Failure(f"POST /ussd text={text!r}: screen is {len(screen)} characters (max {MAX_SCREEN}): "
                          f"{screen!r}")
        if gsm7_length is not None:
            septets = gsm7_length(screen)
            if septets is None or septets > MAX_SCREEN:
                raise Failure(f"POST /ussd text={text!r}: screen is not GSM-7 within {MAX_SCREEN} septets "
                              f"({septets}): {screen!r}")
        return Reply(body[:3], screen, text)

    def get(self, path: str) -> requests.Response:
        self.requests += 1
        try:
            return self.http.get(self.base + path, timeout=TIMEOUT_S)
        except requests.RequestException as exc:
            raise Failure(f"GET {path}: {type(exc).__name__}: {exc}") from exc

    def post(self, path: str, data: dict[str, str]) -> requests.Response:
        self.requests += 1
        try:
            return self.http.post(self.base + path, data=data, timeout=TIMEOUT_S)
        except requests.RequestException as exc:
            raise Failure(f"POST {path}: {type(exc).__name__}: {exc}") from exc


@dataclass
class User:
    name: str
    phone: str
    pin: str = ""
    lang: str = "en"
    balance: int = 0  # what the server must show
    sent: int = 0  # sats out today (fees excluded): what the day's limit counts
    tier: int = 0  # identity tier (issue 34): a new customer has the phone only
    open_requests: int = 0  # payment requests addressed to this user, still open
    history: list[tuple[str, int, str]] = field(default_factory=list)  # (sign, sats, kind), newest first


class Dial:
    """One USSD session of one phone: `open()` sends text "", each `send(token)` adds a token."""

    def __init__(self, client: Client, user: User) -> None:
        self.client = client
        self.user = user
        self.session_id = "ATUid_" + secrets.token_hex(16)
        self.tokens: list[str] = []
        self.opened = False
        self.ended = False
        self.last: Reply | None = None

    @property
    def text(self) -> str:
        return "*".join(self.tokens)

    def _post(self) -> Reply:
        if self.ended:
            raise Failure(f"script error: input after END in session {self.session_id}")
        reply = self.client.ussd(self.session_id, self.user.phone, self.text)
        self.ended = reply.kind == "END"
        self.last = reply
        return reply

    def open(self) -> Reply:
        """Dial. An offer to continue a session this script left mid-flow is declined (the script
        starts over); its "2" stays the first token of this session's path."""
        self.opened = True
        reply = self._post()
        if reply.kind == "CON" and reply.screen.startswith(RESUME_OFFERS):
            self.tokens.append("2")
            reply = self._post()
        return reply

    def send(self, token: str) -> Reply:
        if not self.opened:
            raise Failure("script error: send() before open()")
        self.tokens.append(token)
        return self._post()

    def repost(self) -> Reply:
        """Send the same request again, as Africa's Talking does when our answer is late."""
        self.ended = False
        return self._post()

    # -------------------------------------------------------------- checks
    def _where(self, reply: Reply) -> str:
        return f"[{self.user.name} {self.user.phone} text={reply.text!r}]"

    def expect(self, reply: Reply, kind: str, screen: str) -> Reply:
        if reply.kind != kind or reply.screen != screen:
            raise Failure(f"{self._where(reply)}\n    got:      {reply.kind} {reply.screen!r}\n"
                          f"    expected: {kind} {screen!r}")
        return reply

    def expect_match(self, reply: Reply, want: str, key: str, /, left_today: int | None = None,
                     **known: object) -> dict[str, str]:
        """The screen must be catalog message `key` with the `known` values (and, with
        `left_today`, the receipt's line of what is left of the day); returns the others."""
        pattern = screen_pattern(self.user.lang, key, **known)
        if left_today is not None:
            pattern = re.compile(pattern.pattern + re.escape(" " + self.tx("left.today", left=left_today)), re.S)
        found = pattern.fullmatch(reply.screen)
        if reply.kind != want or found is None:
            raise Failure(f"{self._where(reply)}\n    got:      {reply.kind} {reply.screen!r}\n"
                          f"    expected: {want} matching catalog {self.user.lang}:{key} {pattern.pattern!r}")
        return found.groupdict()

    # shortcuts for screens of this user's language
    def receipt(self, key: str, left_today: int, **values: object) -> str:
        return receipt_text(self.user.lang, key, left_today, **values)

    def tx(self, key: str, **values: object) -> str:
        values.setdefault("address", f"{self.user.phone.lstrip('+')}@{ADDRESS_DOMAIN[0]}")
        return t(self.user.lang, key, **values)

    def main_screen(self) -> str:
        requests_line = self.tx("main.requests", count=self.user.open_requests) if self.user.open_requests else ""
        return self.tx("main", balance=self.user.balance, requests=requests_line)


# ------------------------------------------------------------------ the run
@dataclass
class Outcome:
    name: str
    status: str  # PASS, FAIL, SKIP
    detail: str = ""
    notes: list[str] = field(default_factory=list)
    requests: int = 0


class RunBase:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.p = policy()
        self.taken: set[str] = set()
        self.demo = False
        self.lnbits_payer: tuple[str, str] | None = None  # (URL, admin key) of an outside LNbits wallet
        self.users: dict[str, User] = {}
        self.notes: list[str] = []
        self.mpesa = "simulated"
        self.airtime = "simulated"
        # amounts, all derived from the policy
        self.min_sats = self.p.value("payment-min-sats")
        self.max_sats = self.p.value("payment-max-sats")
        # the server's price (GET /status; the fixed price of atoms.metta until it says otherwise)
        self.price, self.price_source = self.p.value("fixed-kes-per-btc"), "fixed"
        self.kes_min, self.kes_max = self.p.kes_bounds()
        self.valid_min = -(-self.p.value("quote-valid-s") // 60)
        self.pin_digits = self.p.value("pin-length")
        self.pin_attempts = self.p.value("pin-max-attempts")
        self.topup_kes = min(self.kes_max, self.kes_min * 20 + 1)  # not a multiple of the rate: rounding shows
        self.send_b = 5 * self.min_sats
        self.send_c = self.min_sats
        self.receive_sats = 2 * self.min_sats + 1
        self.request_sats = self.min_sats + self.min_sats // 2
        self.withdraw_kes = self.kes_min + 50

    def set_price(self, announced: dict | None) -> None:
        """The price the server converts at, as /status announces it: every KES figure follows."""
        if not announced:
            raise Failure("the server has no price: KES operations are stopped (GET /status price is null)")
        self.price, self.price_source = int(announced["kes_per_btc"]), str(announced["source"])
        self.kes_min, self.kes_max = self.p.kes_bounds()
        self.topup_kes = min(self.kes_max, self.kes_min * 20 + 1)
        self.withdraw_kes = self.kes_min + 50

    def account_screen(self, d: Dial, balance: int) -> str:
        worth = self.p.sats_to_kes(balance, self.price)
        kes = (d.tx("account.kes", kes=worth) if self.price_source == "fixed"
               else d.tx("account.kes-age", kes=worth, age=0))  # a feed price just refreshed
        return d.tx("account", balance=balance, kes=kes)

    def user(self, name: str) -> User:
        if name not in self.users:
            self.users[name] = User(name, random_kenyan_mobile(self.taken))
        return self.users[name]

    def dial(self, user: User) -> Dial:
        return Dial(self.client, user)

    # -------------------------------------------------------------- shared steps
    def left_today(self, user: User) -> int:
        """What the server's receipts say `user` may still send today: the policy's daily limit and
        the caps of the user's tier (a new customer: tier 0) at the server's price, this run's sends
        being the day's and the month's."""
        left = self.p.left_today(user.sent)
        if tiers is not None:
            left = min(left, tiers.left(tiers.caps(self.p, user.tier, self.price), user.sent, user.sent))
        return left

    def check_balance(self, user: User) -> int:
        """Dial, read 'Balance: N sats' from the main menu, compare with the expected balance and
        the whole screen with the catalog; hang up with 0."""
        d = self.dial(user)
        reply = d.open()
        found = d.expect_match(reply, "CON", "main")
        shown = num(found["balance"])
        if shown != user.balance:
            raise Failure(f"[{user.name} {user.phone}] main menu shows balance {shown:,} sats, expected "
                          f"{user.balance:,}: {reply.screen!r}")
        d.expect(reply, "CON", d.main_screen())
        d.expect(d.send("0"), "END", d.tx("exit"))
        return shown

    def read_balance(self, user: User) -> int:
        d = self.dial(user)
        shown = num(d.expect_match(d.open(), "CON", "main")["balance"])
        d.send("0")
        return shown

    def wait_balance(self, user: User, what: str, wait_s: float = SETTLE_WAIT_S) -> None:
        """A callback (M-Pesa, a Lightning node) moves money after the reply: wait until the main
        menu shows the expected balance (never more), then check the whole screen."""
        deadline = time.monotonic() + wait_s
        shown = self.read_balance(user)
        while shown != user.balance and time.monotonic() < deadline:
            if shown > user.balance:
                break
            time.sleep(0.3)
            shown = self.read_balance(user)
        if shown != user.balance:
            raise Failure(f"[{user.name} {user.phone}] after {what}: balance {shown:,} sats, expected "
                          f"{user.balance:,} within {wait_s}s")
        self.check_balance(user)

    def wait_settled(self, user: User, what: str) -> None:
        """Wait until the newest history line is no longer pending (no '*' after its date)."""
        deadline = time.monotonic() + SETTLE_WAIT_S
        while True:
            d = self.dial(user)
            d.open()
            d.send("6")
            found = d.expect_match(d.send("1"), "CON", "history")
            newest = next((line for line in found["lines"].split("\n") if line), "")
            if newest and not newest.endswith("*"):
                return
            if time.monotonic() > deadline:
                raise Failure(f"[{user.name} {user.phone}] {what} still pending after {SETTLE_WAIT_S}s: {newest!r}")
            time.sleep(0.3)

    def pin_step(self, d: Dial, prompt: str, wrong_first: bool) -> None:
        """At a PIN screen showing `prompt`: optionally a wrong PIN (re-prompt with attempts left)."""
        if wrong_first:
            wrong = strong_pin({d.user.pin})
            d.expect(d.send(wrong), "CON", lines(d.tx("pin.wrong", left=self.pin_attempts - 1), prompt))

    def register(self, user: User, weak_kind: str, then: Callable[[Dial], None] | None = None) -> None:
        d = self.dial(user)
        create = d.tx("pin.create", digits=self.pin_digits)
        d.expect(d.open(), "CON", create)
        weak = weak_pin(weak_kind)
        d.expect(d.send(weak), "CON", lines(d.tx("deny.weak-pin"), create))
        d.expect(d.send("12"), "CON", lines(d.tx("pin.format", digits=self.pin_digits), create))
        user.pin = strong_pin()
        d.expect(d.send(user.pin), "CON", d.tx("pin.repeat"))
        d.expect(d.send(strong_pin({user.pin})), "CON", lines(d.tx("pin.mismatch"), create))
        d.expect(d.send(user.pin), "CON", d.tx("pin.repeat"))
        d.expect(d.send(user.pin), "CON", lines(d.tx("pin.set"), d.main_screen()))
        if then is not None:
            then(d)
        else:
            d.expect(d.send("0"), "END", d.tx("exit"))

    # -------------------------------------------------------------- flows
    def flow_status(self, out: Outcome) -> None:
        response = self.client.get("/status")
        try:
            body = response.json()
        except ValueError as exc:
            raise Failure(f"GET /status: not JSON (HTTP {response.status_code}): {response.text[:200]!r}") from exc
        if response.status_code != 200 or body.get("status") != "ok":
            raise Failure(f"GET /status: HTTP {response.status_code}, status={body.get('status')!r}, expected 200 'ok'")
        ADDRESS_DOMAIN[0] = body.get("lightning_address_domain", "")
        self.mpesa = body.get("mpesa", "simulated")
        self.airtime = body.get("airtime", "simulated")
        self.set_price(body.get("price"))
        out.notes.append(f"price {self.price:,} KES/BTC ({self.price_source})")
        if self.mpesa == "daraja" and kes_for is None:
            raise Failure("the server runs MPESA_PROVIDER=daraja, but tests/fakes/fake_daraja.py cannot be imported")
        out.notes.append(f"M-Pesa provider {self.mpesa}")
        demo = self.client.get("/test")
        self.demo = demo.status_code == 200
        if self.demo:
            info = demo.json()
            self.taken.add(str(info.get("phone", "")))  # never pick a demo user's number
            self.client.service_code = info.get("service_code") or DEFAULT_SERVICE_CODE
            out.notes.append(f"demo mode on, service code {self.client.service_code}")
        else:
            out.notes.append(f"demo mode off (GET /test -> {demo.status_code}): invoice payment will be skipped")


def run_flows(run_class: type, flows: list[tuple[str, str, list[str]]], argv: list[str] | None = None) -> int:
    """test_ussd.py's command line: every flow of `flows` in order, each skipped when a flow it
    needs did not pass; prints each outcome and a summary. Exit status as test_ussd.py says."""
    parser = argparse.ArgumentParser(description="End-to-end USSD flows against a running server.")
    parser.add_argument("url", nargs="?", default=DEFAULT_URL, help=f"server base URL (default {DEFAULT_URL})")
    parser.add_argument("--seed", type=int, help="seed for the random numbers, PINs and codes (default: random)")
    parser.add_argument("--lnbits-payer", nargs=2, metavar=("URL", "ADMIN_KEY"),
                        help="with LIGHTNING_BACKEND=lnbits: an outside LNbits wallet that pays the receive "
                             "flow's invoice (the server must poll or get LNbits' webhook)")
    args = parser.parse_args(argv)
    if args.seed is not None:
        random.seed(args.seed)

    client = Client(args.url)
    try:
        client.http.get(client.base + "/status", timeout=TIMEOUT_S)
    except requests.RequestException as exc:
        print(f"ERROR: cannot reach the server at {client.base} ({type(exc).__name__}). "
              "Is it running? Start it with `python app.py` (or pass its URL).", file=sys.stderr)
        return 2

    run = run_class(client)
    run.lnbits_payer = tuple(args.lnbits_payer) if args.lnbits_payer else None
    print(f"USSD end-to-end against {client.base}")
    outcomes: dict[str, Outcome] = {}
    started = time.monotonic()
    limited: RateLimited | None = None
    for method, title, needs in flows:
        out = Outcome(title, "PASS")
        missing = [n for n in needs if outcomes.get(n) is None or outcomes[n].status != "PASS"]
        before = client.requests
        if limited is not None:
            out.status, out.detail = "SKIP", "not run: the server's rate limits are on"
        elif missing:
            out.status, out.detail = "SKIP", "needs " + ", ".join(m.removeprefix("flow_") for m in missing)
        else:
            try:
                getattr(run, method)(out)
            except RateLimited as exc:
                limited = exc
                out.status, out.detail = "SKIP", "stopped: the server's rate limits are on"
            except Failure as exc:
                out.status, out.detail = "FAIL", str(exc)
            except Exception as exc:  # noqa: BLE001 - a script or server surprise: report it, keep going
                out.status, out.detail = "FAIL", f"{type(exc).__name__}: {exc}"
        out.requests = client.requests - before
        outcomes[method] = out
        note = ("  (" + "; ".join(out.notes) + ")") if out.notes else ""
        print(f"{out.status}  {title}  [{out.requests} requests]{note}")
        if out.detail:
            for line in out.detail.splitlines():
                print(f"      {line}")

    passed = sum(o.status == "PASS" for o in outcomes.values())
    failed = sum(o.status == "FAIL" for o in outcomes.values())
    skipped = sum(o.status == "SKIP" for o in outcomes.values())
    print(f"\nSummary: {passed}/{len(outcomes)} flows passed, {failed} failed, {skipped} skipped; "
          f"{client.requests} HTTP requests in {time.monotonic() - started:.1f}s")
    for user in run.users.values():
        print(f"  {user.name} {user.phone} [{user.lang}] balance {user.balance:,} sats")
    if limited is not None:
        print(f"RESULT: NOT RUN\n{limited}", file=sys.stderr)
        return 2
    ok = passed == len(outcomes)
    print("RESULT: " + ("ALL PASSED" if ok else "FAILED"))
    return 0 if ok else 1
