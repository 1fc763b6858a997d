"""The ``genre`` command: a thin click layer over the Python API.

The runtime's own commands serve a bundle (recommend, embed, items, bundle, profile, serve, bench).
Training-side commands (data, eval, train, distill, export, ...) are plugins: installed packages
register click commands under the ``genre_edge.commands`` entry-point group, loaded only when listed
or invoked, so this module never names the export package and the runtime install stays light.
"""
from __future__ import annotations

import errno
import json
import logging
import sys
from importlib.metadata import entry_points
from pathlib import Path

import click

from .cliutil import emit, item_label, run_api, split_ids
from .errors import MissingExtraError
from .request import STRATEGIES, Request

log = logging.getLogger(__name__)

COMMANDS_GROUP = "genre_edge.commands"  # entry points: name -> click command
HOOKS_GROUP = "genre_edge.hooks"  # entry points: name -> callable (e.g. recommend-model)


def plugin(group: str, name: str):
    """The entry point ``name`` of ``group``, or None when no installed package provides it."""
    return next((ep for ep in entry_points(group=group) if ep.name == name), None)


class PluginGroup(click.Group):
    """Built-in commands plus those that installed packages register as entry points."""

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | {ep.name for ep in entry_points(group=COMMANDS_GROUP)})

    def get_command(self, ctx, name):
        cmd = super().get_command(ctx, name)
        if cmd is not None:
            return cmd
        ep = plugin(COMMANDS_GROUP, name)
        if ep is None:
            return None
        try:
            return ep.load()
        except ImportError as exc:
            msg = str(exc) if isinstance(exc, MissingExtraError) else str(MissingExtraError("export", f"'genre {name}'"))

            @click.command(name=name, help=f"[unavailable: {msg}]",
                           context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
            def missing():
                raise click.ClickException(msg)

            return missing


@click.group(cls=PluginGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(package_name="genre-edge")
def main(verbose):
    """genre-edge: offline, on-device LLM-powered recommendation."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


# ------------------------------------------------------------------------------ serving
bundle_opt = click.option("--bundle", "bundle_path", required=True, envvar="GENRE_BUNDLE",
                          type=click.Path(file_okay=False), help="Bundle folder (env GENRE_BUNDLE).")
profile_opt = click.option("--profile", default="auto", show_default=True, envvar="GENRE_PROFILE",
                           help="Profile name, 'auto', or a TOML path (env GENRE_PROFILE).")
state_opt = click.option("--state-dir", type=click.Path(file_okay=False), envvar="GENRE_STATE_DIR",
                         help="Where on-device catalog updates live (default: BUNDLE.state beside the bundle).")


def _load(bundle_path, profile, state_dir=None):
    from .recommender import Recommender

    return run_api(Recommender.load, bundle_path, profile, state_dir)


@main.command()
@click.option("--bundle", "bundle_path", envvar="GENRE_BUNDLE", type=click.Path(file_okay=False),
              help="Bundle folder (ONNX Runtime path).")
@click.option("--model", "model_dir", type=click.Path(file_okay=False),
              help="A trained model folder (PyTorch path, for checking; needs the export extra).")
@profile_opt
@state_opt
@click.option("--history", default="", help="Comma-separated item ids, oldest first.")
@click.option("--user", default=None, help="With --model: a user id of the training data.")
@click.option("--query", default=None,
              help="Free-text instruction, e.g. 'something light and funny from the 90s' or 'like Star Wars, but "
                   "funnier'.")
@click.option("--parse/--no-parse", "parse_query", default=True, show_default=True,
              help="Turn the query's years, decades, categories and negations into filters (the rest is embedded).")
@click.option("-k", "k", type=int, default=10, show_default=True, help="How many items to recommend.")
@click.option("--strategy", type=click.Choice(STRATEGIES), default=None,
              help="Blend preset (default: query with a query, else the bundle's default).")
@click.option("--include", "include", default="", help="Only these categories (comma-separated).")
@click.option("--exclude", "exclude", default="", help="Never these categories (comma-separated).")
@click.option("--year-min", type=int, default=None, help="Only items from this year on.")
@click.option("--year-max", type=int, default=None, help="Only items up to this year.")
@click.option("--mmr", "mmr_lambda", type=float, default=None, help="MMR lambda (1 = no diversity).")
@click.option("--freshness", "freshness", type=float, default=None, help="Freshness half-life in days.")
@click.option("--popularity-penalty", type=float, default=None, help="Push popular items down (0-100).")
@click.option("--explore", "exploration", type=float, default=None,
              help="Seeded random exploration in the re-ranking (0 = deterministic, up to 10).")
@click.option("--seed", type=int, default=None, help="Seed of the exploration noise.")
@click.option("--now", type=int, default=None,
              help="Request time, unix seconds: freshness and trending popularity are read as of it.")
@click.option("--explain/--no-explain", default=True, show_default=True,
              help="Say which history items or the query drove each pick.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def recommend(bundle_path, model_dir, profile, state_dir, history, user, query, parse_query, k, strategy, include,
              exclude, year_min, year_max, mmr_lambda, freshness, popularity_penalty, exploration, seed, now, explain,
              as_json):
    """Recommend items for a history and/or a free-text query."""
    if bool(bundle_path) == bool(model_dir):
        raise click.ClickException("give exactly one of --bundle (on-device path) or --model (PyTorch path)")
    if model_dir:
        # the PyTorch path checks a trained model on a history: the request options are the bundle path's
        given = [name for name, v in (("--query", query), ("--strategy", strategy), ("--include", include or None),
                                      ("--exclude", exclude or None), ("--year-min", year_min), ("--year-max", year_max),
                                      ("--mmr", mmr_lambda), ("--freshness", freshness),
                                      ("--popularity-penalty", popularity_penalty), ("--explore", exploration),
                                      ("--seed", seed), ("--now", now), ("--state-dir", state_dir)) if v is not None]
        if given:
            raise click.ClickException(f"{', '.join(given)}: request options of the on-device path (--bundle); "
                                       "--model ranks for --user or --history only")
        if user is not None and history:
            raise click.ClickException("give --user or --history with --model, not both")
        ep = plugin(HOOKS_GROUP, "recommend-model")
        if ep is None:
            raise click.ClickException(str(MissingExtraError("export", "'genre recommend --model'")))
        return ep.load()(model_dir, user, split_ids(history), k, as_json)
    if user is not None:
        raise click.ClickException("--user is a user of the training data (--model); a bundle knows no users: give "
                                   "their items with --history")
    req = run_api(Request.create, split_ids(history), query=query, parse_query=parse_query, k=k, strategy=strategy,
                  include_categories=split_ids(include), exclude_categories=split_ids(exclude), year_min=year_min,
                  year_max=year_max, mmr_lambda=mmr_lambda, freshness_half_life_days=freshness,
                  popularity_penalty=popularity_penalty, exploration=exploration, seed=seed, now=now, explain=explain)
    rec = _load(bundle_path, profile, state_dir)
    r = run_api(rec.recommend, req)
    if r.unknown_categories:
        # a misspelt filter would quietly empty the list (--include) or exclude nothing (--exclude)
        known = rec.catalog.facets()["categories"]
        raise click.ClickException(
            f"no catalog item has the categor{'ies' if len(r.unknown_categories) > 1 else 'y'} "
            f"{', '.join(map(repr, r.unknown_categories))} (names match ignoring case); the catalog's categories: "
            f"{', '.join(known) or '(none)'}")
    lines = [f"profile {rec.profile.name} ({rec.variant}), strategy {r.strategy}, {r.timings_ms['total']:.2f} ms"]
    if r.parsed is not None:
        lines.append(f"understood: {r.parsed['summary']}")
    if r.unknown_ids:
        lines.append(f"unknown ids (ignored): {', '.join(r.unknown_ids)}")
        # --history takes ids; a title given instead is named with its id (the first few only)
        from .query_parser import title_key, title_keys

        for bad in r.unknown_ids[:5]:
            if not title_key(bad):
                continue
            hits = [it for it in rec.search_items(bad, 20)["items"] if title_key(bad) in title_keys(it["title"])]
            if hits:
                lines.append(f"  {bad!r} is the title of id {hits[0]['id']} ({hits[0]['title']}, {hits[0]['year']}): "
                             "--history takes ids (genre items search finds them)")
    if not r.items:
        lines.append("no item passes the filters (the request's and what the query asked for)")
    for n, it in enumerate(r.items, 1):
        lines.append(f"{n:>3}. {item_label(it.title, it.year, it.categories)} id={it.id} score={it.score:.3f}")
        if it.reasons:
            lines.append("     because: " + ", ".join(
                (f"{x['title']} ({x['share']:.0%})" if x["source"] == "history" else f"{x['source']} ({x['share']:.0%})")
                for x in it.reasons))
    if 0 < len(r.items) < k:
        # a short list is all there is, not a failure: say so
        lines.append(f"only {len(r.items)} of the {k} asked: no other item passes the filters (the request's and "
                     "what the query asked for; the history's own items are left out)")
    emit(r.to_dict(), as_json, "\n".join(lines))


@main.command()
@bundle_opt
@profile_opt
@click.argument("texts", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def embed(bundle_path, profile, texts, as_json):
    """Encode texts with the bundle's on-device encoder."""
    rec = _load(bundle_path, profile)
    e = run_api(rec.embed, list(texts))
    emit({"dim": int(e.shape[1]), "embeddings": e.round(6).tolist()}, as_json,
         "\n".join(f"{t[:40]!r}: [{', '.join(f'{x:.4f}' for x in v[:6])}, ...] (dim {len(v)})" for t, v in zip(texts, e)))


@main.group()
def items():
    """On-device catalog updates (persisted atomically beside the bundle)."""


@items.command("add")
@bundle_opt
@profile_opt
@state_opt
@click.option("--file", "file", type=click.File("r", encoding="utf-8"), default=None,
              help="JSON lines: {id, title, categories?, year?, text?, timestamp?}; or a .csv / .tsv with those "
                   "columns (categories split on '|'). '-' reads stdin (JSON lines).")
@click.option("--id", "item_id", default=None,
              help="Item id (a new id adds, a known one updates: categories and year not given are kept).")
@click.option("--title", default=None, help="Item title.")
@click.option("--categories", default=None, help="Comma-separated ('' clears them on an update).")
@click.option("--year", type=int, default=None, help="Release year (0 = unknown).")
@click.option("--text", default="", help="Extra description the encoder reads (give it again on an update: "
              "the catalog keeps no item texts).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def items_add(bundle_path, profile, state_dir, file, item_id, title, categories, year, text, as_json):
    """Add or update items (text encoded on device)."""
    from .catalog import item_records

    recs = []
    if file is not None:
        recs = [obj for _, obj in run_api(lambda: list(item_records(file, file.name)))]
    if file is not None and not recs:
        raise click.ClickException(f"{file.name}: no items in it")
    rec = None
    if item_id or title:
        one = {"id": item_id or "", "title": title or "", "categories": split_ids(categories), "year": year or 0,
               "text": text}
        if item_id and (categories is None or year is None):
            # an update from the command line names what changes: a retitled item keeps its categories and
            # year (dropping them re-encoded it without its genres and took it out of category filters)
            rec = _load(bundle_path, profile, state_dir)
            found = run_api(rec.search_items, item_id, 1)["items"]
            if found and found[0]["id"] == item_id:
                if categories is None:
                    one["categories"] = found[0]["categories"]
                if year is None:
                    one["year"] = found[0]["year"]
        recs.append(one)
    if not recs:
        raise click.ClickException("nothing to add: give --file, or --id and --title")
    rec = rec or _load(bundle_path, profile, state_dir)
    try:
        added = run_api(rec.add_items, recs)
    except TypeError as exc:
        raise click.ClickException(f"bad item: {exc}") from None
    emit({"added": added}, as_json, f"added/updated {len(added)} item(s): {', '.join(added)}")


@items.command("events")
@bundle_opt
@profile_opt
@state_opt
@click.option("--file", "file", type=click.File("r", encoding="utf-8"), default=None,
              help="JSON lines: {item_id, time} (unix seconds), or CSV/TSV (a file named so) with the header "
                   "item_id,time. '-' reads stdin (JSON lines).")
@click.option("--id", "item_id", default=None, help="One event's item id (with --time).")
@click.option("--time", "at", type=float, default=None, help="One event's time, unix seconds (with --id).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def items_events(bundle_path, profile, state_dir, file, item_id, at, as_json):
    """Count interaction events into trending popularity (bundles calibrated with it; POST /events over HTTP).

    The whole input is checked before anything is recorded; then it is written in batches of 10,000, each
    durable in the state folder (a running `genre serve` on it sees them on its next request)."""
    from .catalog import event_records
    from .recommender import MAX_EVENTS

    events = []
    for n, obj in (run_api(lambda: list(event_records(file, file.name))) if file is not None else []):
        t = obj["time"]
        if not isinstance(obj["item_id"], str) or isinstance(t, bool) or not isinstance(t, (int, float)) \
                or not 0 <= t < float("inf"):
            raise click.ClickException(f"{file.name}:{n}: expected {{\"item_id\": string, \"time\": unix seconds >= 0}}, "
                                       f"got {json.dumps(obj)[:120]}")
        events.append(obj)
    if (item_id is None) != (at is None):
        raise click.ClickException("give --id and --time together")
    if item_id is not None:
        events.append({"item_id": item_id, "time": at})
    if not events:
        raise click.ClickException("no events: give --file or --id and --time")
    rec = _load(bundle_path, profile, state_dir)
    counted, unknown = 0, set()
    for a in range(0, len(events), MAX_EVENTS):
        r = run_api(rec.record_events, events[a: a + MAX_EVENTS])
        counted += r["counted"]
        unknown |= set(r["unknown_ids"])
    emit({"counted": counted, "unknown_ids": sorted(unknown)}, as_json,
         f"counted {counted} event(s)" + (f"; unknown ids (not counted): {', '.join(sorted(unknown))}" if unknown else ""))


@items.command("search")
@bundle_opt
@profile_opt
@state_opt
@click.argument("query", default="")
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True, help="How many items to list.")
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True, help="Skip this many matches.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def items_search(bundle_path, profile, state_dir, query, limit, offset, as_json):
    """Find items: the id QUERY exactly, then titles containing it (no QUERY: the most popular)."""
    rec = _load(bundle_path, profile, state_dir)
    res = run_api(rec.search_items, query, limit, offset)
    lines = [f"{it['id']}\t{it['title']}" + (f" ({it['year']})" if it["year"] else "") +
             (f"  [{', '.join(it['categories'])}]" if it["categories"] else "") + ("  on device" if it["on_device"] else "")
             for it in res["items"]]
    n, off = len(res["items"]), res["offset"]
    shown = f"{off + 1}-{off + n}" if off and n else str(n)  # with --offset: which of the matches these are
    emit(res, as_json, "\n".join(lines + [f"{shown} of {res['total']} matching item(s)"]))


@items.command("remove")
@bundle_opt
@profile_opt
@state_opt
@click.argument("ids", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def items_remove(bundle_path, profile, state_dir, ids, as_json):
    """Remove items from the on-device catalog."""
    rec = _load(bundle_path, profile, state_dir)
    unknown = run_api(rec.remove_items, list(ids))
    emit({"removed": [i for i in ids if i not in unknown], "unknown": unknown}, as_json,
         f"removed {len(ids) - len(unknown)} item(s)" + (f"; unknown: {', '.join(unknown)}" if unknown else ""))


@main.group()
def bundle():
    """Inspect and verify bundles."""


@bundle.command("verify")
@click.argument("path", type=click.Path(file_okay=False))
@click.option("--key", "public_key", type=click.Path(dir_okay=False, exists=True), envvar="GENRE_TRUSTED_KEY",
              help="Also require a valid signature by this public key (env GENRE_TRUSTED_KEY).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def bundle_verify(path, public_key, as_json):
    """Check the format version, every file's sha256 and, with --key, the signature."""
    from .bundle import open_bundle

    b = run_api(open_bundle, path, True, public_key)
    emit({"ok": True, "files": len(b.manifest.files), "signed_by": public_key}, as_json,
         f"ok: {len(b.manifest.files)} files verified, format version {b.manifest.format_version}"
         + (f", signature by {public_key} valid" if public_key else ""))


@bundle.command("keygen")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder for the key pair.")
@click.option("--name", default="genre-bundle", show_default=True, help="File names: NAME.key and NAME.pub.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def bundle_keygen(out_dir, name, as_json):
    """Create an Ed25519 key pair for signing bundles (the private key is written with mode 0600)."""
    from .signing import generate_keys

    run_api(Path(out_dir).mkdir, parents=True, exist_ok=True)
    priv, pub = run_api(generate_keys, out_dir, name)
    emit({"private_key": str(priv), "public_key": str(pub)}, as_json,
         f"private key {priv} (keep it off the devices), public key {pub} (give it to the devices)")


@bundle.command("sign")
@click.argument("path", type=click.Path(file_okay=False, exists=True))
@click.option("--key", "private_key", required=True, type=click.Path(dir_okay=False, exists=True),
              help="The private key (genre bundle keygen).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def bundle_sign(path, private_key, as_json):
    """Sign a verified bundle: writes manifest.sig over its manifest (which lists every file's sha256)."""
    from .bundle import open_bundle
    from .signing import sign_bundle

    run_api(open_bundle, path, True)  # never sign a bundle whose files do not match its manifest
    sig = run_api(sign_bundle, path, private_key)
    emit({"signature": str(sig)}, as_json, f"signed: {sig}")


@bundle.command("info")
@click.argument("path", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def bundle_info(path, as_json):
    """Summary: variants, profiles, sizes, quality."""
    from .bundle import manifest_json, open_bundle

    b = run_api(open_bundle, path, False)
    m = b.manifest
    size = b.size()
    q = manifest_json(m.quality) if m.quality else {}
    info = {"created_at": m.created_at, "format_version": m.format_version, "dim": m.dim,
            "max_tokens": m.max_tokens, "items": m.catalog.n_items, "bytes": size,
            "variants": {v: list(meta.profiles or []) for v, meta in m.models.encoder.items()},
            "quality": q.get("summary"), "gate": q.get("gate")}
    lines = [f"bundle {path}: {size / 1e6:.1f} MB, {info['items']} items, dim {m.dim}, created {info['created_at']}"]
    for v, ps in info["variants"].items():
        f = m.models.encoder[v].file
        lines.append(f"  encoder {v:<16} {m.files[f].bytes / 1e6:6.1f} MB  profiles: {', '.join(ps) or '-'}")
    if info["quality"]:
        lines.append(f"  quality: {info['quality']}")
    emit(info, as_json, "\n".join(lines))


@main.group()
def profile():
    """Device profiles: list, show, detect, validate."""


@profile.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def profile_list(as_json):
    """Built-in profiles and whether this machine can run each."""
    import dataclasses

    from .profile import all_profiles, available_providers, fits, machine_info

    info = dataclasses.replace(machine_info(), providers=available_providers())
    rows = [{"name": p.name, "variant": p.variant, "arch": p.arch, "runnable_here": fits(p, info)[0],
             "why": fits(p, info)[1], "description": p.description} for p in run_api(all_profiles)]
    emit(rows, as_json, "\n".join(f"{r['name']:<18} {r['variant']:<16} {'yes' if r['runnable_here'] else 'no ':<4} "
                                  f"{r['description']}" + ("" if r["runnable_here"] else f"  ({r['why']})") for r in rows))


@profile.command("show")
@click.argument("name")
def profile_show(name):
    """A profile's resolved settings, as TOML."""
    from . import config as cfgmod
    from .profile import load_profile

    click.echo(cfgmod.dumps_toml(cfgmod.to_dict(run_api(load_profile, name))))


@profile.command("detect")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def profile_detect(as_json):
    """The built-in profile that fits this machine best."""
    from .profile import detect, machine_info

    info = machine_info()
    p = run_api(detect, info)
    emit({"profile": p.name, "arch": info.arch, "model": info.model}, as_json,
         f"{p.name}  ({info.arch}, {info.model or 'unknown CPU'})")


@profile.command("validate")
@click.argument("paths", nargs=-1, required=True)
def profile_validate(paths):
    """Validate profile TOML files (exit 1 on the first bad one)."""
    from .profile import load_profile

    for p in paths:
        prof = run_api(load_profile, p)
        click.echo(f"ok: {p} ({prof.name})")


@main.command()
@bundle_opt
@profile_opt
@state_opt
@click.option("--host", default="127.0.0.1", show_default=True, envvar="GENRE_HOST",
              help="Address to listen on (env GENRE_HOST).")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535), envvar="GENRE_PORT",
              help="Port (env GENRE_PORT; 0 = any free port).")  # range-checked: 99999 served on 34463
@click.option("--api-key-file", type=click.Path(dir_okay=False, exists=True), envvar="GENRE_API_KEY_FILE",
              help="File holding the API key that writes (POST/DELETE /items) need in X-API-Key "
                   "(env GENRE_API_KEY_FILE, or the key itself in GENRE_API_KEY).")
@click.option("--protect-reads", is_flag=True, help="Require the API key for every endpoint but /health.")
@click.option("--allow-host", "allow_hosts", multiple=True, envvar="GENRE_ALLOW_HOSTS",
              help="Host header values to accept (repeatable; default: loopback names and --host; '*' = any).")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True, envvar="GENRE_WORKERS",
              help="Worker processes on one port (env GENRE_WORKERS): each loads the bundle; catalog updates are "
                   "shared through the state folder; session feedback needs 1.")
def serve(bundle_path, profile, state_dir, host, port, api_key_file, protect_reads, allow_hosts, workers):
    """Serve the HTTP API (FastAPI + uvicorn; the 'server' extra)."""
    try:
        import uvicorn

        from .server import create_app
    except ImportError:
        raise click.ClickException(str(MissingExtraError("server", "'genre serve'"))) from None
    import os

    from .server import LOOPBACK_HOSTS

    # stripped either way: an HTTP header value cannot start or end with spaces, so a key that did could never match
    env_key = os.environ.get("GENRE_API_KEY")
    key = Path(api_key_file).read_text(encoding="utf-8").strip() if api_key_file else (env_key or "").strip()
    if api_key_file and not key:
        raise click.ClickException(f"--api-key-file {api_key_file}: the file is empty")
    if not api_key_file and env_key is not None and not key:
        raise click.ClickException("GENRE_API_KEY is set but empty: set the key, or unset it to serve without one")
    if protect_reads and not key:
        raise click.ClickException("--protect-reads needs an API key (--api-key-file or GENRE_API_KEY)")
    _check_listen(host, port)
    if not key and host not in LOOPBACK_HOSTS:
        log.warning("serving on %s without an API key: anyone who reaches it can change the catalog", host)
    hosts = tuple(allow_hosts) or (*LOOPBACK_HOSTS, *([host] if host not in ("0.0.0.0", "::") else []))
    if not allow_hosts and host in ("0.0.0.0", "::"):
        log.warning("serving on all interfaces, accepting only loopback Host headers: pass --allow-host with the "
                    "names or addresses clients use (the allow-list stops DNS rebinding)")
    _limit_malloc_arenas()
    rec = _load(bundle_path, profile, state_dir)  # with workers too: a bad bundle fails here, once, clearly
    _limit_blas_threads(max(1, rec.profile.threads.intra_op // workers))
    from .server import uvicorn_options

    shown = f"[{host}]" if ":" in host else host
    click.echo(f"serving {Path(bundle_path).name} on http://{shown}:{port}/ (the playground page; API docs at /docs)",
               err=True)
    if workers == 1:
        uvicorn.run(create_app(rec, key or None, protect_reads, hosts), host=host, port=port, log_level="warning",
                    **uvicorn_options())
        return
    import json

    from .server import WORKER_ENV

    os.environ[WORKER_ENV] = json.dumps({
        "bundle": str(Path(bundle_path).resolve()), "state_dir": str(Path(state_dir).resolve()) if state_dir else None,
        "profile": rec.profile.name if profile in (None, "auto") else profile, "api_key": key or None,
        "protect_reads": protect_reads, "hosts": list(hosts), "workers": workers})
    del rec  # each worker loads its own; the supervisor keeps only what the imports hold
    import gc

    gc.collect()
    _trim_heap()
    uvicorn.run("genre_edge.server:app_from_env", factory=True, workers=workers, host=host, port=port,
                log_level="warning", **uvicorn_options())


def _trim_heap() -> None:
    """Give freed heap pages back to the OS (glibc keeps them otherwise): the supervisor of the
    workers validated the bundle by loading it and needs none of that memory while it waits."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _check_listen(host: str, port: int) -> None:
    """Stop with the reason when ``host:port`` cannot be listened on (a name that does not resolve, an
    address this machine lacks, a port in use), before the bundle loads and "serving on ..." is printed:
    uvicorn said it only after that line, in its own words, with exit code 3."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise click.ClickException(f"--host {host!r}: not an address or a name this machine resolves ({exc.strerror})")
    family, kind, proto, _, addr = infos[0]
    try:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            sock.bind(addr)
    except OSError as exc:
        why = "the port is in use (another server? choose another --port)" if exc.errno == errno.EADDRINUSE else \
            "this machine has no such address (--host 0.0.0.0 listens on all)" if exc.errno == errno.EADDRNOTAVAIL else \
            "needs privileges for ports below 1024 (choose --port 1024 or above)" if exc.errno == errno.EACCES else \
            exc.strerror
        raise click.ClickException(f"cannot listen on {host}:{port}: {why}") from None


def _limit_blas_threads(n: int) -> None:
    """numpy's BLAS (OpenBLAS) threads for serving: ``n`` per process, unless the environment says.

    Why: OpenBLAS starts a thread per core for the catalog product, and next to the HTTP event loop
    and other workers they fight for the same cores: 274 vs 1,407 req/s at 4 connections with
    ``--workers 2`` on this 2-core machine (1,026 vs 1,177 with one process). Worker processes start
    fresh and read the environment variables; this process has numpy loaded already, so its limit goes
    through threadpoolctl (the 'server' extra).
    """
    import os

    if any(v in os.environ for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")):
        return  # the user decided
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        log.info("threadpoolctl is not installed: numpy's BLAS threads in this process are left as they are")
        return
    threadpool_limits(n, user_api="blas")


def _limit_malloc_arenas(n: int = 2) -> None:
    """Cap glibc's malloc arenas before the server's worker threads start.

    Why: request handlers run on a thread pool and glibc gives threads their own arenas (up to 8
    per core); a 200k-request soak grew RSS 160 -> 178 MiB before levelling off. Two arenas keep
    the footprint of a long-running appliance flat. MALLOC_ARENA_MAX in the environment wins.
    """
    import ctypes
    import os
    import sys

    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return
    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, n)  # M_ARENA_MAX; a no-op where libc is not glibc
    except (OSError, AttributeError):
        pass
    # worker processes (--workers) start fresh: glibc reads this there (before, their RSS rose 7.5% in a
    # soak, all of it in the first 30% of the run, as each of their threads got an arena of its own)
    os.environ["MALLOC_ARENA_MAX"] = str(n)


@main.command()
@bundle_opt
@click.option("--profile", "profiles", multiple=True, default=["auto"], show_default=True, envvar="GENRE_PROFILE",
              help="Profile name, a .toml path, 'auto' or 'all' (repeatable). Profiles for hardware this machine "
                   "lacks are reported as skipped, with the reason.")
@click.option("--all-variants", is_flag=True, help="Bench every encoder variant in the bundle, not just the profile's.")
@click.option("--history-len", type=click.IntRange(0, 10000), default=50, show_default=True, help="Items in each request's history.")
@click.option("--reps", type=click.IntRange(5, 100000), default=300, show_default=True, help="Requests per measurement after warm-up.")
@click.option("--starts", type=click.IntRange(1, 50), default=3, show_default=True,
              help="Fresh processes per round for the cold-start median.")
@click.option("--rounds", type=click.IntRange(1, 20), default=3, show_default=True,
              help="Interleaved rounds: every profile/variant runs once per round, so drift on a busy machine "
                   "lands on every row alike; percentiles pool all rounds.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Write bench.jsonl, bench.md and bench.png here.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def bench(bundle_path, profiles, all_variants, history_len, reps, starts, rounds, out, as_json):
    """Latency per stage (p50/p95/p99), throughput, cold start, memory and sizes on this machine."""
    import tempfile

    from .bench import harness as B
    from .bench.machine import machine
    from .profile import detect

    profiles = [run_api(detect).name if p == "auto" else p for p in profiles]
    if "all" in profiles:
        profiles = ["all"]
    plans = run_api(B.plan, bundle_path, profiles, all_variants)
    rows = [{"profile": p.profile, "skipped": True, "reason": p.reason} for p in plans if not p.runnable]
    todo = [p for p in plans if p.runnable]
    if not todo:
        raise click.ClickException("no profile can run on this machine: " +
                                   "; ".join(f"{r['profile']}: {r['reason']}" for r in rows))
    mach = machine()
    per_round = max(5, reps // rounds)
    runs: dict[int, list] = {i: [] for i in range(len(todo))}
    steps = [(r, i) for r in range(rounds) for i in range(len(todo))]
    with tempfile.TemporaryDirectory() as cache, \
            click.progressbar(steps, label="benchmarking", file=sys.stderr, show_pos=True,
                              item_show_func=lambda s: s and f"round {s[0] + 1}: {todo[s[1]].profile}/"
                                                              f"{todo[s[1]].variant}") as bar:
        for r, i in bar:
            n_cold = len(range(r, starts, rounds))  # the cold starts are spread over the rounds too
            runs[i].append(run_api(B.bench_round, bundle_path, todo[i], per_round, history_len, n_cold, cache))
    rows += [dict(run_api(B.aggregate, bundle_path, p, runs[i]), machine=mach) for i, p in enumerate(todo)]
    command = "genre " + " ".join(sys.argv[1:])
    md = B.markdown(rows, mach, command)
    if out:
        from .fsutil import atomic_write_text

        def write(d: Path):
            d.mkdir(parents=True, exist_ok=True)
            atomic_write_text(d / "bench.jsonl", "".join(json.dumps(dict(r, command=command)) + "\n" for r in rows))
            atomic_write_text(d / "bench.md", md)
            B.chart(rows, d / "bench.png")

        run_api(write, Path(out))  # a full disk: one line, not a traceback after the whole benchmark
    emit(rows, as_json, md)


if __name__ == "__main__":  # pragma: no cover
    main()
