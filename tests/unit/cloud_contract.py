"""Check what went over the wire against the OpenAPI contract (docs/cloud-api.yaml): every
request the daemon sent (headers, path parameters, body) and every answer the fake backend gave
(status, content type, headers, body, and for entitlements the JWS header and claims).

Used at the teardown of the cloud test fixtures, on :attr:`FakeCloud.log`.  Answers a fault mode
breaks on purpose (``simulator.cloud.NONCONFORMING_FAULTS``) are not held to the contract; the
requests that drew them still are."""

from __future__ import annotations

import base64
import functools
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

import yaml
from jsonschema import Draft202012Validator

from dashbridge.simulator.cloud import NONCONFORMING_FAULTS, Logged

SPEC_PATH = Path(__file__).parents[2] / "docs" / "cloud-api.yaml"


@functools.cache
def spec() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())
    return doc


@dataclass(frozen=True)
class Operation:
    op_id: str
    method: str
    template: str
    regex: re.Pattern[str]
    node: dict[str, Any]
    path_params: tuple[dict[str, Any], ...]


def _deref(node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node and len(node) == 1:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        cur: Any = spec()
        for part in ref[2:].split("/"):
            cur = cur[part]
        node = cur
    return node


@functools.cache
def operations() -> tuple[Operation, ...]:
    out = []
    for template, item in spec()["paths"].items():
        rx = re.compile("^" + re.sub(r"\\\{[a-z_]+\\\}", "([^/]+)", re.escape(template)) + "$")
        shared = [_deref(p) for p in item.get("parameters", [])]
        for method, node in item.items():
            if method == "parameters":
                continue
            params = shared + [_deref(p) for p in node.get("parameters", [])]
            out.append(Operation(node["operationId"], method.upper(), template, rx, node, tuple(params)))
    return tuple(out)


def validator(schema: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator({**schema, "components": spec()["components"]})


def schema_errors(schema: dict[str, Any], value: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message[:200]}"
            for e in validator(schema).iter_errors(value)]


def component(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def find_operation(method: str, path: str) -> Operation | None:
    for op in operations():
        if op.method == method and op.regex.match(path):
            return op
    return None


def _headers(d: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in d.items()}


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def check_request(entry: Logged) -> list[str]:
    op = find_operation(entry.method, entry.path)
    if op is None:
        return [f"{entry.method} {entry.path}: no such operation in the contract"]
    where = f"{op.op_id} request"
    problems: list[str] = []
    headers = _headers(entry.request_headers)
    m = op.regex.match(entry.path)
    assert m is not None
    path_names = re.findall(r"\{([a-z_]+)\}", op.template)
    for name, raw in zip(path_names, m.groups(), strict=True):
        [param] = [p for p in op.path_params if p["in"] == "path" and p["name"] == name]
        problems += [f"{where}: path {name}: {e}" for e in schema_errors(param["schema"], unquote(raw))]
    query = parse_qs(entry.query, keep_blank_values=True)
    specified = {p["name"]: p for p in op.path_params if p["in"] == "query"}
    for name, values in query.items():
        if name not in specified:
            problems.append(f"{where}: query parameter {name} is not in the contract")
            continue
        for value in values:
            problems += [f"{where}: query {name}: {e}" for e in schema_errors(specified[name]["schema"], value)]
    for p in op.path_params:
        if p["in"] != "header":
            continue
        value = headers.get(p["name"].lower())
        if value is None:
            if p.get("required"):
                problems.append(f"{where}: header {p['name']} missing")
            continue
        problems += [f"{where}: header {p['name']}: {e}" for e in schema_errors(p["schema"], value)]
    # Accept must name the media type of the operation's success answer.
    ok = [c for s, r in op.node["responses"].items() if s.startswith("2") for c in _deref(r).get("content", {})]
    accept = [a.split(";")[0].strip() for a in headers.get("accept", "").split(",")]
    if ok and not set(ok) & set(accept):
        problems.append(f"{where}: Accept {headers.get('accept')!r}, the answer comes as {ok}")
    body = op.node.get("requestBody")
    if body is None:
        if entry.request_body:
            problems.append(f"{where}: a body where none is specified")
        return problems
    body = _deref(body)
    ctype = headers.get("content-type", "").split(";")[0].strip()
    if ctype not in body["content"]:
        return [*problems, f"{where}: Content-Type {ctype!r}, expected {list(body['content'])}"]
    try:
        value = json.loads(entry.request_body)
    except ValueError:
        return [*problems, f"{where}: body is not JSON"]
    problems += [f"{where} body: {e}" for e in schema_errors(body["content"][ctype]["schema"], value)]
    return problems


def check_answer(entry: Logged) -> list[str]:
    op = find_operation(entry.method, entry.path)
    if op is None or entry.status < 0 or not entry.delivered or entry.fault in NONCONFORMING_FAULTS:
        return []
    responses = op.node["responses"]
    key = next((k for k in (str(entry.status), f"{entry.status // 100}XX", "default") if k in responses), None)
    where = f"{op.op_id} answer {entry.status}"
    if key is None:
        return [f"{where}: status not in the contract"]
    resp = _deref(responses[key])
    headers = _headers(entry.answer_headers)
    problems: list[str] = []
    for name, h in resp.get("headers", {}).items():
        h = _deref(h)
        value = headers.get(name.lower())
        if value is None:
            if h.get("required"):
                problems.append(f"{where}: header {name} missing")
            continue
        problems += [f"{where}: header {name}: {e}" for e in schema_errors(h["schema"], value)]
    content = resp.get("content")
    if not content:
        if entry.answer_body:
            problems.append(f"{where}: a body where none is specified")
        return problems
    ctype = headers.get("content-type", "").split(";")[0].strip()
    if ctype not in content:
        return [*problems, f"{where}: Content-Type {ctype!r}, expected {list(content)}"]
    schema = content[ctype]["schema"]
    if ctype == "application/jose":
        jws: Any = entry.answer_body.decode("ascii", "replace")
        problems += [f"{where} body: {e}" for e in schema_errors(schema, jws)]
    else:
        try:
            value = json.loads(entry.answer_body)
        except ValueError:
            return [*problems, f"{where}: body is not JSON"]
        problems += [f"{where} body: {e}" for e in schema_errors(schema, value)]
        jws = value.get("entitlements") if isinstance(value, dict) and op.op_id.startswith("getEntitlements") \
            and entry.status == 200 else None
    if op.op_id.startswith("getEntitlements") and entry.status == 200 and isinstance(jws, str):
        parts = jws.strip().split(".")
        try:
            header, claims = json.loads(_b64(parts[0])), json.loads(_b64(parts[1]))
        except (ValueError, IndexError):
            return [*problems, f"{where}: the JWS parts are not base64url JSON"]
        problems += [f"{where} JWS header: {e}" for e in schema_errors(component("EntitlementsJwsHeader"), header)]
        problems += [f"{where} JWS claims: {e}" for e in schema_errors(component("EntitlementClaims"), claims)]
    return problems


def contract_problems(log: Iterable[Logged], *, requests: bool = True) -> list[str]:
    problems: list[str] = []
    for entry in log:
        if requests:
            problems += check_request(entry)
        problems += check_answer(entry)
    return problems


def assert_contract(cloud: Any, *, requests: bool = True) -> None:
    """Every request (when ``requests``: the daemon made them) and every answer in the fake's log
    follows docs/cloud-api.yaml."""
    problems = contract_problems(cloud.log, requests=requests)
    assert not problems, "cloud contract broken:\n" + "\n".join(dict.fromkeys(problems))
