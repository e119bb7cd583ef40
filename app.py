"""The application factory: settings, services, blueprints and operator commands.

Development: `python app.py` (port 5000, embedded defaults). Production:
`gunicorn "app:create_app()"` with MySQL, see README. Routes live in helpers/web/ (one blueprint
per surface), commands in helpers/web/cli.py.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import sys
from typing import Any

from dotenv import load_dotenv
from flask import Flask, Response, jsonify, request
from sqlalchemy.exc import OperationalError, ProgrammingError
from werkzeug.exceptions import HTTPException

from database import Database
from helpers.infra import i18n, logs, sms
from helpers.infra.config import ConfigError, finalise, load_config
from helpers.infra.settings import Settings
from helpers.airtime.provider import AirtimeConfigError, create_airtime
from helpers.airtime.rail import AirtimeRail
from helpers.mpesa.provider import MpesaConfigError, create_provider
from helpers.idcheck.registry import create_registry
from helpers.simswap.provider import SimSwapConfigError, create_sim_swap
from helpers.lightning.rail import LightningRail
from helpers.mpesa.rail import MpesaPayoutRail
from helpers.ussd import sessions
from helpers.wallet import prices
from helpers.wallet.customers import limits
from helpers.wallet import demo
from helpers.wallet.rules import policy
from helpers.wallet.services import Services
from helpers.web import admin, aml_admin, callbacks, cli, lnurl, probes, simulator, ussd_endpoint, worker
from helpers.web import demo as demo_routes
from helpers.web.common import plain, unavailable_reply
from lightning import LightningConfigError, create_backend
from models import AIRTIME_RAIL, LIGHTNING_RAIL, MPESA_B2B_RAIL, MPESA_B2C_RAIL

log = logging.getLogger("wallet")
# What a bad setting raises while the app is built: each names the setting in one line.
CONFIG_ERRORS = (ConfigError, LightningConfigError, MpesaConfigError, AirtimeConfigError, prices.PriceConfigError,
                 SimSwapConfigError)


def _one_line_for_a_bad_setting(kind: type[BaseException], value: BaseException, trace: Any) -> None:
    """Every entry point that builds the app (`flask db-upgrade`, `flask worker`, any other `flask`
    command, `python app.py`) stops on a bad setting with one line naming it and exit status 1,
    not a traceback; any other uncaught error is printed as Python would."""
    if isinstance(value, CONFIG_ERRORS):
        print(f"configuration: {value}", file=sys.stderr)
    else:
        _python_hook(kind, value, trace)


_python_hook = sys.excepthook
sys.excepthook = _one_line_for_a_bad_setting


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app: defaults, then environment (and .env), then `test_config`."""
    load_dotenv()
    app = Flask(__name__, instance_relative_config=True)
    os.makedirs(app.instance_path, exist_ok=True)
    app.config.update(load_config(app.instance_path))
    if test_config:
        app.config.update(test_config)
    finalise(app.config)
    settings = Settings.from_mapping(app.config)  # typed and frozen: what the code reads from here on
    if not app.testing:
        _configure_logging(settings.log_level)
    i18n.set_customer_care(settings.service_name, settings.support_phone)

    db = Database(settings.database_url, settings.db_pool_size, settings.db_pool_recycle_s,
                  settings.db_timeout_s)
    if settings.auto_create_schema:
        _migrate(db)
    backend = create_backend(settings, db)
    svc = Services(db, policy(), backend, create_provider(settings),
                   sms.SmsDispatcher(db, sms.make_sender(settings)), settings)
    svc.openings = sessions.Openings(db, settings.write_behind_s)
    svc.airtime = create_airtime(settings)
    svc.sim_swap = create_sim_swap(settings)
    svc.id_registry = create_registry(settings)
    svc.rails[AIRTIME_RAIL] = lambda made: AirtimeRail(made.airtime) if made.airtime is not None else None
    svc.rails[LIGHTNING_RAIL] = lambda made: LightningRail(made.lightning)
    svc.rails[MPESA_B2C_RAIL] = lambda made: MpesaPayoutRail(made.mpesa, MPESA_B2C_RAIL)
    svc.rails[MPESA_B2B_RAIL] = lambda made: MpesaPayoutRail(made.mpesa, MPESA_B2B_RAIL)
    svc.prices = prices.PriceBook(db, settings, svc.policy)
    app.extensions["wallet"] = svc
    app.extensions["request_counter"] = limits.RequestCounter(db, settings.write_behind_s)
    svc.policy.warm_up()
    if settings.demo_mode:
        try:
            demo.seed_demo(db)
        except (OperationalError, ProgrammingError):  # no schema yet: `flask db-upgrade` is what runs now
            log.warning("demo users not seeded: the database has no schema yet (flask --app app db-upgrade)")

    if settings.trusted_proxy_count:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxy_count)  # type: ignore[method-assign]
    app.teardown_appcontext(db.remove_session)
    app.before_request(logs.clear)  # a log line never carries the ids of another request
    if settings.worker_in_process and settings.invoice_poll_s > 0:  # else: `flask worker` does the work
        app.before_request(lambda: worker.ensure_started(svc))
    _register_blueprints(app, settings)
    cli.register(app)
    return app


def _register_blueprints(app: Flask, settings: Settings) -> None:
    # The console's session cookie: signed with a key derived from PIN_PEPPER (a secret production
    # requires), sent only to us (SameSite=Strict) and only over https where we are served so.
    app.secret_key = hmac.new(settings.pin_pepper.encode(), b"operator console session", hashlib.sha256).hexdigest()
    app.config.update(SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SECURE=settings.public_url.startswith("https://"))
    for blueprint in (ussd_endpoint.bp, callbacks.bp, lnurl.bp, probes.bp, simulator.bp, admin.bp,
                      aml_admin.bp):
        app.register_blueprint(blueprint)
    if settings.demo_mode:
        app.register_blueprint(demo_routes.bp)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)


def _http_error(exc: HTTPException) -> tuple[Response, int]:
    return jsonify({"error": exc.name}), exc.code or 500


def _unexpected(exc: Exception) -> Response:
    log.exception("unhandled error on %s", request.path)
    if request.path.startswith("/ussd"):
        return plain(unavailable_reply())
    return Response('{"error": "internal error"}', status=500, mimetype="application/json")


def _configure_logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logs.JsonFormatter())
        root.addHandler(handler)
    else:  # gunicorn's or a test's handlers: the same format for every line
        for present in root.handlers:
            present.setFormatter(logs.JsonFormatter())
    root.setLevel(level)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


def _migrate(db: Database) -> None:
    try:
        db.migrate()
    except OperationalError:  # another worker migrated at the same moment; now it is a no-op
        db.migrate()


def _create_app_or_exit() -> Flask:
    """create_app(), or exit with one line naming the setting that is wrong (no traceback)."""
    try:
        return create_app()
    except CONFIG_ERRORS as exc:
        raise SystemExit(f"configuration: {exc}") from None


def main() -> None:
    """The `satspesa` command (pyproject.toml): the Flask CLI with this app, so `satspesa db-upgrade`,
    `satspesa worker`, `satspesa operator add NAME`, `satspesa run` need no `--app`."""
    from flask.cli import FlaskGroup

    FlaskGroup(name="satspesa", create_app=_create_app_or_exit,
               help="The USSD Lightning wallet's commands (the Flask CLI with this app).")()


def first_minutes(app: Flask, host: str, port: int) -> str:
    """What `make run` prints before serving: where everything is, in plain words."""
    settings: Settings = app.extensions["wallet"].settings
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"  # noqa: S104 (compared, not bound)
    here = os.path.dirname(sys.executable)
    command = os.path.join(here, "satspesa")
    if not os.path.exists(command):
        command = f"{sys.executable} -m flask --app app"
    ussd = "/ussd/<USSD_CALLBACK_TOKEN>" if settings.ussd_callback_token else "/ussd"
    lines = [
        "",
        f"The wallet is running ({'demo: ' if settings.demo_mode else ''}{settings.database_url.split(':')[0]} "
        f"database, {settings.lightning_backend} Lightning). Stop it with Ctrl+C.",
        f"  USSD endpoint (Africa's Talking posts here): {base}{ussd}",
        f"  Phone simulator in your browser:             {base}/simulator" if settings.simulator_enabled
        else "  Phone simulator: off (SIMULATOR_ENABLED=0)",
        f"  Operator console:                            {base}/admin/",
        f"  Health:                                      {base}/status",
        f"  Create an operator for the console (in another terminal): {command} operator add NAME",
        f"  Every command: {command} --help",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    application = _create_app_or_exit()
    served = application.extensions["wallet"].settings  # HOST and PORT checked with every other setting
    bind_host, bind_port = served.host, served.port or 5000
    print(first_minutes(application, bind_host, bind_port), flush=True)
    application.run(host=bind_host, port=bind_port)
