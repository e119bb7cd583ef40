"""Money under real concurrency: the app under gunicorn (several worker processes; on MySQL two
gunicorn instances on one database), many confirmations at the same moment, replays, a worker
killed mid-transfer. Figures are printed (run with -s to see them)."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select, update

from helpers.wallet.ledger import journal, movements
from helpers.infra.i18n import t
from helpers.wallet.rules import policy
from models import Posting, Transaction, User
from tests.conftest import balance, credit_sats, debit_sats, DEMO, KES_MIN, outbox, PIN
from tests.servers import Caller

P = policy()
CONCURRENT = 50


def local(phone: str) -> str:
    return "0" + phone[4:]


def total_balance(wallet) -> int:
    with wallet.db.read() as s:
        return int(s.scalar(select(func.sum(User.balance_sats))))


def fees_settled(wallet) -> int:
    with wallet.db.read() as s:
        return int(s.scalar(select(func.coalesce(func.sum(Transaction.fee_sats), 0))
                            .where(Transaction.status.in_(("settled", "pending")))))


def assert_books_balance(wallet) -> None:
    with wallet.db.read() as s:
        assert journal.check(s) == []
        assert s.scalar(select(func.min(User.balance_sats))) >= 0


def fund(wallet, callers, phone: str, sats: int) -> None:
    """Register `phone` through the server (PIN set), then credit it as an operator would, at the top
    tier (issue 34: these tests are about the policy's own limits, which a lower tier's caps hide)."""
    callers[0].walk(f"register-{phone}", phone, PIN, PIN)
    with wallet.db.write() as s:
        user_id = s.scalar(select(User.id).where(User.phone == phone))
        s.execute(update(User).where(User.id == user_id).values(tier=wallet.policy.value("top-tier")))
        movements.credit_adjustment(s, user_id, sats, "test funding", key=f"fund:{phone}:{sats}")


def prepare(callers, sessions: list[tuple[str, str, list[str]]]) -> None:
    """Walk every session up to its last screen, several at a time."""
    def one(item):
        n, (session_id, phone, inputs) = item
        callers[n % len(callers)].walk(session_id, phone, *inputs)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, enumerate(sessions)))


def fire(callers, requests_: list[tuple[str, str, str]]) -> list[tuple[int, str]]:
    """Post every (session, phone, text) at the same moment; return (status, reply) for each."""
    gate = threading.Barrier(len(requests_))

    def one(item):
        n, (session_id, phone, text) = item
        gate.wait()
        caller = callers[n % len(callers)]
        return caller.post(session_id, phone, caller.path(session_id, text))
    with ThreadPoolExecutor(max_workers=len(requests_)) as pool:
        return list(pool.map(one, enumerate(requests_)))


def test_concurrent_sends_from_one_account_exactly_k_succeed(wallet, servers):
    callers = [Caller(s.url) for s in servers]
    amount = P.value("payment-min-sats")
    fee = P.fee_sats("internal", amount)
    k = 20
    sender, recipient = "+254700100001", DEMO[1]
    fund(wallet, callers, sender, k * (amount + fee) + amount + fee - 1)  # covers exactly k
    total0, fees0 = total_balance(wallet), fees_settled(wallet)
    inputs = ["1", local(recipient), str(amount), "1"]
    sessions = [(f"send-{n}", sender, inputs) for n in range(CONCURRENT)]
    prepare(callers, sessions)
    replies = fire(callers, [(sid, phone, "*".join(inputs + [PIN])) for sid, phone, _ in sessions])
    done_prefix = "END " + t("en", "send.done", amount=amount, phone=recipient, fee=fee, ref="", balance=0).split(
        " Ref")[0]
    refused_prefix = "END " + t("en", "deny.insufficient-balance", balance=0).split(":")[0]
    statuses = {status for status, _ in replies}
    done = sum(r.startswith(done_prefix) for _, r in replies)
    refused = sum(r.startswith(refused_prefix) for _, r in replies)
    print(f"\nFIGURES sends: {len(replies)} concurrent confirmations on {len(servers)} gunicorn instance(s) "
          f"x 2 workers ({wallet.db.engine.dialect.name}): {done} sent, {refused} insufficient balance, "
          f"sender left with {balance(wallet, sender)} sats, system total {total_balance(wallet)} "
          f"(+{fees_settled(wallet) - fees0} fees) vs {total0} before; other replies "
          f"{sorted({r[:40] for _, r in replies if not r.startswith((done_prefix, refused_prefix))})}")
    assert statuses == {200}
    assert (done, refused) == (k, CONCURRENT - k)
    assert balance(wallet, sender) == amount + fee - 1
    assert total_balance(wallet) + fees_settled(wallet) - fees0 == total0
    assert_books_balance(wallet)


def test_concurrent_sends_stop_at_the_daily_limit_exactly(wallet, servers):
    """The daily limit, not the balance, is what runs out: of 50 sends confirmed at once exactly
    limit // amount go through. Each send reads what its sender sent today under the sender's
    row lock, so none can miss a twin that committed while it waited."""
    callers = [Caller(s.url) for s in servers]
    limit = P.value("daily-send-limit-sats")
    amount = max(P.value("payment-min-sats"), min(P.value("payment-max-sats"), limit // 20))
    fee = P.fee_sats("internal", amount)
    k = limit // amount
    assert 0 < k < CONCURRENT
    sender, recipient = "+254700100004", DEMO[1]
    fund(wallet, callers, sender, CONCURRENT * (amount + fee))  # the balance covers every one of them
    inputs = ["1", local(recipient), str(amount), "1"]
    sessions = [(f"limit-{n}", sender, inputs) for n in range(CONCURRENT)]
    prepare(callers, sessions)
    replies = fire(callers, [(sid, phone, "*".join(inputs + [PIN])) for sid, phone, _ in sessions])
    done_prefix = "END " + t("en", "send.done", amount=amount, phone=recipient, fee=fee, ref="", balance=0).split(
        " Ref")[0]
    over = "END " + t("en", "deny.daily-limit", limit=limit)
    done = sum(r.startswith(done_prefix) for _, r in replies)
    refused = sum(r == over for _, r in replies)
    print(f"\nFIGURES daily limit: {len(replies)} concurrent sends of {amount} against a limit of {limit} "
          f"({wallet.db.engine.dialect.name}): {done} sent, {refused} refused at the limit; other replies "
          f"{sorted({r[:40] for _, r in replies if not r.startswith(done_prefix) and r != over})}")
    assert {status for status, _ in replies} == {200}
    assert (done, refused) == (k, CONCURRENT - k)
    with wallet.db.read() as s:
        assert movements.sent_today(s, s.scalar(select(User.id).where(User.phone == sender))) == k * amount
    assert_books_balance(wallet)


def test_crossing_sends_report_the_balance_each_left(wallet, servers):
    """Two people send to each other many times at the same moment. Every receipt (the screen, both
    SMS) tells the balance right after its own movement: walking each one's ledger in the order
    the movements were serialised (row id: each transfer holds both rows' locks, or SQLite's
    single writer, from before its ledger rows to its commit), the running balance after every
    row is the one its receipts quote. On MySQL these balances are not read back after the
    UPDATEs but kept from the locking read (movements._lock_pair)."""
    callers = [Caller(s.url) for s in servers]
    amount = P.value("payment-min-sats")
    fee = P.fee_sats("internal", amount)
    each = 12
    a, b = "+254700300001", "+254700300002"
    for phone in (a, b):
        fund(wallet, callers, phone, each * (amount + fee) * 3)
    sessions = [(f"cross-{n}", *((a, b) if n % 2 else (b, a))) for n in range(2 * each)]
    plans = [(sid, sender, ["1", local(recipient), str(amount), "1"]) for sid, sender, recipient in sessions]
    prepare(callers, plans)
    replies = fire(callers, [(sid, sender, "*".join(inputs + [PIN])) for sid, sender, inputs in plans])
    assert {status for status, _ in replies} == {200}
    by_session = dict(zip([sid for sid, _, _ in plans], [reply for _, reply in replies], strict=True))
    screens = sms = 0
    for me in (a, b):
        with wallet.db.read() as s:  # the customer's postings, oldest first
            lines = list(reversed(journal.statement(s, s.scalar(select(User.id).where(User.phone == me)))))
        messages, running = outbox(wallet, me), 0
        assert [line.kind == "transfer" and line.amount < 0 for line in lines].count(True) == each
        for line in lines:
            running += line.amount
            if line.kind != "transfer":  # the funding
                continue
            if line.amount < 0:
                # each receipt then says what is left of the day: the sends' order decides it
                sent = t("en", "sms.sent", amount=amount, phone=line.counterparty, fee=fee, ref=line.reference,
                         balance=running)
                assert any(message.startswith(sent) for message in messages), sent
                session = next(sid for sid, reply in by_session.items() if line.reference in reply)
                assert by_session[session].startswith("END " + t("en", "send.done", amount=amount,
                                                                 phone=line.counterparty, fee=fee,
                                                                 ref=line.reference, balance=running))
                screens, sms = screens + 1, sms + 1
            else:
                assert t("en", "sms.received", amount=amount, phone=line.counterparty, ref=line.reference,
                         balance=running) in messages
                sms += 1
        assert running == balance(wallet, me)
    print(f"\nFIGURES crossing sends ({wallet.db.engine.dialect.name}): {screens} screens and {sms} SMS quote "
          f"the balance each movement left")
    assert (screens, sms) == (2 * each, 4 * each)
    assert_books_balance(wallet)


def test_concurrent_withdrawals_from_one_account_exactly_k_succeed(wallet, servers):
    callers = [Caller(s.url) for s in servers]
    kes = KES_MIN
    sats = debit_sats(kes)
    fee = P.fee_sats("mpesa-withdraw", sats)
    k = 12
    phone = "+254700100002"
    fund(wallet, callers, phone, k * (sats + fee) + sats + fee - 1)
    before = balance(wallet, phone)
    inputs = ["5", str(kes), "1"]
    sessions = [(f"withdraw-{n}", phone, inputs) for n in range(CONCURRENT)]
    prepare(callers, sessions)
    replies = fire(callers, [(sid, p, "*".join(inputs + [PIN])) for sid, p, _ in sessions])
    done_prefix = "END " + t("en", "withdraw.done", kes=kes, phone=phone, code="", sats=0, fee=0, balance=0).split(
        " M-Pesa")[0]
    done = sum(r.startswith(done_prefix) for _, r in replies)
    refused_prefix = "END " + t("en", "deny.insufficient-balance", balance=0).split(":")[0]
    refused = sum(r.startswith(refused_prefix) for _, r in replies)
    with wallet.db.read() as s:
        rows = s.scalar(select(func.count(Transaction.id)).where(Transaction.type == "withdraw",
                                                                 Transaction.status == "settled"))
    print(f"\nFIGURES withdrawals: {len(replies)} concurrent, {done} paid out, {refused} refused, "
          f"{rows} settled rows, balance {before} -> {balance(wallet, phone)}; other replies "
          f"{sorted({r[:60] for _, r in replies if not r.startswith((done_prefix, refused_prefix))})}")
    assert {status for status, _ in replies} == {200}
    assert (done, refused, rows) == (k, CONCURRENT - k, k)
    assert balance(wallet, phone) == before - k * (sats + fee)
    assert_books_balance(wallet)


def test_one_mpesa_code_from_ten_sessions_at_once_credits_once(wallet, servers):
    callers = [Caller(s.url) for s in servers]
    kes = KES_MIN * 2
    phones = [f"+25470010010{n}" for n in range(5)]
    for phone in phones:
        callers[0].walk(f"register-{phone}", phone, PIN, PIN)
    total0 = total_balance(wallet)
    inputs = ["4", str(kes), "SAMECODE12"]
    sessions = [(f"topup-{n}", phones[n % 5], inputs) for n in range(10)]
    prepare(callers, sessions)
    replies = fire(callers, [(sid, p, "*".join(inputs + ["1"])) for sid, p, _ in sessions])
    credited = total_balance(wallet) - total0
    done_prefix = "END " + t("en", "topup.done", sats=0, kes=0, code="", balance=0).split(":")[0]
    done = sum(r.startswith(done_prefix) for _, r in replies)
    print(f"\nFIGURES top-up code race: 10 sessions, {done} credited, {credited} sats added")
    assert {status for status, _ in replies} == {200}
    assert done == 1 and credited == credit_sats(kes)
    assert sum(r == "END " + t("en", "error.code-used") for _, r in replies) == 9
    assert_books_balance(wallet)


@pytest.mark.parametrize("flow", ["send", "withdraw", "topup"])
def test_replayed_confirmations_move_money_once(wallet, servers, flow):
    callers = [Caller(s.url) for s in servers]
    phone = "+254700100003"
    fund(wallet, callers, phone, 100_000)
    total0, fees0 = total_balance(wallet), fees_settled(wallet)
    def inputs(session: str) -> list[str]:
        return {"send": ["1", local(DEMO[1]), "2000", "1", PIN], "withdraw": ["5", "300", "1", PIN],
                "topup": ["4", "300", f"REPLAY{session[-3:].upper()}1", "1"]}[flow]

    expected = {"send": 0, "withdraw": -(debit_sats(300)), "topup": credit_sats(300)}[flow]
    prepare(callers, [(sid, phone, inputs(sid)[:-1]) for sid in ("replay-seq", "replay-par")])
    sequential = [callers[n % len(callers)].post("replay-seq", phone,
                                                 callers[0].path("replay-seq", "*".join(inputs("replay-seq"))))
                  for n in range(random.randint(2, 5))]
    parallel = fire(callers, [("replay-par", phone, "*".join(inputs("replay-par")))] * 5)
    moved = total_balance(wallet) + (fees_settled(wallet) - fees0) - total0
    with wallet.db.read() as s:
        rows = s.scalar(select(func.count(Transaction.id)).where(Transaction.user_id == select(User.id).where(
            User.phone == phone).scalar_subquery(), Transaction.type != "adjust", Transaction.follows_id.is_(None)))
    print(f"\nFIGURES replay {flow}: {len(sequential)} sequential + 5 parallel deliveries of two confirmations, "
          f"{rows} ledger rows for the user, {moved} sats into/out of the system")
    assert all(status == 200 for status, _ in sequential + parallel)
    assert rows == 2  # one per session, however often each was delivered
    assert moved == 2 * expected
    assert len({reply for _, reply in sequential}) == 1
    assert_books_balance(wallet)


def test_a_worker_killed_mid_transfer_leaves_no_partial_transfer(wallet, servers):
    callers = [Caller(s.url) for s in servers]
    phones = [f"+25470020000{n}" for n in range(6)]
    for phone in phones:
        fund(wallet, callers, phone, 50_000)
    total0, fees0 = total_balance(wallet), fees_settled(wallet)
    stop = time.monotonic() + 6
    counts = {"requests": 0, "sent": 0, "errors": 0}
    lock = threading.Lock()

    def traffic(n: int) -> None:
        caller = Caller(servers[n % len(servers)].url)
        i = 0
        while time.monotonic() < stop:
            i += 1
            sender, recipient = random.sample(phones, 2)
            inputs = ["1", local(recipient), str(random.randint(1, 3) * 1000), "1", PIN]
            sid = f"kill-{n}-{i}"
            try:
                reply = ""
                for depth in range(len(inputs) + 1):
                    _, reply = caller.post(sid, sender, "*".join(inputs[:depth]), timeout=10)
                    with lock:
                        counts["requests"] += 1
                with lock:
                    counts["sent"] += reply.startswith("END Sent")
            except Exception:  # noqa: BLE001 - a killed worker drops connections; that is the point
                with lock:
                    counts["errors"] += 1

    threads = [threading.Thread(target=traffic, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(2)
    killed = servers[0].worker_pids()[:1]
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    for thread in threads:
        thread.join()
    with wallet.db.read() as s:
        sends = s.execute(select(Transaction.id).where(Transaction.kind == "transfer")).scalars().all()
        sides = dict(s.execute(select(Posting.entry_id, func.count()).where(
            Posting.entry_id.in_(sends), Posting.user_id.is_not(None)).group_by(Posting.entry_id)).all())
    print(f"\nFIGURES SIGKILL: worker {killed} killed during {counts['requests']} requests; "
          f"{counts['sent']} sends completed, {counts['errors']} sessions cut; {len(sends)} transfers, "
          f"{sum(sides.values())} customer postings; total {total_balance(wallet)} (+fees) vs {total0}")
    assert killed and counts["sent"] > 0
    assert all(sides.get(entry_id) == 2 for entry_id in sends)  # a payer and a payee each: no half transfer
    assert total_balance(wallet) + fees_settled(wallet) - fees0 == total0
    assert_books_balance(wallet)
