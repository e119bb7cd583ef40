"""Forgot PIN (issue 33): the confirmation that schedules the reset, the screen a reset under way
shows before money out (where the current PIN cancels it), and the new PIN set at the owner's dial
once the reset is due."""

from __future__ import annotations

import datetime as dt

from helpers.ussd import guard
from helpers.ussd.pin_entry import verify_pin
from helpers.ussd.screen import Ctx, expired
from helpers.ussd.walker import End, Home, Result, Retry
from helpers.wallet import pin_reset, sim_swap


class ForgotConfirm:
    """"Forgot PIN": what happens (the delay, money out paused, the current PIN cancels), 1 to
    confirm."""

    secret = False

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t("forgot", hours=ctx.value("pin-reset-delay-h"))

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        if token != "1":
            return Retry(ctx.t("error.option"))
        if not ctx.final:
            return expired(ctx)
        try:
            pin_reset.request(ctx.svc, ctx.user)
        except pin_reset.ResetRefused as exc:
            return End(guard.refusal_text(ctx, exc.reason, sim_swap.PIN_RESET))
        except pin_reset.ResetUnderWay as exc:
            return End(ctx.t("forgot.pending", hours=max(1, pin_reset.hours_left(exc.due_at)),
                             code=ctx.svc.service_code))
        return End(ctx.t("forgot.done", hours=ctx.value("pin-reset-delay-h"), code=ctx.svc.service_code))


class ResetPending:
    """A reset is under way, so money out waits: the current PIN cancels the reset (then the
    customer dials again to pay). Every wrong PIN counts towards the lock, as anywhere."""

    secret = True

    def prompt(self, ctx: Ctx, data: dict) -> str:
        return ctx.t("reset.pending", hours=guard.hours_left(data["due"]))

    def handle(self, ctx: Ctx, data: dict, token: str) -> Result:
        if not ctx.final:
            return expired(ctx)
        decision, _ = guard.check(ctx, sim_swap.MONEY_OUT)  # as the PIN step: no PIN is checked after a swap
        if not decision.allowed:
            return End(guard.refusal_text(ctx, decision.reason))
        refusal = verify_pin(ctx, token)
        if refusal is not None:
            return refusal
        if not pin_reset.cancel(ctx.svc.db, ctx.user.phone, ctx.lang):
            return End(ctx.t("reset.gone"))
        return End(ctx.t("reset.cancelled"))


def save_reset_pin(ctx: Ctx, pin: str) -> Result:
    """The new PIN of a reset now due (the session began with it due): set only with a fresh
    answer about the SIM that came after the due time, and no swap that stops it."""
    due = dt.datetime.fromisoformat(ctx.choices[guard.RESET_DUE])
    done = pin_reset.complete(ctx.svc, ctx.user, due, pin, ctx.started_at)
    if done == pin_reset.WAITING:
        return End(ctx.t("simswap.retry"))
    ctx.choices.pop(guard.RESET_DUE, None)
    if done == pin_reset.STOPPED:
        return End(ctx.t("simswap.hold"))
    if done == pin_reset.NOTHING:
        return End(ctx.t("reset.gone"))
    return Home(ctx.t("pin.set"), onboarded=True)
