"""LLM enrichment against a real HTTP server on loopback that speaks the OpenAI chat-completions
protocol, including slow, failing, malformed, truncated and off-schema answers."""
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from conftest import have_export

pytestmark = pytest.mark.skipif(not have_export(), reason="export extra not installed")


class FakeLLM:
    """Answers item prompts by the item they name: 'story 3 ' slow, 'story 5 ' HTTP 500 once, 'story 7 ' not JSON,
    'story 9 ' truncated, 'story 11 ' off schema; everything else a valid answer."""

    def __init__(self):
        self.calls: dict[str, int] = {}
        self.auth: set[str] = set()
        self.bodies: list[dict] = []
        self.times: dict[str, list[float]] = {}
        self.lock = threading.Lock()
        fake = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][-1]["content"]
                with fake.lock:
                    fake.calls[prompt] = fake.calls.get(prompt, 0) + 1
                    n = fake.calls[prompt]
                    fake.auth.add(self.headers.get("Authorization", ""))
                    fake.bodies.append(body)
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": "no such path"})
                finish, content = "stop", None
                special = prompt.startswith("Item:")  # user prompts list many titles: always answer them
                if not special:
                    pass
                elif "story 3 " in prompt:
                    time.sleep(1.0)
                elif "story 5 " in prompt and n == 1:
                    return self._send(500, {"error": "overloaded"})
                elif "story 13 " in prompt and n == 1:  # rate limited: come back in a second
                    with fake.lock:
                        fake.times.setdefault("story 13 ", []).append(time.monotonic())
                    return self._send(429, {"error": {"message": "slow down"}}, {"Retry-After": "1"})
                elif "story 13 " in prompt:
                    with fake.lock:
                        fake.times.setdefault("story 13 ", []).append(time.monotonic())
                elif "story 7 " in prompt:
                    content = "Sure! Here is the JSON you asked for: {description: nice"
                elif "story 9 " in prompt:
                    content, finish = '{"description": "A long sto', "length"
                elif "story 11 " in prompt:
                    content = json.dumps({"description": "x", "keywords": [f"k{i}" for i in range(20)]})
                if content is None:
                    if "Return {\"profile\"" in prompt:
                        content = json.dumps({"profile": "Likes things."})
                    elif "Suggest" in prompt:
                        content = json.dumps({"items": [{"title": "Made Up", "genres": ["Drama"]}]})
                    else:
                        content = "```json\n" + json.dumps({"description": "About " + prompt[6:30],
                                                            "keywords": ["a", "b", "c"]}) + "\n```"
                self._send(200, {"id": "x", "object": "chat.completion", "model": body["model"],
                                 "choices": [{"index": 0, "finish_reason": finish,
                                              "message": {"role": "assistant", "content": content}}],
                                 "usage": {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30}})

            def _send(self, code, obj, headers=None):
                data = json.dumps(obj).encode()
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def item_calls(self, tag):
        return sum(n for p, n in self.calls.items() if tag in p and p.startswith("Item:"))


@pytest.fixture
def fake_llm():
    f = FakeLLM()
    yield f
    f.server.shutdown()


def write_conf(tmp_path, toy_data, url, **tasks):
    t = {"items": True, "users": False, "synthetic": False, **tasks}
    text = (f'name = "toy"\nout = "{tmp_path / "enrich"}"\n[data]\nsource = "{toy_data}"\n'
            f'[backend]\nbase_url = "{url}"\nmodel = "fixture-model"\napi_key_env = "GENRE_TEST_KEY"\n'
            'timeout_s = 0.4\nmax_retries = 2\nbackoff_s = 0.01\nconcurrency = 4\n[tasks]\n'
            + "".join(f"{k} = {str(v).lower()}\n" for k, v in t.items()))
    p = tmp_path / "enrich.toml"
    p.write_text(text)
    return p


def test_enrichment_validates_retries_caches_and_resumes(toy_data, tmp_path, fake_llm, monkeypatch, caplog):
    from genre_edge import config as cfgmod
    from genre_edge_export.data import load_dataset
    from genre_edge_export.llm import EnrichConfig, enrich

    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("GENRE_TEST_KEY", "sekrit-123")
    conf = cfgmod.load(EnrichConfig, write_conf(tmp_path, toy_data, fake_llm.url))
    n = len(load_dataset(toy_data).items)
    res = enrich(conf, progress=False)
    st = res["tasks"]["items"]
    assert st["rejected"] == 4 and st["generated"] == n - 4 and st["tokens"] == 30 * (n - 4)
    out = tmp_path / "enrich"
    rows = [json.loads(x) for x in (out / "items.v1.jsonl").read_text().splitlines()]
    assert len(rows) == n - 4 and all(r["model"] == "fixture-model" and len(r["keywords"]) == 3 for r in rows)
    reasons = {json.loads(x)["id"]: json.loads(x)["reason"] for x in (out / "rejects.jsonl").read_text().splitlines()}
    assert set(reasons) == {"m3", "m7", "m9", "m11"}
    assert "TimeoutError" in reasons["m3"] or "timed out" in reasons["m3"]
    assert "not JSON" in reasons["m7"] and "truncated" in reasons["m9"] and "at most 8" not in reasons["m11"]
    assert "entries, allowed 1..8" in reasons["m11"]
    assert fake_llm.item_calls("story 3 ") == 3  # 1 try + 2 retries, then recorded and skipped
    assert fake_llm.item_calls("story 5 ") == 2  # HTTP 500, then a good answer
    assert fake_llm.item_calls("story 7 ") == 1  # a bad answer is not retried
    t13 = fake_llm.times["story 13 "]  # HTTP 429 with Retry-After: 1 -> asked again a second later, not 0.01 s
    assert len(t13) == 2 and t13[1] - t13[0] >= 0.95
    assert fake_llm.auth == {"Bearer sekrit-123"} and "sekrit" not in caplog.text
    body = fake_llm.bodies[0]
    assert body["response_format"]["type"] == "json_schema" and body["model"] == "fixture-model"
    # resume: finished items are not asked again; the rejected ones are retried
    before = dict(fake_llm.calls)
    res2 = enrich(conf, progress=False)
    assert res2["tasks"]["items"]["done_before"] == n - 4 and res2["tasks"]["items"]["generated"] == 0
    assert fake_llm.item_calls("story 1 ") == before[next(p for p in before if "story 1 " in p)]
    # the output file is gone: the cache answers, nothing is generated twice
    (out / "items.v1.jsonl").unlink()
    calls = sum(fake_llm.calls.values())
    with open(out / "cache.jsonl", "a") as fh:
        fh.write('{"key": "torn')  # a crash mid-write
    res3 = enrich(conf, progress=False)
    assert res3["tasks"]["items"]["from_cache"] == n - 4 and res3["tasks"]["items"]["generated"] == 0
    assert sum(fake_llm.calls.values()) - calls == 4 + 2  # only the rejected ones (m3 three times)


def test_an_endpoint_nothing_listens_on_stops_the_run_with_its_address(toy_data, tmp_path, monkeypatch):
    """Nothing listening at base_url: the run stops once the first items have used their retries, with an
    error naming the address (it went on through every item's retries and reported success, each item a
    'rejected' answer); no answer of the endpoint is recorded as rejected."""
    import socket

    from genre_edge import config as cfgmod
    from genre_edge.errors import GenreError
    from genre_edge_export.data import load_dataset
    from genre_edge_export.llm import BACKENDS, EnrichConfig, enrich

    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("GENRE_TEST_KEY", "k")
    conf = cfgmod.load(EnrichConfig, write_conf(tmp_path, toy_data, f"http://127.0.0.1:{port}/v1"))
    be, calls = BACKENDS["openai"](conf.backend), []  # the real client, its calls counted
    real = be.complete
    be.complete = lambda prompt, task: (calls.append(prompt), real(prompt, task))[1]
    with pytest.raises(GenreError, match=rf"cannot reach the LLM endpoint http://127\.0\.0\.1:{port}/v1 "
                                         r"\(APIConnectionError.*stopped at task 'items': nothing generated"):
        enrich(conf, progress=False, backend=be)
    # the items in flight (concurrency 4) used their 3 tries; the other items were not asked at all
    n = len(load_dataset(toy_data).items)
    assert 3 <= len(calls) <= 4 * 3 < n * 3
    rejects = tmp_path / "enrich" / "rejects.jsonl"
    assert not rejects.exists() or rejects.read_text().strip() == ""


def test_user_profiles_synthetic_items_and_training_input(toy_data, tmp_path, fake_llm, monkeypatch):
    from genre_edge import config as cfgmod
    from genre_edge_export.llm import EnrichConfig, enrich

    monkeypatch.setenv("GENRE_TEST_KEY", "k")
    conf = cfgmod.load(EnrichConfig, write_conf(tmp_path, toy_data, fake_llm.url, items=True, users=True,
                                                synthetic=True, sparse_max=100, limit=5))
    res = enrich(conf, progress=False)
    assert res["tasks"]["users"]["generated"] == 5 and res["tasks"]["synthetic"]["generated"] == 5
    out = tmp_path / "enrich"
    prof = [json.loads(x) for x in (out / "users.v1.jsonl").read_text().splitlines()]
    assert prof[0]["profile"] == "Likes things." and prof[0]["id"].startswith("u")
    # training reads the item enrichment through the template
    from conftest import tiny_config, tiny_encoder
    from genre_edge_export.prepare import Prepared

    tc = tiny_config(toy_data, tiny_encoder(tmp_path / "enc"),
                     data={"enrichment": str(out / "items.v1.jsonl")},
                     encoder={"template": "{title}. {description} Keywords: {keywords}."})
    items = Prepared(tc).data.items
    # the first 5 items were asked; m3's answer timed out, so it has no enrichment (empty fields)
    assert [bool(d) for d in items.text["description"][:6]] == [True, True, True, False, True, False]
    assert items.text["keywords"][0] == "a, b, c" and items.text["keywords"][3] == ""


def test_bad_enrichment_configs_name_the_problem(toy_data, tmp_path, monkeypatch):
    from genre_edge.cli import main
    from click.testing import CliRunner

    p = write_conf(tmp_path, toy_data, "ftp://nowhere")
    r = CliRunner().invoke(main, ["augment", "llm", "--config", str(p)])
    assert r.exit_code == 1 and "base_url must start with http" in r.output
    monkeypatch.delenv("GENRE_TEST_KEY", raising=False)
    p = write_conf(tmp_path, toy_data, "http://127.0.0.1:9")
    r = CliRunner().invoke(main, ["augment", "llm", "--config", str(p)])
    assert r.exit_code == 1 and "GENRE_TEST_KEY is not set" in r.output


def test_user_profiles_and_synthetic_items_blend_into_training_and_evaluation(toy_data, tmp_path):
    from genre_edge_export.data import load_dataset
    from genre_edge.errors import ConfigError

    from conftest import tiny_config, tiny_encoder
    from genre_edge_export.ab import replay
    from genre_edge_export.scoring import Scorer
    from genre_edge_export.train import train
    from genre_edge_export.trainer import Trainer

    ds = load_dataset(toy_data)
    prof, syn = tmp_path / "users.v1.jsonl", tmp_path / "synthetic.v1.jsonl"
    with open(prof, "w") as fh:  # every other user has a profile (as the LLM task writes them)
        for u in ds.users[::2]:
            fh.write(json.dumps({"id": u, "model": "m", "v": 1, "profile": f"{u} likes Comedy and Drama."}) + "\n")
    with open(syn, "w") as fh:  # user 1 (no profile) and user 0 (a profile too) get synthetic items
        for u in ds.users[:2]:
            fh.write(json.dumps({"id": u, "model": "m", "v": 1, "items": [
                {"title": "Made Up", "genres": ["Drama"]}, {"title": "Also Made Up", "genres": ["Comedy"],
                                                            "description": "A comedy."}]}) + "\n")
    enc = tiny_encoder(tmp_path / "enc")
    with pytest.raises(ConfigError, match="needs data.user_profiles and/or data.synthetic_items"):
        tiny_config(toy_data, enc, user_model={"profile_weight": 0.5})
    conf = tiny_config(toy_data, enc, data={"user_profiles": str(prof), "synthetic_items": str(syn)},
                       user_model={"profile_weight": 0.5})
    t = Trainer(conf, tmp_path / "t", progress=False)
    assert t.prep.profiles[0] == [f"{ds.users[0]} likes Comedy and Drama.", "Made Up. Genres: Drama.",
                                  "Also Made Up. Genres: Comedy."]
    assert t.prep.profiles[1] == ["Made Up. Genres: Drama.", "Also Made Up. Genres: Comedy."]
    assert t.prep.profiles[3] == []
    t._bottom_cache()
    P, has = t.profile_vectors()
    assert has.sum() == len(ds.users[::2]) + 1 and has[0] and has[1] and not has[3]
    assert float(P[3].abs().sum()) == 0 and float(P[1].abs().sum()) > 0
    rows = t.prof_row0 + np.flatnonzero(t.prof_owner == 0)  # user 0: the mean of their three texts
    assert np.allclose(P[0].numpy(), t.encode(rows, False).numpy().mean(0), atol=1e-6)
    sc = t.scorer(t.all_embeddings(), t.prep.hist)
    plain = Scorer(conf, t.rec, t.all_embeddings(), t.prep.hist)
    users = np.array([0, 1, 3])
    a, b = sc.user_vectors(users), plain.user_vectors(users)
    assert not np.allclose(a[0], b[0]) and not np.allclose(a[1], b[1]) and np.allclose(a[2], b[2])
    rep = train(conf, tmp_path / "m", progress=False)
    assert rep["teacher"]["test"]["users"] > 0
    # the A/B replay scores the model with the same texts, as training evaluated it
    ab = replay(str(tmp_path / "m"), str(tmp_path / "m"), str(tmp_path / "m" / "config.toml"), which="test",
                n_boot=100)
    assert abs(ab["arms"]["A"]["ndcg@10"] - rep["teacher"]["test"]["ndcg@10"]) < 1e-6


def test_answers_are_parsed_strictly_and_repeated_keywords_kept_once():
    from genre_edge_export.llm import AnswerError, parse_answer

    got = parse_answer('{"description": "A film.", "keywords": ["grind", "Grind ", "dark", "grind"]}', "items")
    assert got["keywords"] == ["grind", "dark"]
    assert parse_answer('```json\n{"profile": "Likes westerns."}\n```', "users") == {"profile": "Likes westerns."}
    for bad in ('{"description": "x"}', '{"description": "", "keywords": ["a"]}', "[1, 2]", "no json",
                '{"description": "x", "keywords": ["a"], "cast": ["made up"]}'):
        with pytest.raises(AnswerError):
            parse_answer(bad, "items")


def test_enrichment_files_are_checked_when_training_reads_them(tmp_path):
    from genre_edge.errors import ConfigError, GenreError
    from genre_edge_export.llm import load_item_enrichment, load_user_profiles

    f = tmp_path / "items.v1.jsonl"
    f.write_text('{"id": "1", "description": "ok", "keywords": ["a"]}\n{"id": "2", "description": "x"}\n')
    with pytest.raises(GenreError, match="record for '2' is not a valid 'items' answer"):
        load_item_enrichment(f, ["1", "2"])
    with pytest.raises(ConfigError, match="data.user_profiles: .* is not a file"):
        load_user_profiles(tmp_path / "nope.jsonl", ["u"])
    f.write_text('{"id": "1", "description": "old", "keywords": ["a"]}\n{"id": "1", "description": "new", '
                 '"keywords": ["b", "c"]}\n')
    assert load_item_enrichment(f, ["1", "9"]) == {"description": ["new", ""], "keywords": ["b, c", ""]}


def test_user_prompts_read_training_events_only(toy_data):
    """No validation, test or cold item of a user ever reaches that user's prompt (the LLM's answer
    becomes model input)."""
    from genre_edge import config as cfgmod
    from genre_edge_export.data import load_dataset
    from genre_edge_export.llm import EnrichConfig, _jobs
    from genre_edge_export.split import make_split

    conf = cfgmod.from_dict(EnrichConfig, {"data": {"source": str(toy_data)}, "backend": {"model": "m"},
                                           "tasks": {"users": True, "history_items": 200},
                                           "split": {"kind": "cold_item", "cold_quantile": 0.6}}, "t:")
    ds = load_dataset(toy_data)
    split = make_split(ds, conf.split)
    prompts = dict(_jobs("users", ds, conf))
    held = [split.user_items(x) for x in (split.valid, split.test, split.cold_test, split.cold_valid)]
    train = split.train_histories()
    checked = 0
    for u, uid in enumerate(ds.users):
        p = prompts.get(uid, "")
        for per_user in held:
            for i in per_user[u]:
                if i not in set(train[u].tolist()):
                    assert f"- {ds.items.title[i]} (" not in p, (uid, ds.items.title[i])
                    checked += 1
        for i in train[u]:
            assert ds.items.title[i] in p  # the check is live: training items are there
    assert checked > 50


def test_strict_schemas_require_every_property_and_null_optionals_are_accepted():
    """Issue 19: OpenAI's strict mode refuses optional properties; the synthetic-item description was
    one. The strict form lists every property as required and lets the optional ones be null; an
    answer with a null description is then accepted as if it had none."""
    from genre_edge_export.llm import SCHEMAS, parse_answer, strict_schema

    st = strict_schema(SCHEMAS["synthetic"])
    item = st["properties"]["items"]["items"]
    assert set(item["required"]) == set(item["properties"]) == {"title", "genres", "description"}
    assert item["properties"]["description"]["type"] == ["string", "null"]
    assert item["properties"]["title"]["type"] == "string"

    def every_object_strict(s):
        if s.get("type") == "object" or "object" in s.get("type", []):
            assert set(s["required"]) == set(s["properties"]) and s["additionalProperties"] is False
            for v in s["properties"].values():
                every_object_strict(v)
        if s.get("type") == "array":
            every_object_strict(s["items"])
    for task in SCHEMAS:
        every_object_strict(strict_schema(SCHEMAS[task]))
    got = parse_answer(json.dumps({"items": [{"title": "T", "genres": ["Drama"], "description": None}]}), "synthetic")
    assert got == {"items": [{"title": "T", "genres": ["Drama"]}]}
