"""LLM enrichment (as in GENRE): item descriptions and keywords, user interest profiles, and
synthetic items for users with very few interactions, from a generative LLM.

Backends: any OpenAI-compatible chat-completions endpoint by base URL (llama.cpp's server, Ollama,
vLLM, a hosted API; the key is read from an environment variable and never logged), or llama.cpp
in process (``llama-cpp-python``, the ``llm`` extra) for a local GGUF file.

Every answer must be one JSON object matching a bounded schema (lengths, counts); a bad, truncated
or failing answer is recorded in ``rejects.jsonl`` and skipped, never fatal. Results are appended to
versioned JSONL files next to the data (``<data>/<name>.enrich/<task>.v1.jsonl``): a run that stops
resumes where it was, and a cache keyed by model id + prompt hash means nothing is generated twice.

Small local models invent plots and casts (SmolLM2-135M, Gemma 3 270M were tried): no default
here is one of them, and any gain must be measured (``genre ab``) before it is claimed.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from genre_edge import config as cfg
from genre_edge.errors import ConfigError, GenreError, MissingExtraError
from genre_edge.text_template import render

from .data import load_dataset
from .data.domain import domain
from .data.fetch import DATASETS
from .split import SplitConfig, make_split
from .train_config import DataConfig

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
TASKS = ("items", "users", "synthetic")


@dataclass(frozen=True)
class BackendConfig:
    kind: str = cfg.choice("openai", ("openai", "llama_cpp"), "openai = any OpenAI-compatible chat endpoint")
    base_url: str = "http://127.0.0.1:8080/v1"
    model: str = ""  # the model id sent to the endpoint (and part of the cache key)
    api_key_env: str = ""  # name of the environment variable holding the key ("" = no key)
    model_path: str = ""  # llama_cpp: a local GGUF file
    timeout_s: float = cfg.bounded(60.0, 0.1, 3600.0)
    max_retries: int = cfg.bounded(3, 0, 20)
    backoff_s: float = cfg.bounded(1.0, 0.0, 600.0, "first retry wait; doubles each retry (with jitter)")
    concurrency: int = cfg.bounded(4, 1, 256)
    temperature: float = cfg.bounded(0.2, 0.0, 2.0)
    max_tokens: int = cfg.bounded(256, 16, 8192)
    json_mode: str = cfg.choice("schema", ("schema", "object", "none"),
                                "how the endpoint is asked for JSON: response_format json_schema / json_object / not")

    def validate(self):
        if not self.model and self.kind == "openai":
            raise ConfigError("backend.model: the model id to request is required")
        if self.kind == "llama_cpp" and not self.model_path:
            raise ConfigError("backend.model_path: a GGUF file is required for kind = 'llama_cpp'")
        if self.kind == "openai" and not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"backend.base_url must start with http:// or https://, got {self.base_url!r}")


@dataclass(frozen=True)
class TaskConfig:
    items: bool = True  # description + keywords per item
    users: bool = False  # an interest profile per user, from their history
    synthetic: bool = False  # synthetic items for users with few interactions
    sparse_max: int = cfg.bounded(5, 1, 1000, "users with at most this many positives get synthetic items")
    synthetic_per_user: int = cfg.bounded(3, 1, 10)
    history_items: int = cfg.bounded(20, 1, 200, "most recent history items shown in a user prompt")
    limit: int = cfg.bounded(0, 0, None, "process at most this many items / users per task (0 = all)")


@dataclass(frozen=True)
class EnrichConfig:
    name: str = "enrich"
    data: DataConfig = field(default_factory=DataConfig)  # the training config's [data] (a domain too)
    backend: BackendConfig = field(default_factory=BackendConfig)
    tasks: TaskConfig = field(default_factory=TaskConfig)
    # The training config's [split]: user prompts read only the training events of this split, so no
    # validation or test item ever reaches a prompt (and, through the answer, a model's input).
    split: SplitConfig = field(default_factory=SplitConfig)
    out: str = ""  # "" = next to the data: <data folder>/<name>.enrich/


# ------------------------------------------------------------------ schemas and validation
def _s(max_len: int) -> dict:
    return {"type": "string", "minLength": 1, "maxLength": max_len}


SCHEMAS = {
    "items": {"type": "object", "additionalProperties": False, "required": ["description", "keywords"],
              "properties": {"description": _s(300),
                             "keywords": {"type": "array", "minItems": 1, "maxItems": 8, "items": _s(30)}}},
    "users": {"type": "object", "additionalProperties": False, "required": ["profile"],
              "properties": {"profile": _s(400)}},
    "synthetic": {"type": "object", "additionalProperties": False, "required": ["items"],
                  "properties": {"items": {"type": "array", "minItems": 1, "maxItems": 10, "items": {
                      "type": "object", "additionalProperties": False, "required": ["title", "genres"],
                      "properties": {"title": _s(120), "genres": {"type": "array", "minItems": 1, "maxItems": 5,
                                                                  "items": _s(30)},
                                     "description": _s(300)}}}}},
}


def validate(value, schema: dict, where: str = "answer") -> None:
    """The subset of JSON Schema used by :data:`SCHEMAS` (types, required, extra keys, lengths, counts)."""
    t = schema["type"]
    if t == "object":
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected an object")
        missing = [k for k in schema.get("required", []) if k not in value]
        if missing:
            raise ValueError(f"{where}: missing {', '.join(missing)}")
        extra = [k for k in value if k not in schema["properties"]]
        if extra and not schema.get("additionalProperties", True):
            raise ValueError(f"{where}: unexpected {', '.join(extra)}")
        for k, v in value.items():
            if k in schema["properties"]:
                validate(v, schema["properties"][k], f"{where}.{k}")
    elif t == "array":
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected an array")
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", 10**9):
            raise ValueError(f"{where}: {len(value)} entries, allowed {schema.get('minItems', 0)}.."
                             f"{schema.get('maxItems')}")
        for i, v in enumerate(value):
            validate(v, schema["items"], f"{where}[{i}]")
    elif t == "string":
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{where}: expected a non-empty string")
        if len(value) > schema.get("maxLength", 10**9):
            raise ValueError(f"{where}: {len(value)} characters, at most {schema['maxLength']}")


# ------------------------------------------------------------------ prompts
SYSTEM = ("You write short, factual metadata for a recommender system. Answer with one JSON object only. "
          "If you do not know a fact, leave it out rather than invent it.")


def item_prompt(title: str, year: str, genres: str) -> str:
    return (f"Item: {title}" + (f" ({year})" if year else "") + (f". Genres: {genres}" if genres else "") + ".\n"
            'Return {"description": one or two sentences (at most 300 characters) on what it is about and its '
            'tone, "keywords": 3 to 8 short keywords}.')


def user_prompt(history: list[str]) -> str:
    return ("A user liked, most recent last:\n" + "\n".join(f"- {h}" for h in history) +
            '\nReturn {"profile": two or three sentences (at most 400 characters) on their tastes}.')


def synthetic_prompt(history: list[str], n: int) -> str:
    return ("A user liked:\n" + "\n".join(f"- {h}" for h in history) +
            f'\nSuggest {n} other items they may like. Return {{"items": [{{"title", "genres": [..], '
            '"description"}]}}.')


# ------------------------------------------------------------------ backends
class AnswerError(Exception):
    """An answer that is not usable (malformed, truncated, off-schema): recorded and skipped."""


MAX_RETRY_AFTER_S = 600.0  # a server asking for more is waited for this long, then asked again


class TransientError(Exception):
    """A failure worth retrying (timeout, connection, 429, 5xx); ``retry_after``: seconds the server asked for;
    ``unreachable``: no connection was made at all (nothing listens there, a wrong host)."""

    def __init__(self, msg: str, retry_after: float | None = None, unreachable: bool = False):
        super().__init__(msg)
        self.retry_after = retry_after
        self.unreachable = unreachable


def strict_schema(schema: dict) -> dict:
    """``schema`` as OpenAI's strict structured outputs accept it: every object lists all of its
    properties as required, and the ones that were optional may be null (a hosted strict endpoint
    refuses a schema with an optional property, e.g. a synthetic item's description)."""
    if schema.get("type") == "object":
        props = {}
        for k, v in schema.get("properties", {}).items():
            v = strict_schema(v)
            if k not in schema.get("required", []):
                v = {**v, "type": [v["type"], "null"]}
            props[k] = v
        return {**schema, "properties": props, "required": list(props)}
    if schema.get("type") == "array":
        return {**schema, "items": strict_schema(schema["items"])}
    return schema


def _drop_nulls(obj, schema: dict):
    """Optional properties answered as null (what a strict schema allows) are left out."""
    if isinstance(obj, dict) and schema.get("type") == "object":
        req, props = set(schema.get("required", [])), schema.get("properties", {})
        return {k: _drop_nulls(v, props.get(k, {})) for k, v in obj.items() if not (v is None and k not in req)}
    if isinstance(obj, list) and schema.get("type") == "array":
        return [_drop_nulls(v, schema.get("items", {})) for v in obj]
    return obj


def _retry_after(response) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds; an HTTP date counts as unknown)."""
    try:
        v = response.headers.get("retry-after")
        return max(0.0, float(v)) if v is not None else None
    except (AttributeError, ValueError):
        return None


class OpenAIBackend:
    """OpenAI-compatible chat completions through the ``openai`` SDK (the 'llm' extra): a hosted API
    or a local server (llama.cpp server, vLLM, Ollama) at ``backend.base_url``. Retries are the run's
    own (``max_retries``, ``backoff_s``, a server's ``Retry-After`` honoured), so the SDK's are off."""

    def __init__(self, conf: BackendConfig):
        try:
            from openai import OpenAI
        except ImportError:
            raise MissingExtraError("llm", "backend.kind = 'openai'") from None
        self.conf = conf
        self._key = os.environ.get(conf.api_key_env, "") if conf.api_key_env else ""
        if conf.api_key_env and not self._key:
            raise ConfigError(f"backend.api_key_env: environment variable {conf.api_key_env} is not set")
        # a local server needs no key; the SDK wants a non-empty one and sends it as a bearer token
        self.client = OpenAI(base_url=conf.base_url.rstrip("/"), api_key=self._key or "none", timeout=conf.timeout_s,
                             max_retries=0)
        self.model_id = conf.model

    def __repr__(self):  # never show the key
        return f"OpenAIBackend({self.conf.base_url}, model={self.conf.model!r})"

    def complete(self, prompt: str, task: str) -> tuple[str, dict]:
        import openai

        c = self.conf
        kw = {}
        if c.json_mode == "schema":
            kw["response_format"] = {"type": "json_schema", "json_schema": {
                "name": task, "schema": strict_schema(SCHEMAS[task]), "strict": True}}
        elif c.json_mode == "object":
            kw["response_format"] = {"type": "json_object"}
        try:
            resp = self.client.chat.completions.create(
                model=c.model, temperature=c.temperature, max_tokens=c.max_tokens,
                messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}], **kw)
        except openai.APIStatusError as exc:
            if exc.status_code == 429 or exc.status_code >= 500:
                raise TransientError(f"HTTP {exc.status_code}", _retry_after(exc.response)) from None
            raise AnswerError(f"HTTP {exc.status_code}: {str(exc)[:200]}") from None
        except (openai.APITimeoutError, openai.APIConnectionError) as exc:
            # a timeout is a server that answered too slowly; a connection error, one that never answered
            raise TransientError(f"{type(exc).__name__}: {exc}",
                                 unreachable=not isinstance(exc, openai.APITimeoutError)) from None
        try:
            choice = resp.choices[0]
            text = choice.message.content
        except (AttributeError, IndexError, TypeError):
            raise AnswerError(f"not a chat-completions response: {str(resp)[:200]!r}") from None
        if choice.finish_reason == "length":
            raise AnswerError("truncated (finish_reason = length): raise backend.max_tokens")
        if not isinstance(text, str):
            raise AnswerError("message content is not text")
        return text, (resp.usage.model_dump() if resp.usage else {})


class LlamaCppBackend:
    """In-process llama.cpp for a local GGUF file (``pip install 'genre-edge[llm-local]'``)."""

    def __init__(self, conf: BackendConfig):
        try:
            from llama_cpp import Llama
        except ImportError:
            raise MissingExtraError("llm-local", "backend.kind = 'llama_cpp'") from None
        if not Path(conf.model_path).is_file():
            raise ConfigError(f"backend.model_path: {conf.model_path} is not a file")
        self.conf = conf
        self.llm = Llama(model_path=conf.model_path, n_ctx=2048, verbose=False)
        self.model_id = "gguf:" + hashlib.sha256(Path(conf.model_path).read_bytes()[: 1 << 20]).hexdigest()[:16]
        self.lock = threading.Lock()  # one llama context: one request at a time

    def complete(self, prompt: str, task: str) -> tuple[str, dict]:
        kw = {}
        if self.conf.json_mode != "none":
            kw["response_format"] = {"type": "json_object", "schema": SCHEMAS[task]}
        with self.lock:
            out = self.llm.create_chat_completion(
                messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}],
                temperature=self.conf.temperature, max_tokens=self.conf.max_tokens, **kw)
        ch = out["choices"][0]
        if ch.get("finish_reason") == "length":
            raise AnswerError("truncated (finish_reason = length): raise backend.max_tokens")
        return ch["message"]["content"], out.get("usage") or {}


BACKENDS = {"openai": OpenAIBackend, "llama_cpp": LlamaCppBackend}


# ------------------------------------------------------------------ the run
def parse_answer(text: str, task: str) -> dict:
    t = text.strip()
    if t.startswith("```"):  # some models fence their JSON
        t = t.strip("`")
        t = t[t.find("{"):] if "{" in t else t
    try:
        obj = json.loads(t)
    except ValueError as exc:
        raise AnswerError(f"not JSON ({exc.msg} at {exc.pos}): {text[:120]!r}") from None
    if task == "items" and isinstance(obj, dict) and isinstance(obj.get("keywords"), list):
        seen: set = set()  # small models repeat themselves ("grind, grind, grind"): keep each keyword once
        obj["keywords"] = [k for k in obj["keywords"] if not isinstance(k, str) or
                           not (k.strip().lower() in seen or seen.add(k.strip().lower()))]
    obj = _drop_nulls(obj, SCHEMAS[task])
    try:
        validate(obj, SCHEMAS[task])
    except ValueError as exc:
        raise AnswerError(f"off schema: {exc}") from None
    return obj


class JsonlStore:
    """Append-only JSONL with a lock; a torn last line (a crash mid-write) is ignored on reading."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.Lock()

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                log.warning("%s: skipping a torn or corrupt line", self.path)
        return out

    def append(self, rec: dict) -> None:
        line = json.dumps(rec, ensure_ascii=False) + "\n"
        with self.lock, open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())


def _jobs(task: str, ds, conf: EnrichConfig) -> list[tuple[str, str]]:
    """(key, prompt) per item or user of ``task``."""
    it, t = ds.items, conf.tasks
    if task == "items":
        jobs = [(it.ids[i], item_prompt(it.title[i], str(int(it.year[i])) if it.year[i] else "",
                                        ", ".join(it.categories[i]))) for i in range(len(it))]
    else:
        # training events only: a user's held-out (validation, test, cold) items never reach a prompt
        hist = {u: h.tolist() for u, h in enumerate(make_split(ds, conf.split).train_histories()) if len(h)}
        jobs = []
        for u, h in sorted(hist.items()):
            if task == "synthetic" and len(h) > t.sparse_max:
                continue
            names = [it.title[i] + (f" ({int(it.year[i])})" if it.year[i] else "") for i in h[-t.history_items:]]
            p = user_prompt(names) if task == "users" else synthetic_prompt(names, t.synthetic_per_user)
            jobs.append((ds.users[u], p))
    return jobs[: t.limit] if t.limit else jobs


def output_dir(conf: EnrichConfig, data_path: Path) -> Path:
    if conf.out:
        return Path(conf.out)
    base = data_path if data_path.is_dir() else data_path.parent
    return base / f"{conf.name}.enrich"


def enrich(conf: EnrichConfig, data_dir: str | None = None, progress: bool = True, backend=None) -> dict:
    """Run the enabled tasks; returns counts per task (done before, generated, cached, rejected)."""
    src = conf.data.source
    data_path = DATASETS[src](data_dir).path if src in DATASETS else Path(src)
    ds = domain(load_dataset(data_path, conf.data.format, conf.data.threshold), conf.data.include_categories,
                conf.data.exclude_categories)
    be = backend or BACKENDS[conf.backend.kind](conf.backend)
    out = output_dir(conf, data_path)
    out.mkdir(parents=True, exist_ok=True)
    cache, rejects = JsonlStore(out / "cache.jsonl"), JsonlStore(out / "rejects.jsonl")
    cached = {r["key"]: r["answer"] for r in cache.read() if "key" in r and "answer" in r}
    summary = {"out": str(out), "model": be.model_id, "tasks": {}}
    link = {"reached": False, "unreachable": None}  # whether the endpoint ever answered; why it could not be
    for task in TASKS:
        if not getattr(conf.tasks, task):
            continue
        store = JsonlStore(out / f"{task}.v{FORMAT_VERSION}.jsonl")
        done = {r["id"] for r in store.read() if r.get("model") == be.model_id}
        todo = [(k, p) for k, p in _jobs(task, ds, conf) if k not in done]
        stats = {"done_before": len(done), "generated": 0, "from_cache": 0, "rejected": 0, "tokens": 0}

        def one(key: str, prompt: str, task=task, store=store, stats=stats):
            ck = hashlib.sha256(f"{be.model_id}\n{task}\n{SYSTEM}\n{prompt}".encode()).hexdigest()
            if ck in cached:
                store.append({"id": key, "model": be.model_id, "v": FORMAT_VERSION, **cached[ck]})
                return "cache", 0
            if link["unreachable"]:
                return "skipped", 0
            last = None
            for attempt in range(conf.backend.max_retries + 1):
                try:
                    text, usage = be.complete(prompt, task)
                    link["reached"] = True
                    obj = parse_answer(text, task)
                    cache.append({"key": ck, "answer": obj})
                    cached[ck] = obj
                    store.append({"id": key, "model": be.model_id, "v": FORMAT_VERSION, **obj})
                    return "ok", int(usage.get("total_tokens", 0))
                except TransientError as exc:
                    last = str(exc)
                    if not exc.unreachable:
                        link["reached"] = True
                    if attempt < conf.backend.max_retries:
                        wait = conf.backend.backoff_s * 2 ** attempt * (0.5 + random.random())
                        time.sleep(max(wait, min(exc.retry_after or 0.0, MAX_RETRY_AFTER_S)))
                except AnswerError as exc:
                    link["reached"] = True
                    last = str(exc)
                    break
            if not link["reached"]:
                # every try so far, this item's and the others', found nothing listening: stop here instead of
                # spending every item's retries (hours on a large catalog) and reporting each as a rejected answer
                link["unreachable"] = last
                return "skipped", 0
            rejects.append({"task": task, "id": key, "model": be.model_id, "reason": last,
                            "time": int(time.time())})
            return "rejected", 0

        bar = None
        if progress and todo:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc=f"enrich {task}", unit=task[:-1] if task != "synthetic" else "user")
        with ThreadPoolExecutor(max_workers=conf.backend.concurrency) as pool:
            futs = [pool.submit(one, k, p) for k, p in todo]
            for f in as_completed(futs):
                what, tok = f.result()
                if what == "skipped":
                    continue
                key = {"ok": "generated", "cache": "from_cache", "rejected": "rejected"}[what]
                stats[key] += 1
                stats["tokens"] += tok
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(tokens=stats["tokens"], rejected=stats["rejected"])
        if bar is not None:
            bar.close()
        if link["unreachable"]:
            where = getattr(conf.backend, "base_url", "") or conf.backend.kind
            raise GenreError(f"cannot reach the LLM endpoint {where} ({link['unreachable']}); start an "
                             "OpenAI-compatible server there (llama.cpp's llama-server, vLLM, Ollama) or set [backend] "
                             f"base_url in the enrichment config (stopped at task {task!r}: nothing generated)")
        summary["tasks"][task] = stats
        log.info("enrich %s: %s", task, stats)
    return summary


def _load_answers(path: str | Path, task: str, key: str, run_hint: str) -> dict[str, dict]:
    """The validated answers of ``task`` in a ``<task>.v1.jsonl``, by id (the last answer per id wins)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{key}: {p} is not a file (run 'genre augment llm' {run_hint})")
    fields = SCHEMAS[task]["required"]
    by_id: dict[str, dict] = {}
    for r in JsonlStore(p).read():
        try:
            validate({k: r[k] for k in fields}, SCHEMAS[task])
        except (KeyError, ValueError) as exc:
            raise GenreError(f"{p}: record for {r.get('id')!r} is not a valid '{task}' answer ({exc})") from None
        by_id[str(r["id"])] = r
    return by_id


def load_item_enrichment(path: str | Path, item_ids: list[str]) -> dict[str, list[str]]:
    """Template fields ``description`` and ``keywords`` per item from an ``items.v1.jsonl`` (items without
    an answer get empty fields)."""
    by_id = _load_answers(path, "items", "data.enrichment", "first")
    desc = [by_id[i]["description"] if i in by_id else "" for i in item_ids]
    kw = [", ".join(by_id[i]["keywords"]) if i in by_id else "" for i in item_ids]
    log.info("enrichment: %d of %d items have an LLM description", sum(1 for d in desc if d), len(item_ids))
    return {"description": desc, "keywords": kw}


def load_user_profiles(path: str | Path, user_ids: list[str]) -> list[str]:
    """Interest profile text per user from a ``users.v1.jsonl`` ("" for users without one)."""
    by_id = _load_answers(path, "users", "data.user_profiles", "with tasks.users = true")
    out = [by_id[u]["profile"] if u in by_id else "" for u in user_ids]
    log.info("user profiles: %d of %d users have one", sum(1 for x in out if x), len(user_ids))
    return out


def load_synthetic_items(path: str | Path, user_ids: list[str], template: str) -> list[list[str]]:
    """Per user, the item texts (rendered with the item template) of their synthetic items ([] for none)."""
    by_id = _load_answers(path, "synthetic", "data.synthetic_items", "with tasks.synthetic = true")
    out = []
    for u in user_ids:
        items = by_id[u]["items"] if u in by_id else []
        out.append([render(template, {"title": it["title"], "genres": ", ".join(it["genres"]),
                                      "categories": ", ".join(it["genres"]), "description": it.get("description", "")})
                    for it in items])
    log.info("synthetic items: %d for %d users", sum(map(len, out)), sum(1 for x in out if x))
    return out


def user_side_texts(data, template: str, user_ids: list[str]) -> list[list[str]] | None:
    """Per user, the LLM texts about them that training can read (``data.user_profiles``: their interest
    profile; ``data.synthetic_items``: their synthetic items); None when neither is configured."""
    if not data.user_profiles and not data.synthetic_items:
        return None
    out: list[list[str]] = [[] for _ in user_ids]
    if data.user_profiles:
        for texts, t in zip(out, load_user_profiles(data.user_profiles, user_ids)):
            texts += [t] if t else []
    if data.synthetic_items:
        for texts, ts in zip(out, load_synthetic_items(data.synthetic_items, user_ids, template)):
            texts += ts
    return out
