"""The rule "the PIN is checked before any money moves out" holds in one place
(use_cases.require_pin), and no screen can go around it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from helpers.lightning.lnurl_pay import PayParams
from helpers.wallet import use_cases
from helpers.wallet.customers import users
from helpers.wallet.use_cases import PinNotChecked
from helpers.wallet.customers.users import PinProof
from tests.conftest import DEMO, PIN, snapshot

ROOT = Path(__file__).resolve().parents[2]
# What moves money out of an account, by module: only the wallet's use cases may call these.
MONEY_OUT = {"transfer", "pay_request", "pay_address", "reserve", "send"}


def money_calls(extra: tuple[Path, ...] = ()):
    """(file, line, name) of each call of a money-out function outside helpers/wallet/."""
    found = []
    for path in [ROOT / "handlers.py", ROOT / "app.py", *(ROOT / "helpers" / "ussd").glob("*.py"),
                 *(ROOT / "helpers" / "web").glob("*.py"), *extra]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in MONEY_OUT and isinstance(node.value, ast.Name) \
                    and node.value.id in ("movements", "payments", "mpesa_flows", "books", "machine"):
                found.append((path.name, node.lineno, node.attr))
    return found


def test_only_the_wallets_use_cases_move_money_out():
    assert money_calls() == []


def test_a_screen_calling_a_money_function_directly_is_found(tmp_path):
    sneaky = tmp_path / "zz_probe_screen.py"  # not in the tree: tests run in parallel
    sneaky.write_text("from helpers.wallet.ledger import movements\n"
                      "def go(ctx):\n    return movements.transfer(ctx.svc.db, None, None, '', 1, '', '')\n")
    assert ("zz_probe_screen.py", 3, "transfer") in money_calls((sneaky,))


def _user(wallet, phone: str) -> users.UserView:
    with wallet.db.read() as s:
        return users.UserView.of(users.get(s, phone))


@pytest.mark.parametrize("proof_of", ["none", "forged", "someone else's"])
def test_every_money_use_case_refuses_without_this_users_pin_proof(wallet, proof_of):
    for phone in DEMO[:2]:
        users.set_first_pin(wallet.db, _user(wallet, phone).id, PIN, wallet.pepper)
    alice = _user(wallet, DEMO[0])
    bob = _user(wallet, DEMO[1])
    proof = {
        "none": None,
        "forged": PinProof(alice.id, object()),
        "someone else's": users.check_pin(wallet.db, wallet.policy, bob, PIN, wallet.pepper,
                                          debit_follows=False).proof,
    }[proof_of]
    if proof_of == "someone else's":
        assert proof is not None and proof.valid_for(bob.id)
    before = snapshot(wallet)
    params = PayParams("bob@example.org", "https://example.org/cb", 1, 100_000, "00" * 32)
    calls = [
        lambda: use_cases.send(wallet, alice, proof, DEMO[1], 1000, "k1"),
        lambda: use_cases.pay_lightning(wallet, alice, proof, params, 1000, "k2"),
        lambda: use_cases.withdraw(wallet, alice, proof, 100, DEMO[0], "k3"),
        lambda: use_cases.pay_request(wallet, alice, proof, 1, "ab" * 32, "k4"),
    ]
    for call in calls:
        with pytest.raises(PinNotChecked):
            call()
    assert snapshot(wallet) == before


def test_the_right_pin_gives_the_proof_the_use_cases_take(wallet):
    users.set_first_pin(wallet.db, _user(wallet, DEMO[0]).id, PIN, wallet.pepper)
    alice = _user(wallet, DEMO[0])
    wrong = users.check_pin(wallet.db, wallet.policy, alice, "0000" if PIN != "0000" else "1111", wallet.pepper,
                            debit_follows=False)
    assert not wrong.ok and wrong.proof is None
    right = users.check_pin(wallet.db, wallet.policy, alice, PIN, wallet.pepper, debit_follows=False)
    receipt = use_cases.send(wallet, alice, right.proof, DEMO[1], wallet.policy.value("payment-min-sats"), "k5")
    assert receipt.amount_sats == wallet.policy.value("payment-min-sats")
