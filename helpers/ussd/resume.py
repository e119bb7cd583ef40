"""A dropped session resumed: Africa's Talking ends a session after 180 s or when the network
drops it, often in the middle of a payment. The next dial within atoms.metta's resume-window-s
asks whether to continue where it stopped (showing what was being done) or start over.

What is kept of a session for this: the path typed so far (`choices["resume"]`), only while the
session is on a RESUMABLE screen and no token of the path was typed on a secret screen (a PIN
is never stored, never replayed). Continuing replays that path in the new session, with the old
session's choices (quotes, resolved addresses); the PIN is asked in the new session, always.
"""

from __future__ import annotations

from typing import Any

from helpers.ussd import sessions
from helpers.ussd.screen import Ctx
from helpers.ussd.walker import MAX_SCREEN, Outcome, Screen

RESUME = "resume"  # the path of a session on a resumable screen
FROM = "resume_from"  # a new session's: the dropped session it offered to continue
OLD_PATH, OLD_CHOICES, WHAT, TAKEN = "resume_path", "resume_choices", "resume_what", "resume_taken"


def keep_path(ctx: Ctx, screens: dict[str, Screen], outcome: Outcome, onboarded_here: bool) -> None:
    """Remember this step's path in the session's choices if the session could be resumed here."""
    typed_on = [name for name in outcome.trail.split(">") if name] if outcome.trail else []
    resumable = (outcome.reply.startswith("CON") and outcome.screen in sessions.RESUMABLE and not onboarded_here
                 and not any(screens[name].secret for name in typed_on if name in screens)
                 and FROM not in ctx.choices)
    if not resumable:
        ctx.choices.pop(RESUME, None)
        ctx.choices.pop(WHAT, None)
        return
    first_line = outcome.heading[:90]  # what the screen is about, never a note above it ("Invalid choice.")
    if outcome.screen == "pin" and first_line == ctx.t("pin.enter").split("\n", 1)[0]:
        # a bare PIN prompt says nothing of the payment: continue at the screen before it, which
        # does (and said so when it was shown); reached in one request, it cannot be offered
        if WHAT in ctx.choices:
            ctx.choices[RESUME] = "*".join(ctx.req.text.split("*")[:-1])
        else:
            ctx.choices.pop(RESUME, None)
        return
    ctx.choices[RESUME], ctx.choices[WHAT] = ctx.req.text, first_line


def offer(ctx: Ctx, dropped: str) -> str | None:
    """The question to open a new session with, when `dropped` can be continued; None if not."""
    found = sessions.dropped_session(ctx.svc.db, dropped)
    if found is None or not found[1].get(RESUME):
        return None
    old = found[1]
    what = old.get(WHAT)  # what the screen it stopped at is about: the recipient and the amount
    if not what:
        return None
    ctx.choices.update({FROM: dropped, OLD_PATH: old[RESUME], WHAT: what,
                        OLD_CHOICES: {k: v for k, v in old.items() if k not in (RESUME, WHAT)}})
    return "CON " + question(ctx)


def question(ctx: Ctx, note: str = "") -> str:
    text = ctx.t("resume", what=ctx.choices.get(WHAT, ""))
    return (f"{note}\n{text}" if note else text)[:MAX_SCREEN]


def answer(ctx: Ctx, tokens: list[str]) -> tuple[list[str], str | None]:
    """The tokens to walk in a session that was offered to continue, and a note: continue (1)
    prefixes the dropped session's path, start over (2) drops the answer; anything else asks again
    (the note is the question)."""
    if not tokens:
        return tokens, None
    answered = next((n for n, token in enumerate(tokens) if token in ("1", "2")), None)
    if answered is None:  # every answer so far was neither: asked again
        return [], question(ctx, ctx.t("error.option"))
    choice, rest = tokens[answered], tokens[answered + 1:]
    if choice == "1":
        old_path: str = ctx.choices.get(OLD_PATH, "")
        old_choices: dict[str, Any] = dict(ctx.choices.get(OLD_CHOICES) or {})
        if not rest:  # the moment it is continued: the dropped session is taken over, if still possible
            ctx.choices[TAKEN] = sessions.close_to_continue(ctx.svc.db, ctx.choices[FROM])
        if not ctx.choices.get(TAKEN):  # it ended or began paying meanwhile: nothing to continue
            return [], "END " + ctx.t("resume.gone")
        for key, value in old_choices.items():
            ctx.choices.setdefault(key, value)
        return (old_path.split("*") if old_path else []) + rest, None
    if not rest:
        sessions.not_offered_again(ctx.svc.db, ctx.choices[FROM])
    return rest, None
