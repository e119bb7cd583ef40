#!/usr/bin/env python3
"""End-to-end driver: runs complete USSD flows against a RUNNING server, the way Africa's Talking does.

    python test_ussd.py [URL]            # default http://localhost:5000

Run it from the project folder: expected texts come from the catalog (helpers/infra/i18n.py) and every
limit, fee and exchange rate from the policy (helpers/wallet/rules.py + atoms.metta), never from copies.

Each dial is one random sessionId; `text` is the input so far joined by `*` ("" first, then "1",
"1*0712345678", ...). Every run uses new random Kenyan mobile numbers, so it can be run again and
again against the same server and database. After every request it checks: HTTP 200, a reply that
starts with "CON " or "END ", and a screen of at most 160 characters. Balances are read from the
main menu ("Balance: N sats" / "Salio: N sats") and must equal what the flows moved, to the sat.

M-Pesa: GET /status says which provider the server runs. With `simulated` the top-up flows type
confirmation codes. With `daraja` (against the fake Daraja of tests/fakes/fake_daraja.py, which picks each
request's outcome from the last two digits of the KES amount) a top-up is an STK push: the script
waits for the callback's credit, checks that a cancelled push credits nothing and that a callback
sent three times credits once, and waits for each withdrawal's B2C result to settle it.

Exit status: 0 when every flow passed, 1 when any failed or was skipped, 2 when the server cannot
be reached, answers with its rate limits on (RATE_LIMITS=1: the flows dial one phone more often than
production allows; the script says so and stops), or the script is not run from the project folder.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
try:
    from tests.ussd_driver import (LNBITS_CREDIT_WAIT_S, TIMEOUT_S, Dial, Failure, Outcome, Reply, RunBase, User,
                                   kes_for, lines, local_form, mpesa_code, num, run_flows, strong_pin, t)
except ImportError as _exc:  # pragma: no cover - depends on where it is run from
    print(f"cannot import the driver ({_exc}); run this from the project folder "
          "with its virtualenv, e.g. `.venv/bin/python test_ussd.py`", file=sys.stderr)
    sys.exit(2)


class Run(RunBase):
    """The flows, in order (FLOWS); each fills its Outcome or raises Failure."""

    def flow_register_a(self, out: Outcome) -> None:
        a = self.user("A")
        self.register(a, "same")
        self.check_balance(a)  # a new dial goes straight to the main menu: the PIN was kept
        out.notes.append(f"{a.phone}")

    def flow_register_b(self, out: Outcome) -> None:
        b = self.user("B")

        def go_on(d: Dial) -> None:  # the same session continues in the main menu
            d.expect(d.send("6"), "CON", self.account_screen(d, 0))
            d.expect(d.send("0"), "CON", d.main_screen())
            d.expect(d.send("0"), "END", d.tx("exit"))

        self.register(b, "ascending", go_on)
        self.check_balance(b)
        out.notes.append(f"{b.phone}")

    def flow_topup(self, out: Outcome) -> None:
        if self.mpesa == "daraja":
            return self.push_topup(out)
        a = self.users["A"]
        kes = self.topup_kes
        sats = self.p.kes_to_sats_credit(kes, self.price)
        code = mpesa_code()
        self.topup_code = code
        d = self.dial(a)
        d.expect(d.open(), "CON", d.main_screen())
        d.expect(d.send("4"), "CON", d.tx("topup.amount", min=self.kes_min, max=self.kes_max))
        d.expect(d.send(str(kes)), "CON", d.tx("topup.code", kes=kes))
        d.expect(d.send(code), "CON", d.tx("topup.confirm", kes=kes, sats=sats, code=code, valid=self.valid_min))
        a.balance += sats
        d.expect(d.send("1"), "END", d.tx("topup.done", sats=sats, kes=kes, code=code, balance=a.balance))
        a.history.insert(0, ("+", sats, "topup"))
        self.check_balance(a)
        out.notes.append(f"{kes:,} KES -> {sats:,} sats, code {code}")

    def push(self, user: User, kes: int) -> str:
        """Top up by STK push: amount, confirm, 'watch your phone'. Returns the reference."""
        sats = self.p.kes_to_sats_credit(kes, self.price)
        d = self.dial(user)
        d.expect(d.open(), "CON", d.main_screen())
        d.expect(d.send("4"), "CON", d.tx("topup.amount", min=self.kes_min, max=self.kes_max))
        d.expect(d.send(str(kes)), "CON", d.tx("topup.push", kes=kes, sats=sats, phone=user.phone,
                                               valid=self.valid_min))
        return d.expect_match(d.send("1"), "END", "topup.push-sent", kes=kes, sats=sats)["ref"]

    def push_topup(self, out: Outcome) -> None:
        a = self.users["A"]
        kes = kes_for("success", self.topup_kes)
        sats = self.p.kes_to_sats_credit(kes, self.price)
        ref = self.push(a, kes)
        a.balance += sats
        self.wait_balance(a, f"the STK push {ref}")
        a.history.insert(0, ("+", sats, "topup"))
        out.notes.append(f"{kes:,} KES -> {sats:,} sats by STK push {ref}, credited by its callback")

    def flow_topup_reuse(self, out: Outcome) -> None:
        if self.mpesa == "daraja":
            return self.push_outcomes(out)
        a, b = self.users["A"], self.users["B"]
        kes, code = self.topup_kes, self.topup_code
        # the same user again
        d = self.dial(a)
        d.expect(d.open(), "CON", d.main_screen())
        d.send("4")
        d.expect(d.send(str(kes)), "CON", d.tx("topup.code", kes=kes))
        d.expect(d.send(code), "CON", lines(d.tx("error.code-used"), d.tx("topup.code", kes=kes)))
        d.expect(d.send("00"), "CON", d.main_screen())
        d.expect(d.send("0"), "END", d.tx("exit"))
        # another user, typing it in lower case
        d = self.dial(b)
        d.open()
        d.send("4")
        d.send(str(kes))
        d.expect(d.send(code.lower()), "CON", lines(d.tx("error.code-used"), d.tx("topup.code", kes=kes)))
        self.check_balance(a)
        self.check_balance(b)

    def push_outcomes(self, out: Outcome) -> None:
        """A cancelled push (1032) credits nothing; a callback sent three times credits once."""
        a = self.users["A"]
        cancelled = self.push(a, kes_for("cancelled", self.kes_min))
        kes = kes_for("duplicated", self.kes_min)
        duplicated = self.push(a, kes)
        a.balance += self.p.kes_to_sats_credit(kes, self.price)  # once: the cancelled push and the repeats add nothing
        self.wait_balance(a, f"the cancelled push {cancelled} and the repeated callback of {duplicated}")
        time.sleep(1)  # room for any late repeat to (wrongly) credit again
        self.check_balance(a)
        a.history.insert(0, ("+", self.p.kes_to_sats_credit(kes, self.price), "topup"))
        out.notes.append(f"push {cancelled} cancelled: nothing credited; push {duplicated} called back 3 times: "
                         "credited once")

    def flow_send(self, out: Outcome) -> None:
        a, b = self.users["A"], self.users["B"]
        amount = self.send_b
        fee = self.p.fee_sats("internal", amount)
        d = self.dial(a)
        d.expect(d.open(), "CON", d.main_screen())
        d.expect(d.send("1"), "CON", d.tx("send.phone"))
        d.expect(d.send(local_form(b.phone)), "CON",
                 d.tx("send.amount", phone=b.phone, min=self.min_sats, max=self.max_sats))
        d.expect(d.send(str(amount)), "CON", d.tx("send.confirm", amount=amount, phone=b.phone, fee=fee,
                                                  total=amount + fee, recipient=d.tx("recipient.unnamed")))
        prompt = d.tx("pin.enter")
        d.expect(d.send("1"), "CON", prompt)
        self.pin_step(d, prompt, wrong_first=True)
        a.balance -= amount + fee
        a.sent += amount
        reply = d.send(a.pin)
        found = d.expect_match(reply, "END", "send.done", left_today=self.left_today(a), amount=amount, phone=b.phone,
                               fee=fee, balance=a.balance)
        # Africa's Talking re-sends a request it got no answer to: same reply, no second transfer
        again = d.repost()
        d.expect(again, "END", reply.screen)
        b.balance += amount
        a.history.insert(0, ("-", amount + fee, "send"))
        b.history.insert(0, ("+", amount, "receive"))
        self.check_balance(a)
        self.check_balance(b)
        out.notes.append(f"{amount:,} sats + fee {fee:,}, ref {found['ref']}, one wrong PIN, repost replayed")

    def flow_send_new_phone(self, out: Outcome) -> None:
        a, c = self.users["A"], self.user("C")
        amount = self.send_c
        fee = self.p.fee_sats("internal", amount)
        d = self.dial(a)
        d.open()
        d.send("1")
        typed = c.phone[1:]  # 2547XXXXXXXX, as a keypad without '+' makes easy
        d.expect(d.send(typed), "CON", d.tx("send.amount", phone=c.phone, min=self.min_sats, max=self.max_sats))
        d.expect(d.send(str(amount)), "CON", d.tx("send.confirm", amount=amount, phone=c.phone, fee=fee,
                                                  total=amount + fee, recipient=d.tx("recipient.new")))
        d.expect(d.send("1"), "CON", d.tx("pin.enter"))
        a.balance -= amount + fee
        a.sent += amount
        d.expect_match(d.send(a.pin), "END", "send.done", left_today=self.left_today(a), amount=amount,
                       phone=c.phone, fee=fee, balance=a.balance)
        a.history.insert(0, ("-", amount + fee, "send"))
        c.balance += amount
        # C has never dialled: first PIN creation, then the money is there
        d = self.dial(c)
        d.expect(d.open(), "CON", d.tx("pin.create", digits=self.pin_digits))
        c.pin = strong_pin()
        d.expect(d.send(c.pin), "CON", d.tx("pin.repeat"))
        d.expect(d.send(c.pin), "CON", lines(d.tx("pin.set"), d.main_screen()))
        self.check_balance(a)
        out.notes.append(f"{amount:,} sats to unregistered {c.phone}, who then set a PIN and saw them")

    def flow_receive(self, out: Outcome) -> None:
        a = self.users["A"]
        amount = self.receive_sats
        d = self.dial(a)
        d.expect(d.open(), "CON", d.main_screen())
        d.expect(d.send("2"), "CON", d.tx("receive.amount", min=self.min_sats, max=self.max_sats))
        found = d.expect_match(d.send(str(amount)), "END", "receive.done", amount=amount)
        ref = found["ref"]
        if not re.fullmatch(r"[A-Z0-9]{4,16}", ref):
            raise Failure(f"receive.done: reference {ref!r} does not look like one")
        self.check_balance(a)  # nothing credited before payment
        if not self.demo:
            out.notes.append(f"invoice {ref} created; payment SKIPPED: demo mode is off (GET /test not 200)")
            return
        response = self.client.post("/test/pay-invoice", {"reference": ref})
        if response.status_code == 404 and "mock" in response.text and self.lnbits_payer:
            return self.pay_from_lnbits(out, a, ref, amount)
        if response.status_code == 404 and "mock" in response.text:
            out.status = "SKIP"
            out.notes.append(f"invoice {ref} created; payment SKIPPED: {response.json().get('error')} "
                             "(with a real LNbits, pass --lnbits-payer URL ADMIN_KEY)")
            return
        body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
        if response.status_code != 200 or body.get("status") != "paid":
            raise Failure(f"POST /test/pay-invoice reference={ref}: HTTP {response.status_code} "
                          f"{response.text[:200]!r}, expected 200 with status 'paid'")
        a.balance += amount
        a.history.insert(0, ("+", amount, "receive"))
        self.check_balance(a)
        # paying the same invoice again must not credit twice
        response = self.client.post("/test/pay-invoice", {"reference": ref})
        if response.status_code != 200 or response.json().get("status") != "paid":
            raise Failure(f"second POST /test/pay-invoice reference={ref}: HTTP {response.status_code} "
                          f"{response.text[:200]!r}")
        self.check_balance(a)
        out.notes.append(f"invoice {ref} for {amount:,} sats paid via /test/pay-invoice, credited once")

    def pay_from_lnbits(self, out: Outcome, a: User, ref: str, amount: int) -> None:
        """A real node: an outside LNbits wallet pays the BOLT11 its owner got by SMS; the server
        learns it from the node (webhook or poller) and must credit it exactly once."""
        url, key = self.lnbits_payer
        response = self.client.get(f"/test/invoice?reference={ref}")
        if response.status_code != 200:
            raise Failure(f"GET /test/invoice?reference={ref}: HTTP {response.status_code} {response.text[:200]!r}")
        bolt11 = response.json()["bolt11"]
        paid = requests.post(url.rstrip("/") + "/api/v1/payments", json={"out": True, "bolt11": bolt11},
                             headers={"X-Api-Key": key}, timeout=TIMEOUT_S)
        if paid.status_code not in (200, 201):
            raise Failure(f"the outside LNbits wallet could not pay {ref}: HTTP {paid.status_code} {paid.text[:200]!r}")
        a.balance += amount
        a.history.insert(0, ("+", amount, "receive"))
        self.wait_balance(a, "the outside LNbits payment", LNBITS_CREDIT_WAIT_S)
        again = requests.post(url.rstrip("/") + "/api/v1/payments", json={"out": True, "bolt11": bolt11},
                              headers={"X-Api-Key": key}, timeout=TIMEOUT_S)
        time.sleep(2)  # a second credit, if there were one, would come by now
        self.check_balance(a)
        out.notes.append(f"invoice {ref} for {amount:,} sats paid from an outside LNbits wallet, credited once "
                         f"(paying it again: HTTP {again.status_code})")

    def flow_request(self, out: Outcome) -> None:
        a, b = self.users["A"], self.users["B"]
        amount = self.request_sats
        fee = self.p.fee_sats("internal", amount)
        d = self.dial(a)
        d.expect(d.open(), "CON", d.main_screen())
        d.expect(d.send("3"), "CON", d.tx("request.phone"))
        d.expect(d.send(local_form(b.phone)), "CON",
                 d.tx("request.amount", phone=b.phone, min=self.min_sats, max=self.max_sats))
        found = d.expect_match(d.send(str(amount)), "END", "request.done", amount=amount, phone=b.phone)
        ref = found["ref"]
        b.open_requests += 1
        # B pays it from the main menu, option 7
        d = self.dial(b)
        d.expect(d.open(), "CON", d.main_screen())  # shows "7 Pay requests (1)"
        d.expect(d.send("7"), "CON",
                 d.tx("payreq.list", lines=d.tx("payreq.line", n=1, amount=amount, phone=a.phone)))
        d.expect(d.send("1"), "CON", d.tx("payreq.confirm", amount=amount, phone=a.phone, ref=ref, fee=fee))
        d.expect(d.send("1"), "CON", d.tx("pin.enter"))
        b.balance -= amount + fee
        b.open_requests -= 1
        b.sent += amount
        d.expect(d.send(b.pin), "END", d.receipt("payreq.done", self.left_today(b), amount=amount, phone=a.phone,
                                                 ref=ref, balance=b.balance))
        a.balance += amount
        a.history.insert(0, ("+", amount, "invoice"))
        b.history.insert(0, ("-", amount + fee, "invoice"))
        self.check_balance(b)  # no "7" line any more
        self.check_balance(a)
        d = self.dial(b)
        d.open()
        d.expect(d.send("7"), "CON", d.tx("payreq.list", lines=d.tx("history.empty")))
        out.notes.append(f"{amount:,} sats, ref {ref}, paid by B from option 7")

    def flow_withdraw(self, out: Outcome) -> None:
        a = self.users["A"]
        kes = self.withdraw_kes
        sats = self.p.kes_to_sats_debit(kes, self.price)
        fee = self.p.fee_sats("mpesa-withdraw", sats)
        d = self.dial(a)
        d.expect(d.open(), "CON", d.main_screen())
        d.expect(d.send("5"), "CON", d.tx("withdraw.amount", min=self.kes_min, max=self.kes_max))
        d.expect(d.send(str(kes)), "CON", d.tx("withdraw.phone", kes=kes, phone=a.phone))
        d.expect(d.send("1"), "CON", d.tx("withdraw.pin", kes=kes, phone=a.phone, sats=sats, fee=fee,
                                          valid=self.valid_min))
        a.balance -= sats + fee
        a.sent += sats  # pending or paid: the day's limit counts it
        a.history.insert(0, ("-", sats + fee, "withdraw"))
        if self.mpesa == "daraja":  # B2C: reserved now, settled by the result callback
            found = d.expect_match(d.send(a.pin), "END", "withdraw.pending", kes=kes, phone=a.phone)
            self.check_balance(a)
            self.wait_settled(a, f"withdrawal {found['ref']}")
            self.check_balance(a)
            out.notes.append(f"{kes:,} KES = {sats:,} sats + fee {fee:,}, ref {found['ref']}, settled by B2C result")
            return
        found = d.expect_match(d.send(a.pin), "END", "withdraw.done", left_today=self.left_today(a), kes=kes,
                               phone=a.phone, sats=sats, fee=fee, balance=a.balance)
        self.check_balance(a)
        out.notes.append(f"{kes:,} KES = {sats:,} sats + fee {fee:,}, M-Pesa ref {found['code']}")

    def flow_airtime(self, out: Outcome) -> None:
        a = self.users["A"]
        if self.airtime == "off":
            out.notes.append("AIRTIME_PROVIDER=off: the menu says airtime is not available")
            return
        kes = self.p.value("airtime-min-kes")
        sats = self.p.kes_to_sats_debit(kes, self.price)
        fee = self.p.fee_sats("airtime", sats)
        d = self.dial(a)
        d.expect(d.open(), "CON", d.main_screen())
        d.expect(d.send("8"), "CON", d.tx("mpesapay"))
        d.expect(d.send("3"), "CON", d.tx("airtime", phone=local_form(a.phone)))
        low, high = self.p.value("airtime-min-kes"), self.p.value("airtime-max-kes")
        d.expect(d.send("1"), "CON", d.tx("airtime.amount", phone=local_form(a.phone), min=low, max=high))
        d.expect(d.send(str(kes)), "CON", d.tx("airtime.pin", kes=kes, phone=local_form(a.phone), sats=sats, fee=fee,
                                               valid=self.valid_min))
        a.balance -= sats + fee
        a.history.insert(0, ("-", sats + fee, "airtime"))
        key = "airtime.done" if self.airtime == "simulated" else "airtime.pending"
        known = {"sats": sats, "fee": fee, "balance": a.balance} if key == "airtime.done" else {}
        a.sent += sats
        left = self.left_today(a) if key == "airtime.done" else None  # pending: the SMS at the post says it
        found = d.expect_match(d.send(a.pin), "END", key, left_today=left, kes=kes, phone=local_form(a.phone), **known)
        self.check_balance(a)
        out.notes.append(f"{kes:,} KES = {sats:,} sats + fee {fee:,}, ref {found['ref']} ({self.airtime})")

    def flow_account(self, out: Outcome) -> None:
        a = self.users["A"]
        d = self.dial(a)
        d.expect(d.open(), "CON", d.main_screen())
        account = self.account_screen(d, a.balance)
        d.expect(d.send("6"), "CON", account)
        reply = d.send("1")
        found = d.expect_match(reply, "CON", "history")
        shown = [line for line in found["lines"].split("\n") if line]
        if not shown or len(shown) > len(a.history):
            raise Failure(f"history shows {len(shown)} lines, expected 1..{len(a.history)}: {reply.screen!r}")
        today = {dt.datetime.now(dt.UTC).strftime("%d/%m"),
                 (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)).strftime("%d/%m")}
        for line, (sign, sats, _kind) in zip(shown, a.history, strict=False):
            parts = d.expect_match(Reply("CON", "\n" + line, reply.text), "CON", "history.line",
                                   sign=sign, amount=sats)
            if parts["date"].rstrip("*") not in today:  # * while pending (a payout M-Pesa has not confirmed)
                raise Failure(f"history line {line!r}: date {parts['date']!r}, expected one of {sorted(today)}")
        d.expect(d.send("0"), "CON", account)
        d.expect(d.send("2"), "CON", d.tx("language"))
        d.expect(d.send("2"), "END", t("sw", "language.done"))
        a.lang = "sw"
        # the next dial is in Swahili, straight from the catalog
        d = self.dial(a)
        reply = d.open()
        found = d.expect_match(reply, "CON", "main")  # "Salio: N sats"
        if num(found["balance"]) != a.balance:
            raise Failure(f"Swahili main menu shows {found['balance']} sats, expected {a.balance:,}")
        d.expect(reply, "CON", d.main_screen())
        d.expect(d.send("99"), "CON", lines(d.tx("error.option"), d.main_screen()))
        d.expect(d.send("6"), "CON", self.account_screen(d, a.balance))
        d.expect(d.send("0"), "CON", d.main_screen())
        d.expect(d.send("0"), "END", t("sw", "exit"))
        out.notes.append(f"{len(shown)} history lines checked; language switched to sw")

    def flow_bad_inputs(self, out: Outcome) -> None:
        b, c = self.users["B"], self.users["C"]
        d = self.dial(b)
        main = d.main_screen()
        send_amount = d.tx("send.amount", phone=c.phone, min=self.min_sats, max=self.max_sats)
        topup_amount = d.tx("topup.amount", min=self.kes_min, max=self.kes_max)
        receive_amount = d.tx("receive.amount", min=self.min_sats, max=self.max_sats)
        withdraw_amount = d.tx("withdraw.amount", min=self.kes_min, max=self.kes_max)
        d.expect(d.open(), "CON", main)
        d.expect(d.send("99"), "CON", lines(d.tx("error.option"), main))  # unknown option
        d.expect(d.send("1"), "CON", d.tx("send.phone"))
        d.expect(d.send("12345"), "CON", lines(d.tx("error.phone"), d.tx("send.phone")))
        d.expect(d.send(local_form(b.phone)), "CON", lines(d.tx("error.own-phone"), d.tx("send.phone")))
        d.expect(d.send(local_form(c.phone)), "CON", send_amount)
        d.expect(d.send("abc"), "CON", lines(d.tx("error.amount"), send_amount))  # letters as amount
        d.expect(d.send(str(self.min_sats - 1)), "CON",
                 lines(d.tx("deny.below-minimum", min=self.min_sats, unit="sats"), send_amount))
        d.expect(d.send("00"), "CON", main)  # 00: home
        d.expect(d.send("4"), "CON", topup_amount)
        d.expect(d.send("1O0"), "CON", lines(d.tx("error.amount"), topup_amount))
        below_kes = self.kes_min - 1
        d.expect(d.send(str(below_kes)), "CON",
                 lines(d.tx("deny.below-minimum", min=self.kes_min, unit="KES"), topup_amount))
        if self.mpesa == "daraja":
            confirm = d.tx("topup.push", kes=self.topup_kes, phone=b.phone, valid=self.valid_min,
                           sats=self.p.kes_to_sats_credit(self.topup_kes, self.price))
            d.expect(d.send(str(self.topup_kes)), "CON", confirm)
            d.expect(d.send("ABC"), "CON", lines(d.tx("error.option"), confirm))
        else:
            d.expect(d.send(str(self.topup_kes)), "CON", d.tx("topup.code", kes=self.topup_kes))
            d.expect(d.send("ABC"), "CON", lines(d.tx("error.code"), d.tx("topup.code", kes=self.topup_kes)))
        d.expect(d.send("0"), "CON", topup_amount)  # 0: back one screen
        d.expect(d.send("0"), "CON", main)
        d.expect(d.send("2"), "CON", receive_amount)
        d.expect(d.send(str(self.max_sats + 1)), "CON",
                 lines(d.tx("deny.above-maximum", max=self.max_sats, unit="sats"), receive_amount))
        d.expect(d.send("00"), "CON", main)
        d.expect(d.send("5"), "CON", withdraw_amount)
        d.expect(d.send(str(self.kes_max)), "CON",  # more than B has
                 lines(d.tx("deny.insufficient-balance", balance=b.balance), withdraw_amount))
        d.expect(d.send("00"), "CON", main)
        d.expect(d.send("0"), "END", d.tx("exit"))
        self.check_balance(b)
        out.notes.append("unknown option, bad/own phone, letters, below min (sats, KES), above max, bad code, "
                         "insufficient balance, 0/00 navigation")

    def flow_retry_after_refusal(self, out: Outcome) -> None:
        """After a refusal that depends on changing data (insufficient balance, M-Pesa code
        used), the next input is read by the screen that was shown, not the one after it."""
        b = self.users["B"]
        c = self.users["C"]
        d = self.dial(b)
        d.open()
        d.send("1")
        d.send(local_form(c.phone))
        too_much = b.balance + self.min_sats
        send_amount = d.tx("send.amount", phone=c.phone, min=self.min_sats, max=self.max_sats)
        d.expect(d.send(str(too_much)), "CON", lines(d.tx("deny.insufficient-balance", balance=b.balance), send_amount))
        amount = self.min_sats
        fee = self.p.fee_sats("internal", amount)
        d.expect(d.send(str(amount)), "CON", d.tx("send.confirm", amount=amount, phone=c.phone, fee=fee,
                                                  total=amount + fee, recipient=d.tx("recipient.unnamed")))
        if self.mpesa == "daraja":
            out.notes.append("no M-Pesa codes with daraja: the used-code part does not apply")
            return
        d = self.dial(b)
        d.open()
        d.send("4")
        d.send(str(self.topup_kes))
        d.expect(d.send(self.topup_code), "CON",
                 lines(d.tx("error.code-used"), d.tx("topup.code", kes=self.topup_kes)))
        fresh = mpesa_code()
        d.expect(d.send(fresh), "CON", d.tx("topup.confirm", kes=self.topup_kes, valid=self.valid_min,
                                             sats=self.p.kes_to_sats_credit(self.topup_kes, self.price), code=fresh))


FLOWS: list[tuple[str, str, list[str]]] = [
    # (method, title, flows it needs)
    ("flow_status", "server status and mode", []),
    ("flow_register_a", "register A: weak PIN refused, bad format, mismatch, PIN set", []),
    ("flow_register_b", "register B: weak PIN refused, bad format, mismatch, PIN set", []),
    ("flow_topup", "top up A by M-Pesa", ["flow_status", "flow_register_a"]),
    ("flow_topup_reuse", "same M-Pesa code refused (daraja: cancelled push, repeated callback)",
     ["flow_topup", "flow_register_b"]),
    ("flow_send", "send A -> B: confirm amount/fee, wrong PIN once, then right", ["flow_topup", "flow_register_b"]),
    ("flow_send_new_phone", "send A -> new phone C, C registers and sees it", ["flow_send"]),
    ("flow_receive", "receive: invoice, paid as an outside payer, credited", ["flow_send_new_phone"]),
    ("flow_request", "request from B, B pays it from option 7", ["flow_receive"]),
    ("flow_withdraw", "withdraw A to M-Pesa", ["flow_request"]),
    ("flow_airtime", "airtime for A's own number", ["flow_withdraw"]),
    ("flow_account", "my account: history, language -> Swahili main menu", ["flow_airtime"]),
    ("flow_bad_inputs", "bad inputs re-prompt, nothing moves", ["flow_request", "flow_send_new_phone"]),
    ("flow_retry_after_refusal", "input after a refusal is read by the screen shown", ["flow_bad_inputs"]),
]


def main(argv: list[str] | None = None) -> int:
    return run_flows(Run, FLOWS, argv)


if __name__ == "__main__":
    sys.exit(main())
