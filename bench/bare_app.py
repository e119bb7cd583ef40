"""The reference: a bare Flask app that answers /ussd without doing anything."""

from flask import Flask, Response

app = Flask(__name__)


@app.post("/ussd")
def ussd() -> Response:
    return Response("END ok", mimetype="text/plain")


@app.get("/status")
def status() -> dict:
    return {"status": "ok"}
