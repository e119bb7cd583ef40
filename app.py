"""The application factory: settings, services, blueprints and operator commands.

Development: `python app.py` (port 5000, embedded defaults). Production:
`gunicorn "app:create_app()"` with MySQL, see README. Routes live in helpers/web/ (one blueprint
per surface), commands in helpers/web/cli.py.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from dotenv import load_dotenv
from flask import Flask, Response, jsonify, request
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from database import Database
from helpers.infra import sms
from helpers.infra.config import finalise, load_config
from helpers.mpesa.provider import create_provider
from helpers.ussd import sessions
from helpers.wallet import demo, limits, poller
from helpers.wallet.rules import policy
from helpers.wallet.services import Services
from helpers.web import callbacks, cli, lnurl, probes, simulator, ussd_endpoint
from helpers.web import demo as demo_routes
from helpers.web.common import plain, unavailable_reply
from lightning import create_backend

log = logging.getLogger("wallet")


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app: defaults, then environment (and .env), then `test_config`."""
    load_dotenv()
    app = Flask(__name__, instance_relative_config=True)
    os.makedirs(app.instance_path, exist_ok=True)
    app.config.update(load_config(app.instance_path))
    if test_config:
        app.config.update(test_config)
    finalise(app.config)
    if not app.testing:
        _configure_logging(app.config["LOG_LEVEL"])

    db = Database(app.config["DATABASE_URL"], app.config["DB_POOL_SIZE"], app.config["DB_POOL_RECYCLE_S"],
                  app.config["DB_TIMEOUT_S"])
    if app.config["AUTO_CREATE_SCHEMA"]:
        _migrate(db)
    backend = create_backend(app.config)
    svc = Services(db, policy(), backend, create_provider(app.config),
                   sms.SmsDispatcher(db, sms.make_sender(app.config)), app.config)
    svc.openings = sessions.Openings(db, app.config["WRITE_BEHIND_S"])
    app.extensions["wallet"] = svc
    app.extensions["request_counter"] = limits.RequestCounter(db, app.config["WRITE_BEHIND_S"])
    svc.policy.warm_up()
    if app.config["DEMO_MODE"]:
        demo.seed_demo(db)

    if app.config["TRUSTED_PROXY_COUNT"]:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=app.config["TRUSTED_PROXY_COUNT"])  # type: ignore[method-assign]
    app.teardown_appcontext(db.remove_session)
    if app.config["INVOICE_POLL_S"] > 0:  # also asks M-Pesa about pending pushes and payouts
        app.before_request(lambda: poller.ensure_started(svc))
    _register_blueprints(app)
    cli.register(app)
    return app


def _register_blueprints(app: Flask) -> None:
    for blueprint in (ussd_endpoint.bp, callbacks.bp, lnurl.bp, probes.bp, simulator.bp):
        app.register_blueprint(blueprint)
    if app.config["DEMO_MODE"]:
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
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


def _migrate(db: Database) -> None:
    try:
        db.migrate()
    except OperationalError:  # another worker migrated at the same moment; now it is a no-op
        db.migrate()


if __name__ == "__main__":
    create_app().run(host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "5000")))
