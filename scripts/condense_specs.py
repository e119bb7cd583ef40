"""Write tests/fakes/specs/{lnd,btcpay}.json: what this project uses of LND's and BTCPay's REST APIs,
read from their official OpenAPI files (../shared/specs, see SOURCES.tsv there).

For each endpoint the backends call (helpers/lightning/lnd.py, btcpay.py): the method and path
template, the path and query parameters and the request body's fields with their types (as the
spec declares them, so a field the spec allows can be sent without the official files), and the
response fields the code reads, each checked to exist in the spec. Facts only: names and types, no
descriptions. The fakes (tests/fakes/fake_lnd.py, fake_btcpay.py) check every request against
these files, so a clone without ../shared/specs runs the same checks.

    python scripts/condense_specs.py            # rewrite the files from ../shared/specs
    python scripts/condense_specs.py --check    # exit 1 when the committed files differ

A new endpoint or a new response field read: add it to USES below and run the script."""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT.parent / "shared" / "specs"
OUT = ROOT / "tests" / "fakes" / "specs"

# (method, path template as in the spec) -> the response fields the code reads (dotted: nested).
_PAYMENT_READS = ["result.status", "result.fee_sat", "result.payment_preimage", "result.failure_reason",
                  "error.message"]
_STORE = "/api/v1/stores/{storeId}/lightning/{cryptoCode}"
USES: dict[str, dict[tuple[str, str], list[str]]] = {
    "lnd": {
        ("POST", "/v1/invoices"): ["r_hash", "payment_request"],
        ("GET", "/v1/invoice/{r_hash_str}"): ["state"],
        ("POST", "/v2/router/send"): _PAYMENT_READS,
        ("GET", "/v2/router/track/{payment_hash}"): _PAYMENT_READS,
        ("GET", "/v1/balance/channels"): ["local_balance.sat", "balance"],
    },
    "btcpay": {
        ("POST", f"{_STORE}/invoices"): ["BOLT11", "id"],
        ("GET", f"{_STORE}/invoices/{{id}}"): ["status"],
        ("POST", f"{_STORE}/invoices/pay"): ["status", "feeAmount", "preimage"],
        ("GET", f"{_STORE}/payments/{{paymentHash}}"): ["status", "feeAmount", "preimage"],
        ("GET", f"{_STORE}/balance"): ["offchain.local"],
    },
}
LND_FILES = ("lightning.swagger.json", "router.swagger.json", "invoices.swagger.json")
LND_VERSIONS = {"master": "lnd", "v0.20.3-beta": "lnd/v0.20.3-beta"}  # name -> folder under SPECS


class Schemas:
    """The named schemas of one API, with $ref and allOf resolved."""

    def __init__(self, named: dict[str, Any], prefix: str) -> None:
        self.named, self.prefix = named, prefix

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        seen = 0
        while True:
            if "$ref" in schema:
                schema = self.named[schema["$ref"].removeprefix(self.prefix)]
            elif "allOf" in schema and "properties" not in schema:
                parts = [self.resolve(part) for part in schema["allOf"]]
                merged: dict[str, Any] = {key: schema[key] for key in ("type", "format") if key in schema}
                for part in parts:
                    merged.setdefault("properties", {}).update(part.get("properties", {}))
                    for key in ("type", "format"):
                        if key in part:
                            merged.setdefault(key, part[key])
                schema = merged
            else:
                return schema
            seen += 1
            if seen > 20:
                raise ValueError("a $ref cycle")

    def kind(self, schema: dict[str, Any]) -> dict[str, str]:
        """{"type": ..., "format": ...} of a field, as far as the spec says."""
        resolved = self.resolve(schema)
        found = {key: resolved[key] for key in ("type", "format") if isinstance(resolved.get(key), str)}
        if resolved.get("type") == "array" and "items" in resolved:
            found["items"] = self.kind(resolved["items"]).get("type", "")
        return found

    def name_of(self, schema: dict[str, Any]) -> str:
        return schema.get("$ref", "").removeprefix(self.prefix)

    def field(self, schema: dict[str, Any], dotted: str, where: str) -> dict[str, str]:
        current = schema
        for part in dotted.split("."):
            properties = self.resolve(current).get("properties", {})
            if part not in properties:
                raise SystemExit(f"{where}: the code reads {dotted!r}, which the spec's response does not have")
            current = properties[part]
        return self.kind(current)


def _operation(paths: dict[str, Any], method: str, template: str, api: str) -> dict[str, Any]:
    operation = paths.get(template, {}).get(method.lower())
    if not isinstance(operation, dict):
        raise SystemExit(f"{api}: {method} {template} is not in the official spec")
    return operation


def condense_lnd(folder: Path) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    definitions: dict[str, Any] = {}
    for name in LND_FILES:
        doc = json.loads((folder / name).read_text())
        paths.update(doc["paths"])
        definitions.update(doc.get("definitions", {}))
    schemas = Schemas(definitions, "#/definitions/")
    operations = []
    for (method, template), reads in USES["lnd"].items():
        operation = _operation(paths, method, template, "LND")
        parameters = operation.get("parameters", [])
        entry: dict[str, Any] = {
            "method": method, "path": template,
            "path_params": {p["name"]: schemas.kind(p) for p in parameters if p["in"] == "path"},
            "query": {p["name"]: schemas.kind(p) for p in parameters if p["in"] == "query"},
            "body": None,
        }
        body = next((p for p in parameters if p["in"] == "body"), None)
        if body is not None:
            resolved = schemas.resolve(body["schema"])
            entry["body"] = {"schema": schemas.name_of(body["schema"]),
                             "fields": {k: schemas.kind(v) for k, v in sorted(resolved.get("properties", {}).items())}}
        response = operation["responses"]["200"]["schema"]
        entry["reads"] = {f: schemas.field(response, f, f"LND {method} {template}") for f in reads}
        operations.append(entry)
    return {"operations": operations}


def condense_btcpay(folder: Path) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    named: dict[str, Any] = {}
    parameters_named: dict[str, Any] = {}
    for path in sorted(folder.glob("swagger.template*.json")):
        doc = json.loads(path.read_text())
        paths.update(doc.get("paths", {}))
        named.update(doc.get("components", {}).get("schemas", {}))
        parameters_named.update(doc.get("components", {}).get("parameters", {}))
    schemas = Schemas(named, "#/components/schemas/")

    def parameter(p: dict[str, Any]) -> dict[str, Any]:
        return parameters_named[p["$ref"].rsplit("/", 1)[-1]] if "$ref" in p else p

    operations = []
    for (method, template), reads in USES["btcpay"].items():
        operation = _operation(paths, method, template, "BTCPay")
        parameters = [parameter(p) for p in paths[template].get("parameters", []) + operation.get("parameters", [])]
        entry: dict[str, Any] = {
            "method": method, "path": template,
            "path_params": {p["name"]: schemas.kind(p.get("schema", {})) for p in parameters if p["in"] == "path"},
            "query": {p["name"]: schemas.kind(p.get("schema", {})) for p in parameters if p["in"] == "query"},
            "body": None,
        }
        body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
        if body is not None:
            resolved = schemas.resolve(body)
            entry["body"] = {"schema": schemas.name_of(body),
                             "fields": {k: schemas.kind(v) for k, v in sorted(resolved.get("properties", {}).items())}}
        response = operation["responses"]["200"]["content"]["application/json"]["schema"]
        entry["reads"] = {f: schemas.field(response, f, f"BTCPay {method} {template}") for f in reads}
        operations.append(entry)
    return {"operations": operations}


def condensed(specs: Path = SPECS) -> dict[str, str]:
    """File name -> the JSON text this script writes."""
    lnd = {"about": "What this project uses of LND's REST API, per version; written by "
                    "scripts/condense_specs.py from lnrpc's *.swagger.json. Facts: names and types.",
           "versions": {name: condense_lnd(specs / folder) for name, folder in LND_VERSIONS.items()}}
    btcpay = {"about": "What this project uses of BTCPay Server's Greenfield API; written by "
                       "scripts/condense_specs.py from swagger.template*.json. Facts: names and types.",
              **condense_btcpay(specs / "btcpay")}
    return {name: json.dumps(doc, indent=1, sort_keys=True) + "\n"
            for name, doc in (("lnd.json", lnd), ("btcpay.json", btcpay))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed files, write nothing")
    parser.add_argument("--specs", type=Path, default=SPECS, help="the official specs (default: %(default)s)")
    args = parser.parse_args()
    if not args.specs.is_dir():
        print(f"no official specs at {args.specs}: nothing to condense", file=sys.stderr)
        return 2
    differ = False
    for name, text in condensed(args.specs).items():
        target = OUT / name
        old = target.read_text() if target.exists() else ""
        if args.check:
            if old != text:
                differ = True
                sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), text.splitlines(True),
                                                           f"committed {name}", f"from the specs {name}"))
        else:
            OUT.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    if differ:
        print("the condensed specs differ from the official ones: run python scripts/condense_specs.py",
              file=sys.stderr)
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
