"""Real HTTP over loopback against uvicorn serving a real bundle."""
import json
import urllib.error
import urllib.request

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")


@pytest.fixture(scope="module")
def server(tiny_bundle, tmp_path_factory):
    from conftest import live_server

    with live_server(tiny_bundle, tmp_path_factory.mktemp("srv")) as base:
        yield base


def call(base, method, path, body=None, raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(base + path, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_recommend_and_catalog_over_http(server):
    st, body = call(server, "GET", "/health")
    assert st == 200 and body["status"] == "ok"
    st, body = call(server, "POST", "/recommend", {"history": ["m0", "m6"], "k": 4, "explain": True, "query": "funny"})
    assert st == 200 and len(body["items"]) == 4 and body["items"][0]["reasons"]
    st, body = call(server, "POST", "/items", {"items": [{"id": "h1", "title": "Ghost night", "categories": ["Horror"]}]})
    assert st == 200 and body["added"] == ["h1"]
    st, body = call(server, "DELETE", "/items/h1")
    assert st == 200
    st, body = call(server, "DELETE", "/items/h1")
    assert st == 404 and body["error"] == "not_found"
    st, body = call(server, "GET", "/info")
    assert st == 200 and body["variant"] == "int8-avx512vnni"
    st, spec = call(server, "GET", "/openapi.json")
    assert st == 200 and "/recommend" in spec["paths"]


@pytest.mark.parametrize("method, path, body, raw, code", [
    ("POST", "/recommend", {"history": ["m0"], "k": 0}, None, 422),
    ("POST", "/recommend", {"history": "m0"}, None, 422),
    ("POST", "/recommend", {"history": ["m0"], "colour": "red"}, None, 422),
    ("POST", "/recommend", {"history": ["m0"], "strategy": "query"}, None, 400),
    ("POST", "/recommend", {"history": ["m0"], "year_min": 1990, "year_max": 1980}, None, 400),
    ("POST", "/recommend", None, b"{not json", 422),
    ("POST", "/recommend", {"history": ["m0"] * 20000}, None, 422),
    ("POST", "/items", {"items": []}, None, 422),
    ("POST", "/feedback", {"session_id": "s", "item_id": "m1", "event": "love"}, None, 422),
    ("POST", "/feedback", {"session_id": "s", "item_id": "not-an-item", "event": "click"}, None, 404),
    ("POST", "/events", {"events": [{"item_id": "m1", "time": -5}]}, None, 422),
    ("POST", "/events", {"events": []}, None, 422),
    ("POST", "/events", {"events": [{"item_id": "m1", "time": 5}]}, None, 400),  # a static bundle: no trend
    ("GET", "/nope", None, None, 404),
])
def test_bad_requests_get_json_4xx_and_server_keeps_serving(server, method, path, body, raw, code):
    st, resp = call(server, method, path, body, raw)
    assert st == code and "error" in resp and "detail" in resp
    assert call(server, "GET", "/health")[0] == 200


def test_oversized_body_is_refused_by_its_declared_length(server):
    import http.client
    from urllib.parse import urlparse

    u = urlparse(server)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    # declare 2 MB but send little: the server must answer 413 from the header alone, without reading it
    c.putrequest("POST", "/recommend")
    c.putheader("Content-Type", "application/json")
    c.putheader("Content-Length", str(2_000_000))
    c.endheaders()
    c.send(b'{"history": []')
    r = c.getresponse()
    body = json.loads(r.read())
    c.close()
    assert r.status == 413 and body["error"] == "body_too_large"
    assert call(server, "GET", "/health")[0] == 200


@pytest.mark.parametrize("path, raw, code", [
    # a lone surrogate in a list field used to pass validation and fail encoding the response (500)
    ("/recommend", rb'{"history": ["\ud800"], "k": 3}', 400),
    ("/recommend", rb'{"history": ["m0"], "include_categories": ["\udfff"]}', 400),
    ("/recommend", rb'{"history": ["m0"], "query": "funny \ud800"}', 422),  # scalar fields: pydantic refuses
    ("/items", rb'{"items": [{"id": "s1", "title": "x", "categories": ["\ud800"]}]}', 400),
    ("/items", rb'{"items": [{"id": "s\u0001", "title": "x"}]}', 400),
    # booleans are not numbers, strings are not booleans (as in the Python API)
    ("/recommend", rb'{"history": ["m0"], "k": true}', 422),
    ("/recommend", rb'{"history": ["m0"], "explain": "yes"}', 422),
])
def test_unencodable_text_and_bool_numbers_are_refused(server, path, raw, code):
    st, resp = call(server, "POST", path, raw=raw)
    assert st == code and "error" in resp
    st, _ = call(server, "GET", "/health")
    assert st == 200


def test_ids_with_a_slash_can_be_deleted(server):
    st, body = call(server, "POST", "/items", {"items": [{"id": "a/b", "title": "Slashed", "categories": ["Drama"]}]})
    assert st == 200 and body["added"] == ["a/b"]
    st, body = call(server, "DELETE", "/items/a%2Fb")
    assert st == 200 and body["removed"] == ["a/b"]
    st, body = call(server, "DELETE", "/items/a%2Fb")
    assert st == 404


def test_chunked_bodies_are_limited_as_they_arrive(server):
    """F1: a chunked body has no Content-Length; the limit must count the bytes that arrive, and the
    server must not read the rest into memory."""
    import http.client
    from urllib.parse import urlparse

    u = urlparse(server)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=20)
    conn.putrequest("POST", "/recommend")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    chunk = b"[" + b"{}," * 20000  # 60 kB a chunk, 200 chunks = 12 MB if all were read
    try:
        for _ in range(200):
            conn.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        conn.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered and closed before the whole body was sent: that is the point
    r = conn.getresponse()
    body = json.loads(r.read())
    conn.close()
    assert r.status == 413 and body["error"] == "body_too_large"  # before: read in full, then a 422
    st, resp = call(server, "POST", "/recommend", {"history": ["m0"], "k": 2})
    assert st == 200 and len(resp["items"]) == 2


def _req(base, method, path, body=None, headers=None, raw_body=None):
    data = raw_body if raw_body is not None else json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data,
                                 method=method, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _serve_process(tiny_bundle, tmp_path, *extra, **popen):
    """`genre serve` as a real process on a private copy of the tiny bundle (``tmp_path / "b"``, its state in
    ``tmp_path / "state"``), answering /health; (process, base URL). ``popen``: more Popen arguments (env, ...)."""
    import shutil
    import socket
    import subprocess
    import sys
    import time

    shutil.copytree(tiny_bundle / "bundle", tmp_path / "b")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = subprocess.Popen([sys.executable, "-m", "genre_edge.cli", "serve", "--bundle", str(tmp_path / "b"),
                          "--profile", "x86-avx512-vnni", "--state-dir", str(tmp_path / "state"), "--port", str(port),
                          *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if _req(base, "GET", "/health")[0] == 200:
                break
        except OSError:
            time.sleep(0.1)
    return p, base


def test_api_key_protects_writes_and_optionally_reads(tiny_bundle, tmp_path):
    """F5: writes need the key (constant-time compare), declared in OpenAPI; reads too with protect_reads;
    the Host header is checked (DNS rebinding); /info names no absolute path."""
    from conftest import live_server

    item = {"items": [{"id": "k1", "title": "Keyed", "categories": ["Drama"]}]}
    with live_server(tiny_bundle, tmp_path / "a", api_key="s3cret") as base:
        assert _req(base, "POST", "/items", item)[0] == 401
        assert _req(base, "POST", "/items", item, {"X-API-Key": "wrong"})[0] == 401
        assert _req(base, "DELETE", "/items/m1")[0] == 401
        assert _req(base, "POST", "/items", item, {"X-API-Key": "s3cret"}) == (200, {"added": ["k1"]})
        assert _req(base, "POST", "/recommend", {"history": ["m0"], "k": 2})[0] == 200  # reads stay open
        st, spec = _req(base, "GET", "/openapi.json")
        assert "X-API-Key" in json.dumps(spec["components"]["securitySchemes"])
        st, info = _req(base, "GET", "/info")
        assert st == 200 and "/" not in info["bundle"] and str(tmp_path) not in json.dumps(info)
        st, body = _req(base, "GET", "/health", headers={"Host": "evil.example:80"})
        assert st == 400
    with live_server(tiny_bundle, tmp_path / "b", api_key="s3cret", protect_reads=True) as base:
        assert _req(base, "POST", "/recommend", {"history": ["m0"], "k": 2})[0] == 401
        assert _req(base, "POST", "/recommend", {"history": ["m0"], "k": 2}, {"X-API-Key": "s3cret"})[0] == 200
        assert _req(base, "GET", "/health")[0] == 200  # liveness probes need no key


def test_prometheus_metrics_count_requests_by_endpoint_and_status(tiny_bundle, tmp_path):
    from conftest import live_server

    with live_server(tiny_bundle, tmp_path / "m") as base:
        for _ in range(3):
            assert _req(base, "POST", "/recommend", {"history": ["m0"], "k": 2})[0] == 200
        assert _req(base, "POST", "/recommend", {"history": ["m0"], "k": 0})[0] == 422
        assert _req(base, "GET", "/no/such/path/1")[0] == 404
        with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
            text = r.read().decode()
            assert r.headers["content-type"].startswith("text/plain")
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert lines['genre_requests_total{endpoint="/recommend",method="POST",status="200"}'] == "3"
    assert lines['genre_requests_total{endpoint="/recommend",method="POST",status="422"}'] == "1"
    assert lines['genre_requests_total{endpoint="other",method="GET",status="404"}'] == "1"  # bounded labels
    assert lines['genre_request_seconds_count{endpoint="/recommend"}'] == "4"
    assert lines['genre_request_seconds_bucket{endpoint="/recommend",le="+Inf"}'] == "4"
    assert float(lines["genre_catalog_items"]) > 0 and 'variant="int8-avx512vnni"' in text


def test_api_docs_work_offline(server):
    with urllib.request.urlopen(server + "/docs", timeout=10) as r:
        page = r.read().decode()
    assert "POST /recommend" in page and "openapi.json" in page
    assert "unknown_categories (filter names no item has" in page  # what an endpoint answers, not only its inputs
    assert "http://" not in page and "https://" not in page and "<script" not in page  # nothing from a CDN


def test_cli_and_http_writes_share_one_catalog_state(tiny_bundle, tmp_path):
    """F6: `genre items add` while the server runs used to be overwritten by the server's next write.
    Writers now lock, read the other's state and write on top; readers notice the change."""
    import subprocess
    import sys

    from conftest import live_server
    from genre_edge.recommender import Recommender

    work = tmp_path / "w"
    with live_server(tiny_bundle, work) as base:
        for n in range(3):  # interleaved: CLI, then HTTP, three times
            p = subprocess.run([sys.executable, "-m", "genre_edge.cli", "items", "add", "--bundle", str(work / "b"),
                                "--profile", "x86-avx512-vnni", "--state-dir", str(work / "state"), "--id", f"cli{n}",
                                "--title", f"From the command line {n}", "--categories", "Western"],
                               capture_output=True, text=True, timeout=120)
            assert p.returncode == 0, p.stderr
            st, body = call(base, "POST", "/items", {"items": [{"id": f"http{n}", "title": f"Over HTTP {n}",
                                                                 "categories": ["Western"]}]})
            assert st == 200
        st, body = call(base, "DELETE", "/items/cli0")  # the server knows the CLI's items
        assert st == 200
        st, body = call(base, "POST", "/recommend", {"history": [], "include_categories": ["Western"], "k": 20})
        got = {it["id"] for it in body["items"]}
        assert {"cli1", "cli2", "http0", "http1", "http2"} <= got and "cli0" not in got
    rec = Recommender.load(work / "b", "x86-avx512-vnni", state_dir=work / "state")  # a restart keeps every write
    live = {rec.catalog.ids[i] for i in rec.catalog.active_rows()}
    assert {"cli1", "cli2", "http0", "http1", "http2"} <= live and "cli0" not in live


def test_fast_path_answers_valid_recommends_and_leaves_the_rest_to_fastapi(tiny_bundle, tmp_path):
    """Issue 18 speed: valid POST /recommend bodies skip FastAPI (same answer as the Python API);
    anything the fast path does not take gets FastAPI's own answer."""
    from conftest import serve_app, tiny_recommender
    from genre_edge.request import Request
    from genre_edge.server import create_app

    rec = tiny_recommender(tiny_bundle, tmp_path)
    app = create_app(rec)
    with serve_app(app) as base:
        for body in ({"history": ["m0", "m6"], "k": 4, "explain": True, "query": "funny", "mmr_lambda": 0.5},
                     {"history": ["m1"], "k": 3, "include_categories": ["Drama"], "year_min": 1990},
                     {"query": "something scary", "strategy": "query", "k": 2}):
            before = app.fast.answered
            st, got = _req(base, "POST", "/recommend", body)
            assert st == 200 and app.fast.answered == before + 1
            want = rec.recommend(Request.create(**body)).to_dict()
            assert [(i["id"], i["reasons"]) for i in got["items"]] == [(i["id"], i["reasons"]) for i in want["items"]]
            assert got["strategy"] == want["strategy"] and got["parsed"] == want["parsed"]
        # not taken: pydantic's answers, exactly as before (422 with its field locations)
        for body, status in (({"history": ["m0"], "k": "3"}, 422), ({"history": ["m0"], "k": True}, 422),
                             ({"history": None, "k": 3}, 422), ({"history": ["m0"], "k": 0}, 422),
                             ({"history": ["m0"], "bogus": 1}, 422), ({"history": ["m0"], "strategy": "query"}, 400)):
            before = app.fast.answered
            st, got = _req(base, "POST", "/recommend", body)
            assert st == status and app.fast.answered == before, (body, st, got)
            assert got["error"] in ("invalid_request", "bad_request")
        assert _req(base, "POST", "/recommend", raw_body=b"[1, 2")[0] == 422  # not JSON: FastAPI says so


def test_workers_share_catalog_updates_and_refuse_sessions(tiny_bundle, tmp_path):
    """`genre serve --workers 2`: two processes on one port; an item added through one is recommended
    by both; session feedback (kept per process) is refused with the reason; SIGTERM stops them."""
    import signal

    p, base = _serve_process(tiny_bundle, tmp_path, "--workers", "2")
    try:
        item = {"items": [{"id": "w1", "title": "Worker film", "categories": ["Zzworkers"], "year": 2020}]}
        assert _req(base, "POST", "/items", item) == (200, {"added": ["w1"]})
        for _ in range(40):  # new connections: the kernel spreads them over both workers
            st, got = _req(base, "POST", "/recommend", {"history": ["m0"], "k": 3, "include_categories": ["Zzworkers"]})
            assert st == 200 and [i["id"] for i in got["items"]] == ["w1"]
        st, got = _req(base, "POST", "/feedback", {"session_id": "s", "item_id": "m0"})
        assert st == 400 and "--workers" in got["detail"]
        st, got = _req(base, "POST", "/recommend", {"history": ["m0"], "k": 3, "session_id": "s"})
        assert st == 400 and "--workers" in got["detail"]
        from pathlib import Path

        workers = [c for t in Path(f"/proc/{p.pid}/task").iterdir() for c in (t / "children").read_text().split()]
        assert len(workers) >= 2, workers  # the uvicorn supervisor's children
    finally:
        p.send_signal(signal.SIGTERM)
        out = p.communicate(timeout=30)[0]
    assert p.returncode == 0, out


def test_partial_and_idle_connections_are_closed(tiny_bundle, tmp_path, monkeypatch):
    """Issue 18: a connection that sends nothing, part of the headers or part of a body is closed after
    the request-read deadline; an idle keep-alive connection after the keep-alive timeout; whole
    requests are unaffected."""
    import socket
    import time

    import genre_edge.server as server
    from conftest import serve_app, tiny_recommender

    monkeypatch.setattr(server, "REQUEST_READ_TIMEOUT_S", 1.0)
    monkeypatch.setattr(server, "KEEP_ALIVE_S", 1)
    app = server.create_app(tiny_recommender(tiny_bundle, tmp_path))
    with serve_app(app, **server.uvicorn_options()) as base:
        port = int(base.rsplit(":", 1)[1])
        body = b'{"history": ["m0"], "k": 2}'
        whole = (b"POST /recommend HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body) + body)
        socks = []
        for data in (b"", b"POST /recommend HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le", whole[:-5], whole):
            c = socket.create_connection(("127.0.0.1", port))
            c.sendall(data)
            c.settimeout(5)
            socks.append(c)
        assert socks[3].recv(15) == b"HTTP/1.1 200 OK"  # a whole request is answered
        t0 = time.monotonic()
        for c in socks:
            while c.recv(4096):  # the rest of the response, then the server's close
                pass
        assert time.monotonic() - t0 < 4  # all four closed by the server (deadline 1 s, keep-alive 1 s)


def test_reload_swaps_in_a_verified_bundle_and_keeps_the_old_one_on_failure(tiny_bundle, tmp_path):
    """Issue 18: POST /admin/reload (and SIGHUP, below) loads the bundle folder again; catalog updates
    stay; a bundle that fails verification is refused with the reason and the running one keeps serving."""
    import json as _json

    from conftest import live_server

    with live_server(tiny_bundle, tmp_path / "r") as base:
        item = {"items": [{"id": "kept1", "title": "Kept across reloads", "categories": ["Zzkept"]}]}
        assert _req(base, "POST", "/items", item)[0] == 200
        st, got = _req(base, "POST", "/admin/reload")
        assert st == 200 and got["reloaded"] and got["reloads"] == 1
        st, got = _req(base, "POST", "/recommend", {"history": ["m0"], "k": 2, "include_categories": ["Zzkept"]})
        assert st == 200 and [i["id"] for i in got["items"]] == ["kept1"]
        b = tmp_path / "r" / "b"
        m = _json.loads((b / "manifest.json").read_text())
        victim = b / m["catalog"]["popularity"]
        victim.write_bytes(victim.read_bytes()[:-4] + b"\0\0\0\1")  # tampered: its sha256 no longer matches
        st, got = _req(base, "POST", "/admin/reload")
        assert st == 400 and "sha256" in got["detail"]
        assert _req(base, "POST", "/recommend", {"history": ["m0"], "k": 2})[0] == 200  # still serving
        assert _req(base, "GET", "/info")[1]["reloads"] == 1


def test_sighup_reloads_a_running_server(tiny_bundle, tmp_path):
    import signal
    import time

    p, base = _serve_process(tiny_bundle, tmp_path)
    try:
        p.send_signal(signal.SIGHUP)
        for _ in range(100):
            if _req(base, "GET", "/info")[1].get("reloads") == 1:
                break
            time.sleep(0.1)
        assert _req(base, "GET", "/info")[1]["reloads"] == 1 and p.poll() is None
        assert _req(base, "POST", "/recommend", {"history": ["m0"], "k": 2})[0] == 200
    finally:
        p.send_signal(signal.SIGTERM)
        out = p.communicate(timeout=30)[0]
    # uvicorn drains, shuts down, then re-raises the signal it caught (exit by SIGTERM is its clean exit)
    assert p.returncode in (0, -signal.SIGTERM) and "Traceback" not in out, out
