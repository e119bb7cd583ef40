"""Forgot PIN (issue 33): the confirmation that schedules the reset, and the screen a reset under
way shows before money out, where the current PIN cancels it."""

from __future__ import annotations

from helpers.ussd import guard
from helpers.ussd.pin_entry import verify_pin
from helpers.ussd.screen import Ctx, expired
from helpers.ussd.walker import End, Result, Retry
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
        refusal = verify_pin(ctx, token)
        if refusal is not None:
            return refusal
        pin_reset.cancel(ctx.svc.db, ctx.user.phone, ctx.lang)
        return End(ctx.t("reset.cancelled"))
