"""Fixtures: a fresh database per test (SQLite file, or TEST_DATABASE_URL such as MariaDB), the
Flask app and client, and `Dialer`, which posts Africa's Talking form fields with the
accumulated `text` and checks every reply against the USSD rules."""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import os
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from app import create_app
from database import Database
from helpers.wallet import demo
from helpers.wallet.ledger import journal
from helpers.wallet.reports import books
from helpers.wallet.rules import policy
from helpers.web import demo as demo_routes
from helpers.infra.i18n import CATALOGS, gsm7_length
from models import SmsOutbox, Transaction, User
from tests.servers import Gunicorn

TEST_PEPPER = "test-pepper-0123456789"
_LOCAL_NAMES = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}  # noqa: S104 - names, not a bind


@pytest.fixture(autouse=True)
def no_name_lookups(monkeypatch):
    """Tests talk to loopback only: a typed Lightning address at a made-up domain (the fuzz tests
    type plenty) must not become a DNS query. Names resolve as if they did not exist."""
    import socket

    real = socket.getaddrinfo

    def local_only(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name in _LOCAL_NAMES or name.replace(".", "").isdigit() or ":" in name:
            return real(host, *args, **kwargs)
        raise socket.gaierror(socket.EAI_NONAME, f"no DNS in tests: {name}")

    monkeypatch.setattr(socket, "getaddrinfo", local_only)
_session_ids = itertools.count(1)


@pytest.fixture
def app_overrides():
    """Extra settings for the `app` fixture; a test module overrides this fixture."""
    return {}


def configure(target, **changes) -> None:
    """Change settings of a running app (or its Services) for one test: the settings are frozen, so
    the app gets a new object with these names (lower case: rate_limits=True) changed."""
    svc = target.extensions["wallet"] if hasattr(target, "extensions") else target
    svc.settings = dataclasses.replace(svc.settings, **changes)


@pytest.fixture(scope="session")
def seeded_sqlite(tmp_path_factory) -> Path:
    """A SQLite file with the schema and the demo users, made once: each test starts from a copy
    (a fresh schema and seed cost each test ~40 ms)."""
    path = tmp_path_factory.mktemp("template") / "seeded.db"
    db = Database(f"sqlite:///{path}")
    db.create_schema()
    demo.seed_demo(db)
    db.dispose()  # the last connection's close checkpoints the log into the file
    return path


@pytest.fixture
def app(tmp_path, monkeypatch, app_overrides, seeded_sqlite):
    for name in ("DATABASE_URL", "LIGHTNING_BACKEND", "LIGHTNING_API_TYPE", "MPESA_PROVIDER",
                 "AFRICASTALKING_USERNAME", "AFRICASTALKING_API_KEY", "APP_ENV", "DEMO_MODE"):
        monkeypatch.delenv(name, raising=False)
    url = os.environ.get("TEST_DATABASE_URL") or f"sqlite:///{tmp_path}/test.db"
    copied = url.startswith("sqlite:///") and "DATABASE_URL" not in app_overrides
    if copied:
        for suffix in ("", "-wal"):
            if Path(f"{seeded_sqlite}{suffix}").exists():
                shutil.copyfile(f"{seeded_sqlite}{suffix}", f"{tmp_path}/test.db{suffix}")
    app = create_app({
        "TESTING": True,
        "DATABASE_URL": url,
        "AUTO_CREATE_SCHEMA": False,
        "DEMO_MODE": False,
        "SMS_AUTO_FLUSH": False,
        "PIN_PEPPER": TEST_PEPPER,
        "RATE_LIMITS": False,  # flows type faster than people; tests/unit/test_security.py turns them on
        "INVOICE_POLL_S": 0,  # tests poll explicitly
        "WRITE_BEHIND_S": 0,  # every row written at once; tests of the write-behind set their own
        **app_overrides,
    })
    db = app.extensions["wallet"].db
    if not copied:
        db.drop_schema()
        db.create_schema()
        demo.seed_demo(db)
    configure(app, demo_mode=True)  # after the schema exists: create_app would seed before it
    app.register_blueprint(demo_routes.bp)  # as create_app does in demo mode
    yield app
    app.extensions["request_counter"].close()
    app.extensions["wallet"].openings.close()
    db.remove_session()  # an open read transaction would hold MySQL's metadata locks
    with db.read() as s:
        assert journal.check(s) == [], "the journal does not prove the balances after the test"
        twice = [paid for paid in books.settled_lightning_out(s) if len(paid.references) > 1]
        assert twice == [], "one invoice was paid out more than once"
    if not copied:
        db.drop_schema()
    db.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def wallet(app):
    return app.extensions["wallet"]


def load_gunicorn_conf(monkeypatch, tmp_path):
    """gunicorn.conf.py as a module, as gunicorn reads it (it makes a metrics folder: a temporary one)."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    spec = importlib.util.spec_from_file_location("gunicorn_conf", Path(__file__).parent.parent / "gunicorn.conf.py")
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    return conf


def check_reply(body: str) -> None:
    assert body[:4] in ("CON ", "END "), body
    screen = body[4:]
    length = gsm7_length(screen)
    assert length is not None, f"non GSM-7 character in {screen!r}"
    assert length <= 160, f"{length} characters: {screen!r}"


class Dialer:
    """One phone dialling the shortcode: `start()` opens a session, `press(x)` answers."""

    def __init__(self, client, phone: str) -> None:
        self.client = client
        self.phone = phone
        self.session_id = ""
        self.inputs: list[str] = []
        self.reply = ""

    def post(self, text: str, session_id: str | None = None) -> str:
        response = self.client.post("/ussd", data={
            "sessionId": session_id or self.session_id, "serviceCode": "*384*123#",
            "phoneNumber": self.phone, "networkCode": "63902", "text": text,
        })
        assert response.status_code == 200
        assert response.mimetype == "text/plain"
        body = response.get_data(as_text=True)
        check_reply(body)
        return body

    def start(self) -> str:
        self.session_id = f"ATUid_test_{next(_session_ids)}"
        self.inputs = []
        self.reply = self.post("")
        return self.reply

    def press(self, *answers: str) -> str:
        for answer in answers:
            self.inputs.append(answer)
            self.reply = self.post("*".join(self.inputs))
        return self.reply

    def run(self, *answers: str) -> str:
        """A whole new session: dial, then answer each prompt in turn. An offer to continue an
        earlier session of this phone that is still open (tests open several at once, which a
        real phone cannot) is declined first; tests/unit/test_everyday.py takes it up."""
        self.start()
        if self.reply.startswith(tuple("CON " + catalog["resume"].split("\n")[0] for catalog in CATALOGS.values())):
            self.press("2")
        return self.press(*answers)

    @property
    def text(self) -> str:
        return "*".join(self.inputs)


DEMO = [phone for phone, _ in demo.DEMO_USERS]
# Tests run on the fixed price of atoms.metta (no PRICE_SOURCES): the conversions at it.
FIXED_PRICE = policy().value("fixed-kes-per-btc")
KES_MIN, KES_MAX = policy().kes_bounds()  # round numbers, whatever the price
VALID_MIN = -(-policy().value("quote-valid-s") // 60)  # how long a quote holds, as the screens say it


def credit_sats(kes: int) -> int:
    """Sats a top-up of `kes` buys at the fixed price."""
    return policy().kes_to_sats_credit(kes, FIXED_PRICE)


def debit_sats(kes: int) -> int:
    """Sats a withdrawal of `kes` costs at the fixed price, before its fee."""
    return policy().kes_to_sats_debit(kes, FIXED_PRICE)


def withdraw_terms(kes: int) -> tuple[int, int, int, int]:
    """(kes, sats, fee, price): what a withdrawal's quote at the fixed price holds."""
    sats = debit_sats(kes)
    return kes, sats, policy().fee_sats("mpesa-withdraw", sats), FIXED_PRICE


def kes_worth(sats: int) -> int:
    return policy().sats_to_kes(sats, FIXED_PRICE)
PIN = "4821"


@pytest.fixture
def dial(client):
    def make(phone: str) -> Dialer:
        return Dialer(client, phone)
    return make


@pytest.fixture
def alice(dial):
    """The first demo user, with PIN set."""
    phone = dial(DEMO[0])
    phone.run(PIN, PIN)
    return phone


@pytest.fixture
def bob(dial):
    phone = dial(DEMO[1])
    phone.run(PIN, PIN)
    return phone


def movements():
    """The movements (not the entries that post or void them), to be narrowed with .where()."""
    return select(Transaction).where(Transaction.follows_id.is_(None))


def balance(wallet, phone: str) -> int:
    with wallet.db.read() as s:
        return s.scalar(select(User.balance_sats).where(User.phone == phone))


def snapshot(wallet) -> tuple:
    """Everything money-related, to show that a refused input changed nothing."""
    from models import Invoice, PaymentRequest, Transaction

    with wallet.db.read() as s:
        return (
            tuple(s.execute(select(User.phone, User.balance_sats).order_by(User.id)).all()),
            s.query(Transaction).count(),
            s.query(Invoice).count(),
            s.query(PaymentRequest).count(),
        )


def outbox(wallet, phone: str) -> list[str]:
    with wallet.db.read() as s:
        return list(s.scalars(select(SmsOutbox.message).where(SmsOutbox.phone == phone).order_by(SmsOutbox.id)))


@pytest.fixture
def servers(app, wallet, tmp_path):
    """One gunicorn with 2 workers; on a server database, a second instance on the same database,
    and on a Galera cluster (GALERA_URLS, scripts/galera_local.sh) each instance on its own node."""
    count = 1 if wallet.db.is_sqlite else 2
    nodes = os.environ.get("GALERA_URLS", "").split() or [wallet.db.url]
    started = [Gunicorn(nodes[n % len(nodes)], TEST_PEPPER, log_path=tmp_path / f"gunicorn{n}.log")
               for n in range(count)]
    yield started
    for server in started:
        server.stop()


# Unit tests that wait in real time (callbacks delivered after a delay, payment timeouts, a fuzzer
# posting thousands of requests): slow, so `make test-fast` leaves them out; `make test` runs them.
_SLOW_UNIT_MODULES = {"test_daraja", "test_security", "test_lightning_send", "test_lnd"}


@pytest.fixture
def payee():
    """A Lightning address's server (LUD-16/06) on 127.0.0.1, stopped after the test."""
    from tests.fakes.fake_lnurl import FakeLnurl
    server = FakeLnurl()
    yield server
    server.stop()


@pytest.fixture
def insecure(wallet):
    """The wallet, allowed to reach a payee's server over plain http (127.0.0.1): tests only."""
    configure(wallet, lnurl_allow_insecure=True)
    return wallet


def pytest_collection_modifyitems(config, items):
    """Everything under tests/integration/ starts real servers: marked slow, as are the unit
    modules above."""
    for item in items:
        path = item.path
        if path.parent.name == "integration" or path.stem in _SLOW_UNIT_MODULES:
            item.add_marker(pytest.mark.slow)


@dataclasses.dataclass(frozen=True)
class MpesaRequestView:
    """An M-Pesa request as the M-Pesa tests read it: an STK push's mpesa_requests row, or a
    payout's (B2C, B2B) payouts row under the names the tests used before payouts had a table."""

    kind: str
    reference: str
    status: str  # pending, settled, failed
    amount_kes: int
    amount_sats: int
    phone: str
    originator_conversation_id: str | None
    conversation_id: str | None
    receipt: str | None
    result_code: str | None
    queries: int
    transaction_id: int | None


def mpesa_request_of(wallet, kind: str):
    """The newest M-Pesa request of `kind`: an STK push's row, or a payout's (b2c, b2b) view."""
    from models import MPESA_B2B_RAIL, MPESA_B2C_RAIL, POSTED, VOIDED, MpesaRequest, Payout

    with wallet.db.read() as s:
        if kind == "stk":
            return s.scalars(select(MpesaRequest).where(MpesaRequest.kind == kind)
                             .order_by(MpesaRequest.id.desc())).first()
        rail = MPESA_B2C_RAIL if kind == "b2c" else MPESA_B2B_RAIL
        payout = s.scalars(select(Payout).where(Payout.rail == rail).order_by(Payout.id.desc())).first()
        if payout is None:
            return None
        payer = s.get_one(User, payout.user_id).phone
    status = {POSTED: "settled", VOIDED: "failed"}.get(payout.state, "pending")
    return MpesaRequestView(kind, payout.reference, status, payout.amount_kes or 0, payout.amount_sats,
                            payout.destination if kind == "b2c" else payer, payout.rail_key, payout.rail_ref,
                            payout.receipt, (payout.result_desc or "").split(" ")[0] or None, payout.queries,
                            payout.transaction_id)


def reserve_withdrawal(wallet, policy_, user, kes: int, sats: int, fee: int, price: int, phone: str, key: str):
    """A B2C payout reserved with its payout row, as the withdrawal use case reserves it, under
    `policy_` (the tests' own policy where they bring one); the payout's reference is the
    movement's."""
    from helpers.wallet.customers import tiers
    from helpers.wallet.ledger import movements
    from helpers.wallet.errors import PolicyDenied
    from helpers.wallet.payouts import books as payout_books
    from models import MPESA_B2C_RAIL

    rail = wallet.rail(MPESA_B2C_RAIL)

    def work():
        with wallet.db.write() as s:
            def check(after: int) -> int:
                def decide(today: int) -> None:
                    decision = policy_.withdraw(kes, after + sats + fee, today, price)
                    if not decision.allowed:
                        raise PolicyDenied(decision.reason or "denied")
                return movements.check_out(s, policy_, user.id, tiers.caps(policy_, user.tier, price), sats, decide)
            return payout_books.reserve(s, rail, user.id, sats, fee, phone, key, check=check, amount_kes=kes,
                                        counterparty=phone, description=f"M-Pesa withdrawal KES {kes}")
    return movements.run_once(wallet.db, key, work)


def settle_withdrawal(wallet, receipt, mpesa_receipt: str) -> bool:
    """M-Pesa's word that a reserved withdrawal was paid, through the payout machine."""
    from helpers.infra.rail import Answer
    from helpers.wallet.payouts import machine
    from models import MPESA_B2C_RAIL

    return machine.finish(wallet.db, wallet.rail(MPESA_B2C_RAIL), receipt.reference,
                          Answer.paid(receipt=mpesa_receipt, reason="test"))


def refund_withdrawal(wallet, receipt) -> bool:
    """M-Pesa's word that a reserved withdrawal failed, through the payout machine."""
    from helpers.infra.rail import Answer
    from helpers.wallet.payouts import machine
    from models import MPESA_B2C_RAIL

    return machine.finish(wallet.db, wallet.rail(MPESA_B2C_RAIL), receipt.reference, Answer.failed("test"))
