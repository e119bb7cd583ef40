"""The path walker: Africa's Talking sends the whole input history (`1*0712345678*5000`); we
replay it from the root screen, token by token, to find the screen to show now.

A screen handles one token and answers Push (go deeper), Retry (stay, say why), Back (go up one,
say why), Home (to the main menu, say something) or End (close the session). `0` goes back and
`00` goes to the main menu, handled here for every screen below the main menu. Only the last token
may act (move money, set a PIN): `ctx.final` tells a screen whether its token is the last one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Union
from collections.abc import Callable

from helpers.infra.i18n import gsm7_length

MAX_SCREEN = 160
BACK, HOME = "0", "00"


@dataclass(frozen=True)
class Push:
    screen: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Retry:
    message: str


@dataclass(frozen=True)
class Back:
    message: str


@dataclass(frozen=True)
class Home:
    message: str
    onboarded: bool = False  # the tokens so far were onboarding; later requests skip them


@dataclass(frozen=True)
class End:
    text: str


Result = Union[Push, Retry, Back, Home, End]


class Screen(Protocol):
    secret: bool  # its input is a PIN: never stored or logged

    def prompt(self, ctx: Any, data: dict[str, Any]) -> str: ...

    def handle(self, ctx: Any, data: dict[str, Any], token: str) -> Result: ...


@dataclass
class Frame:
    screen: str
    data: dict[str, Any]


@dataclass
class Outcome:
    reply: str  # "CON ..." or "END ..."
    screen: str  # where the walk stopped, for the session row and logs
    trail: str  # the screens the tokens were typed on, e.g. "main>send.phone>..." (never the tokens)
    onboarding_tokens: int  # tokens at the start of the path that belong to onboarding
    last_was_secret: bool = False  # the last token was a PIN: its result must be remembered
    heading: str = ""  # the first line of the screen shown, without any note above it (CON only)


def fit(text: str) -> str:
    """Keep a screen within 160 GSM-7 characters (catalog tests make this a no-op)."""
    length = gsm7_length(text)
    if length is None:
        text = "".join(c if gsm7_length(c) else "?" for c in text)
        length = gsm7_length(text)
    while length is not None and length > MAX_SCREEN:
        text = text[:-1]
        length = gsm7_length(text)
    return text


def walk(
    screens: dict[str, Screen],
    ctx: Any,
    root: str,
    tokens: list[str],
    onboarding_tokens: int = 0,
    set_position: Callable[[int, bool], None] | None = None,
    memory: dict[str, int] | None = None,
    dialled: str | None = None,
    trail: list[str] | None = None,
) -> Outcome:
    """Replay `tokens` from `root` and render the screen reached.

    `memory` (kept in the session row) records which tokens were refused when they were the
    last one: some checks (balance, a code already used) depend on data that changes, so a
    replay must not let through what the customer saw refused.

    `dialled`: the tokens came in the code the customer dialled (the session's first request),
    and this is the END to answer if one of them falls on a secret screen: a PIN there would
    stay in the phone's call log and the gateway's logs, so it is never checked or counted.

    `trail`: the caller's list, to which the walk appends each screen a token was typed on (so a
    screen that saves its session itself can save it too)."""
    memory = {} if memory is None else memory
    stack = [Frame(root, {})]
    note = ""
    trail = [] if trail is None else trail
    start = len(trail)
    secret_last = False
    onboarded = onboarding_tokens
    navigable = root == "main"
    for index, token in enumerate(tokens):
        final = index == len(tokens) - 1
        if set_position:
            set_position(onboarding_tokens + index, final)
        frame = stack[-1]
        screen = screens[frame.screen]
        trail.append(frame.screen)
        secret_last = screen.secret and token not in (BACK, HOME)
        if navigable and token == HOME and len(stack) > 1:
            stack, note = stack[:1], ""
            continue
        if navigable and token == BACK and len(stack) > 1:
            stack.pop()
            note = ""
            continue
        if dialled is not None and screen.secret:
            return Outcome("END " + fit(dialled), frame.screen, ">".join(trail[start:]), onboarded)
        position = onboarding_tokens + index
        if not final and memory.get(f"r{position}"):
            continue  # refused when it was typed; the customer then typed something else
        result = screen.handle(ctx, frame.data, token)
        if final and isinstance(result, Retry):
            memory[f"r{position}"] = 1
        if isinstance(result, Push):
            stack.append(Frame(result.screen, result.data))
            note = ""
        elif isinstance(result, Retry):
            note = result.message
        elif isinstance(result, Back):
            if len(stack) > 1:
                stack.pop()
            note = result.message
        elif isinstance(result, Home):
            stack, note = [Frame("main", {})], result.message
            if result.onboarded:
                onboarded = index + 1
            navigable = True
        else:  # End
            return Outcome("END " + fit(result.text), frame.screen, ">".join(trail[start:]), onboarded, secret_last)
    frame = stack[-1]
    body = screens[frame.screen].prompt(ctx, frame.data)
    text = f"{note}\n{body}" if note else body
    if note and (gsm7_length(text) or MAX_SCREEN + 1) > MAX_SCREEN:
        text = body  # the screen itself fits; a note that does not is dropped, not the menu's end
    return Outcome("CON " + fit(text), frame.screen, ">".join(trail[start:]), onboarded, secret_last,
                   heading=body.split("\n", 1)[0])
