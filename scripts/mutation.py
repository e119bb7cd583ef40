"""A mutation run over the money and access code: would the fast tests notice a plausible one-line
slip? (`make mutation`; the score and the survivors go to docs/mutation.md.)

Each mutant changes one thing in one line of a listed function: a comparison (== !=, < <=, > >=),
a boolean (and/or, True/False, a `not` dropped), + and -, `abs()` dropped; plus the named mutants
of issue 31 (docs/mutation.md), which also reach atoms.metta. A mutant is applied in a copy of
the working tree (under the system's temporary folder: nobody's files are touched), the fast unit
tests that exercise its module run with -x, and it is *killed* when they fail (or hang past the
timeout), *survives* when they pass. `--confirm` runs every survivor again against the whole fast
tier (tests/unit -m "not slow"), so a survivor is one no fast test notices.

Why not mutmut (3.x): it cannot mutate atoms.metta, where the policy lives, and it mutates every
function of a module (log strings included), thousands of mutants: hours on two cores, and a
score made mostly of noise. This runs the few hundred that are money and access decisions.

Mutant ids are `path:function:n` (the n-th mutation inside that function), stable while the
function does not change. docs/mutation.json keeps each id's last result: a mutant killed before
that survives now, or a lower score, fails the run (exit 1) and leaves the record as it was, so
the score can only rise. `--accept` records it anyway (say why in the commit).

    python scripts/mutation.py                  # every mutant, then writes docs/mutation.md
    python scripts/mutation.py --named          # the named ones only (a few minutes)
    python scripts/mutation.py --only feed.py   # the mutants whose id contains feed.py (repeatable)
    python scripts/mutation.py --list           # list the mutants, run nothing
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import datetime as dt
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tokenize
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "mutation.md"
RECORD = ROOT / "docs" / "mutation.json"
FAST = ["tests/unit", "-m", "not slow"]

# Where the mutants are: module -> (the functions to mutate, the fast test files that exercise them).
TARGETS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "helpers/wallet/mpesa/flows.py": (
        ("_credit_topup", "_fail_topup", "_claim", "_query_topup", "reconcile"),
        ("tests/unit/test_mpesa_money.py", "tests/unit/test_mpesa_callback_guards.py", "tests/unit/test_flows.py")),
    "helpers/wallet/mpesa/callbacks.py": (
        ("_same_amount", "stk", "_payout_result", "b2c_result", "b2b_result", "status_result"),
        ("tests/unit/test_mpesa_money.py", "tests/unit/test_mpesa_callback_guards.py")),
    "helpers/wallet/ledger/movements.py": (
        ("_lock_pair", "transfer", "release"),
        ("tests/unit/test_journal.py", "tests/unit/test_mpesa_money.py", "tests/unit/test_flows.py")),
    "helpers/wallet/payouts/books.py": (
        ("reserve", "_move", "post", "void"),
        ("tests/unit/test_new_rail.py", "tests/unit/test_journal.py", "tests/unit/test_airtime.py",
         "tests/unit/test_mpesa_money.py")),
    "helpers/wallet/payouts/machine.py": (
        ("finish", "record_ids", "send", "claim", "ask", "callback"),
        ("tests/unit/test_new_rail.py", "tests/unit/test_airtime.py", "tests/unit/test_mpesa_callback_guards.py")),
    "helpers/wallet/ledger/journal.py": (
        ("_move_customer", "_move_customers", "record", "_two_phase_problems"),
        ("tests/unit/test_journal.py", "tests/unit/test_parts.py", "tests/unit/test_money_guards.py")),
    "helpers/wallet/reports/books.py": (
        ("totals", "liabilities_sats", "assets_sats", "solvency"),
        ("tests/unit/test_mpesa_money.py", "tests/unit/test_journal.py", "tests/unit/test_console.py",
         "tests/unit/test_airtime_solvency.py", "tests/unit/test_airtime.py")),
    "helpers/wallet/operators.py": (
        ("adjust", "_debit_adjustment"),
        ("tests/unit/test_money_guards.py", "tests/unit/test_console.py")),
    "helpers/web/admin.py": (("login",), ("tests/unit/test_money_guards.py", "tests/unit/test_console.py")),
    "helpers/prices/feed.py": (("agree",), ("tests/unit/test_money_guards.py", "tests/unit/test_prices.py")),
    "helpers/ussd/resume.py": (
        ("keep_path", "answer"),
        ("tests/unit/test_money_guards.py", "tests/unit/test_everyday.py", "tests/unit/test_session_races.py")),
    "helpers/ussd/sessions.py": (
        ("close_to_continue", "begin_acting"),
        ("tests/unit/test_session_races.py", "tests/unit/test_everyday.py")),
    "atoms.metta": ((), ("tests/unit/test_money_guards.py", "tests/unit/test_catalog_and_policy.py",
                         "tests/unit/test_flows.py")),
}

# The slips issue 31 (item 12) names, as exact edits: (id, path, text, replacement).
NAMED: list[tuple[str, str, str, str]] = [
    ("named:paid-after-failed-query-ignored", "helpers/wallet/mpesa/flows.py",
     "allowed = (PENDING, FAILED) if from_failed else (PENDING,)", "allowed = (PENDING,)"),
    ("named:fail-topup-without-pending", "helpers/wallet/mpesa/flows.py",
     "MpesaRequest.kind == STK, MpesaRequest.status == PENDING)", "MpesaRequest.kind == STK)"),
    ("named:status-result-without-amount", "helpers/wallet/mpesa/callbacks.py",
     'if not _same_amount(params.get("Amount"), payout.amount_kes or 0):\n        return _refuse_payout("status"',
     'if False:\n        return _refuse_payout("status"'),
    ("named:keep-path-without-secret-screens", "helpers/ussd/resume.py",
     "and not any(screens[name].secret for name in typed_on if name in screens)", "and True"),
    ("named:agree-without-abs", "helpers/prices/feed.py",
     "abs(answer.kes_per_btc - middle) > band", "answer.kes_per_btc - middle > band"),
    ("named:agree-quorum-over-all-answers", "helpers/prices/feed.py",
     "if len(kept) < min_sources:", "if len(values) < min_sources:"),
    ("named:login-follows-any-next", "helpers/web/admin.py",
     'redirect(target if target.startswith("/admin") else url_for("admin.dashboard"))',
     'redirect(target or url_for("admin.dashboard"))'),
    ("named:airtime-without-daily-limit", "atoms.metta",
     "(> (+ $sent-today $sats) (daily-send-limit-sats)))))))", "False)))))"),
    ("named:withdraw-without-mpesa-fee", "atoms.metta",
     "(fee-sats mpesa-withdraw $sats)", "0"),
    ("named:solvency-without-airtime-float", "helpers/wallet/reports/books.py",
     "-kept.get(AIRTIME_IN_FLIGHT, 0), kept.get(AIRTIME_FLOAT, 0))", "-kept.get(AIRTIME_IN_FLIGHT, 0), 0)"),
    ("named:assets-without-airtime-float", "helpers/wallet/reports/books.py",
     "self.node_sats + self.float_sats + self.airtime_float_sats", "self.node_sats + self.float_sats"),
    ("named:totals-count-refunded-fees", "helpers/wallet/reports/books.py",
     "select(func.coalesce(func.sum(Transaction.fee_sats), 0)).where(Transaction.status == SETTLED)",
     "select(func.coalesce(func.sum(Transaction.fee_sats), 0))"),
    ("named:close-to-continue-without-resumable-state", "helpers/ussd/sessions.py",
     "_SESSIONS.c.state.in_(RESUMABLE)).values(active=False)", "True).values(active=False)"),
    ("named:begin-acting-on-a-taken-over-session", "helpers/ussd/sessions.py",
     "_SESSIONS.c.session_id == session_id, _SESSIONS.c.active.is_(True), _SESSIONS.c.state != ACTING)",
     "_SESSIONS.c.session_id == session_id, _SESSIONS.c.state != ACTING)"),
    ("named:save-over-a-closed-session", "helpers/ussd/sessions.py",
     "_SESSIONS.c.active.is_(True), state)", "state)"),
    ("named:debit-locked-without-balance-guard", "helpers/wallet/ledger/journal.py",
     '_DEBIT_ANY_SQL = (update(_USERS).where(_USERS.c.id == bindparam("uid"), _USERS.c.balance_sats >= '
     'bindparam("total"))', '_DEBIT_ANY_SQL = (update(_USERS).where(_USERS.c.id == bindparam("uid"))'),
    ("named:send-ends-a-closed-session", "helpers/ussd/sessions.py",
     '_ACTED = Prepared(update(_SESSIONS).where(_SESSIONS.c.session_id == bindparam("sid"), '
     '_SESSIONS.c.active.is_(True),', '_ACTED = Prepared(update(_SESSIONS).where(_SESSIONS.c.session_id == '
     'bindparam("sid"),'),
]

_SWAPS = {"==": "!=", "!=": "==", "<": "<=", "<=": "<", ">": ">=", ">=": ">", "+": "-", "-": "+",
          "and": "or", "or": "and", "True": "False", "False": "True", "not": "", "abs": ""}


@dataclass(frozen=True)
class Mutant:
    id: str
    path: str
    line: int  # 1-based, for the report
    shown: str  # what changed, e.g. "`a >= b` -> `a > b`"
    source: str  # the whole mutated file
    tests: tuple[str, ...]


def _functions(tree: ast.AST, names: tuple[str, ...]) -> list[tuple[str, int, int]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in names:
            found.append((node.name, node.body[0].lineno, node.end_lineno or node.lineno))
    return found


def _docstring_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            lines.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return lines


def auto_mutants(path: str, names: tuple[str, ...], tests: tuple[str, ...]) -> list[Mutant]:
    """One mutant per swappable operator or name inside the listed functions (log calls left alone)."""
    original = (ROOT / path).read_text(encoding="utf-8")
    tree = ast.parse(original)
    skip = _docstring_lines(tree)
    lines = original.splitlines(keepends=True)
    offsets = [0]
    for text in lines:
        offsets.append(offsets[-1] + len(text))
    tokens = list(tokenize.generate_tokens(io.StringIO(original).readline))
    mutants = []
    for name, first, last in _functions(tree, names):
        n = 0
        for token in tokens:
            row, col = token.start
            if not first <= row <= last or row in skip or token.string not in _SWAPS:
                continue
            if token.type not in (tokenize.OP, tokenize.NAME) or lines[row - 1].lstrip().startswith("log."):
                continue
            new = _SWAPS[token.string]
            start = offsets[row - 1] + col
            end = start + len(token.string) + (1 if new == "" and token.string == "not" else 0)
            source = original[:start] + new + original[end:]
            try:
                ast.parse(source)
            except SyntaxError:
                continue
            n += 1
            before = lines[row - 1].strip()
            after = source.splitlines()[row - 1].strip()
            mutants.append(Mutant(f"{path}:{name}:{n}", path, row, f"`{before}` -> `{after}`", source, tests))
    return mutants


def named_mutants() -> tuple[list[Mutant], list[str]]:
    mutants, stale = [], []
    for mutant_id, path, text, new in NAMED:
        original = (ROOT / path).read_text(encoding="utf-8")
        if original.count(text) != 1:
            stale.append(f"{mutant_id}: `{text[:60]}` is not in {path} exactly once")
            continue
        line = original[:original.index(text)].count("\n") + 1
        shown = f"`{' '.join(text.split())}` -> `{' '.join(new.split())}`"
        mutants.append(Mutant(mutant_id, path, line, shown, original.replace(text, new), TARGETS[path][1]))
    return mutants, stale


def all_mutants() -> tuple[list[Mutant], list[str]]:
    mutants, stale = named_mutants()
    for path, (names, tests) in TARGETS.items():
        if path.endswith(".py"):
            mutants.extend(auto_mutants(path, names, tests))
    return mutants, stale


# ------------------------------------------------------------------ running them
class Workspace:
    """A copy of the working tree (tracked and new files, not ignored ones) to mutate."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="mutation-"))
        listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,  # noqa: S607
                                capture_output=True, check=True).stdout.decode().split("\0")
        for name in filter(None, listed):
            source = ROOT / name
            if source.is_file():
                target = self.root / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)

    def run(self, args: list[str], timeout_s: float) -> tuple[int | None, float]:
        """pytest's exit code (None: timed out) and the seconds it took. pytest-xdist ends a run
        stopped by -x at its first failure with exit code 2 (interrupted): that is a failure, 1."""
        started = time.monotonic()
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}  # a mutant's .pyc must never outlive it
        try:
            done = subprocess.run([sys.executable, "-m", "pytest", *args], cwd=self.root, env=env,  # noqa: S603
                                  capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None, time.monotonic() - started
        code = done.returncode
        if code == 2 and re.search(r"stopping after \d+ failures", done.stdout[-4000:]):
            code = 1
        return code, time.monotonic() - started

    def existing(self, tests: tuple[str, ...]) -> list[str]:
        return [name for name in tests if (self.root / name).exists()]

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _verdict(code: int | None) -> str:
    if code is None:
        return "killed (timeout)"
    return {0: "survived", 1: "killed", 2: "killed (error)"}.get(code, f"error (pytest exit {code})")


def run_all(mutants: list[Mutant], jobs: int, confirm: bool) -> tuple[dict[str, str], float]:
    started = time.monotonic()
    spaces = [Workspace() for _ in range(jobs)]
    free = list(spaces)
    lock = threading.Lock()
    results: dict[str, str] = {}
    try:
        base_tests = sorted({name for m in mutants for name in spaces[0].existing(m.tests)})
        code, took = spaces[0].run([*base_tests, "-x", "-q", "-m", "not slow"], 1800)
        if code != 0:
            raise SystemExit(f"the tests fail without any mutant (pytest exit {code}): fix them first")
        timeout_s = max(120.0, took * 3)
        print(f"baseline: {len(base_tests)} test files pass in {took:.0f} s; {len(mutants)} mutants, "
              f"{jobs} at a time", flush=True)

        def one(mutant: Mutant) -> None:
            with lock:
                space = free.pop()
            target = space.root / mutant.path
            original = target.read_text(encoding="utf-8")
            try:
                target.write_text(mutant.source, encoding="utf-8")
                code, _ = space.run([*space.existing(mutant.tests), "-x", "-q", "-m", "not slow"], timeout_s)
                verdict = _verdict(code)
                if verdict == "survived" and confirm:
                    code, _ = space.run([*FAST, "-x", "-q", "-n", "2"], timeout_s * 4)
                    verdict = _verdict(code)
                    verdict = verdict if verdict == "survived" else verdict + " by the whole fast tier"
            finally:
                target.write_text(original, encoding="utf-8")
                with lock:
                    free.append(space)
            with lock:
                results[mutant.id] = verdict
                print(f"[{len(results)}/{len(mutants)}] {verdict:<16} {mutant.id} {mutant.shown[:100]}", flush=True)

        with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
            list(pool.map(one, mutants))
    finally:
        for space in spaces:
            space.remove()
    return results, time.monotonic() - started


# ------------------------------------------------------------------ the record and the report
def _score(results: dict[str, str]) -> tuple[int, int]:
    killed = sum(verdict.startswith("killed") for verdict in results.values())
    return killed, len(results)


def regressions(previous: dict[str, str], results: dict[str, str]) -> list[str]:
    return [mutant_id for mutant_id, verdict in results.items()
            if verdict == "survived" and previous.get(mutant_id, "").startswith("killed")]


def write_report(mutants: list[Mutant], results: dict[str, str], stale: list[str], seconds: float,
                 jobs: int, confirm: bool, partial: bool) -> None:
    record = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    record.update(results)
    RECORD.write_text(json.dumps(dict(sorted(record.items())), indent=1) + "\n")
    by_id = {m.id: m for m in mutants}
    killed, total = _score(record)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,  # noqa: S607
                            text=True).stdout.strip()
    lines = [
        "<!-- mutation:begin (written by scripts/mutation.py; edit the text after mutation:end) -->",
        f"**Score: {killed} of {total} mutants killed ({100 * killed / max(total, 1):.0f}%).** Last run "
        f"{dt.date.today().isoformat()} on {commit} (+ working tree): {len(results)} mutants"
        f"{' (a subset)' if partial else ''} in {seconds / 60:.0f} min, {jobs} at a time"
        f"{', survivors confirmed against the whole fast tier' if confirm else ''}.",
        "",
        "| module | mutants | killed | survived |",
        "|---|---|---|---|",
    ]
    modules = sorted({mutant_id.split(":")[0] if not mutant_id.startswith("named:") else "named (issue 31)"
                      for mutant_id in record})
    for module in modules:
        mine = {k: v for k, v in record.items()
                if (k.startswith("named:") and module.startswith("named")) or k.split(":")[0] == module}
        k, n = _score(mine)
        lines.append(f"| {module} | {n} | {k} | {n - k} |")
    survivors = sorted(mutant_id for mutant_id, verdict in record.items() if not verdict.startswith("killed"))
    lines += ["", f"Survivors ({len(survivors)}):", ""]
    for mutant_id in survivors:
        mutant = by_id.get(mutant_id)
        where = f"line {mutant.line}: {mutant.shown}" if mutant else "(not run this time)"
        lines.append(f"- `{mutant_id}` {record[mutant_id]}, {where}")
    if stale:
        lines += ["", "Named mutants whose line has changed (update NAMED in scripts/mutation.py):", ""]
        lines += [f"- {item}" for item in stale]
    lines.append("<!-- mutation:end -->")
    block = "\n".join(lines)
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
    if "<!-- mutation:begin" in text and "<!-- mutation:end -->" in text:
        head, tail = text.split("<!-- mutation:begin")[0], text.split("<!-- mutation:end -->", 1)[1]
    else:
        head, tail = "# Mutation testing\n", "\n"
    DOC.write_text(head.rstrip("\n") + "\n\n" + block + tail, encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", action="append", help="run the mutants whose id contains this (repeatable)")
    parser.add_argument("--named", action="store_true", help="run the named mutants of issue 31 only")
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    parser.add_argument("-j", "--jobs", type=int, default=2, help="mutants run at once (a copy of the tree each)")
    parser.add_argument("--confirm", action="store_true", help="run survivors against the whole fast tier")
    parser.add_argument("--accept", action="store_true", help="record the result even if the score fell")
    args = parser.parse_args()
    mutants, stale = all_mutants()
    everything = len(mutants)
    if args.named:
        mutants = [m for m in mutants if m.id.startswith("named:")]
    if args.only:
        mutants = [m for m in mutants if any(part in m.id for part in args.only)]
    if args.list:
        for mutant in mutants:
            print(f"{mutant.id}  line {mutant.line}: {mutant.shown}")
        print(f"{len(mutants)} mutants" + "".join(f"\nstale: {item}" for item in stale))
        return 0
    if not mutants:
        print("no mutant matches")
        return 1
    results, seconds = run_all(mutants, args.jobs, args.confirm)
    previous = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    worse = regressions(previous, results)
    killed, total = _score(results)
    print(f"{killed} of {total} killed in {seconds / 60:.1f} min")
    if worse and not args.accept:
        print("killed before, surviving now (nothing recorded):\n  " + "\n  ".join(worse))
        return 1
    write_report(mutants, results, stale, seconds, args.jobs, args.confirm, partial=len(mutants) < everything)
    print(f"written: {DOC.relative_to(ROOT)}, {RECORD.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
