"""Schemathesis against the server's own OpenAPI description, over real HTTP on loopback.

Every operation gets up to 1,000 generated requests (fixed seed, so CI runs the same cases): the
server must never answer 5xx, every 4xx must be a JSON error that says what was wrong, and it must
keep serving afterwards.
"""
import json
import os
import urllib.request

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402

from conftest import live_server, needs_tiny_bundle  # noqa: E402

pytestmark = needs_tiny_bundle
CASES = int(os.environ.get("GENRE_FUZZ_CASES", "1000"))


@pytest.fixture(scope="module")
def base_url(tiny_bundle, tmp_path_factory):
    with live_server(tiny_bundle, tmp_path_factory.mktemp("fuzz")) as base:
        yield base


def _operations(base_url):
    schema = schemathesis.openapi.from_url(base_url + "/openapi.json")
    return {op.ok().label: op.ok() for op in schema.get_all_operations()}


# The operations the server documents; a test per operation (schemathesis' own pytest plugin does not
# run under pytest 9 yet, so its Hypothesis strategies are driven directly).
OPERATIONS = ["POST /recommend", "POST /items", "GET /items", "DELETE /items/{item_id}", "POST /feedback", "GET /health", "GET /info",
              "GET /metrics", "POST /events", "POST /admin/reload"]


def test_every_documented_operation_is_fuzzed(base_url):
    assert set(_operations(base_url)) == set(OPERATIONS)


@pytest.mark.parametrize("label", OPERATIONS)
def test_no_5xx_and_json_errors(base_url, label):
    op = _operations(base_url)[label]
    seen = []

    @given(case=op.as_strategy())
    # a reload has no inputs to explore and loads the whole bundle: a few calls say all there is
    @settings(max_examples=5 if label == "POST /admin/reload" else CASES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case):
        resp = case.call(base_url=base_url, timeout=10)
        seen.append(resp.status_code)
        assert resp.status_code < 500, f"{label}: {resp.status_code} {resp.text[:300]}"
        if resp.status_code >= 400:
            body = resp.json()  # raises if the error is not JSON
            assert isinstance(body.get("error"), str) and body["error"], body
            assert "detail" in body

    run()
    assert seen, "no case was generated"
    codes = {c: seen.count(c) for c in sorted(set(seen))}
    print(f"{label}: {len(seen)} requests, status codes {codes}")
    if label.startswith(("POST", "DELETE")) and label != "POST /admin/reload":  # operations with inputs: explored
        assert len(seen) >= min(CASES, 200)


def test_still_serving_after_fuzzing(base_url):
    with urllib.request.urlopen(base_url + "/health", timeout=5) as r:
        assert r.status == 200 and json.loads(r.read())["status"] == "ok"
