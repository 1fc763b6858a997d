"""Export-side commands, loaded lazily by ``genre`` (see genre_edge.cli.LAZY_COMMANDS)."""
from __future__ import annotations

import json
import logging
import platform
from pathlib import Path

import click

from genre_edge.cli import emit, resolve_data, run_api

log = logging.getLogger(__name__)

METRIC_COLS = ["ndcg@10", "recall@10", "recall@20", "hit@10", "mrr", "auc_sampled", "coverage@10", "diversity@10"]


def comparison_markdown(title: str, rows: list[dict], split_summary: dict, extra: str = "") -> str:
    from genre_edge.report import markdown_table

    md = [f"# {title}\n", extra,
          f"Split: `{split_summary['kind']}` — train {split_summary['train']['events']} events, "
          f"warm test {split_summary['test']['positives']} positives of {split_summary['test']['users']} users, "
          f"cold items {split_summary['cold_items']} ({split_summary['cold_test']['positives']} held-out positives). "
          "Full ranking over warm items (each user's seen items excluded) for warm users; over cold items only "
          "for the cold-item test. Ties are broken by item index, so constant scores earn nothing.\n"]
    for part in ("warm", "cold"):
        md.append(f"\n## {'Warm users (per-user temporal holdout)' if part == 'warm' else 'Cold items (never seen in training)'}\n")
        table_rows = [{"model": r["model"], **r[part]} for r in rows]
        md.append(markdown_table(table_rows, ["model"] + METRIC_COLS + ["users"]))
    return "\n".join(md)


@click.command()
@click.option("--data", "data_spec", default="ml-100k", show_default=True, help="Data set name or path.")
@click.option("--dir", "data_dir", type=click.Path(file_okay=False), envvar="GENRE_DATA_DIR")
@click.option("--only", default="popularity,item-knn,ease,als", show_default=True)
@click.option("--out", "out_dir", default="benchmarks/results", show_default=True, type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True)
def baselines(data_spec, data_dir, only, out_dir, as_json):
    """Popularity, item-kNN, EASE and ALS on the standard split (warm users and cold items)."""
    from genre_edge.data import load_dataset
    from genre_edge.evaluate import category_features
    from genre_edge.split import make_split

    from .baselines import BASELINES, run_baselines

    names = [n.strip() for n in only.split(",") if n.strip()]
    bad = [n for n in names if n not in BASELINES]
    if bad:
        raise click.ClickException(f"unknown baseline {bad[0]!r}; choose from {', '.join(BASELINES)}")
    ds = run_api(load_dataset, resolve_data(data_spec, data_dir))
    split = make_split(ds)
    results = run_baselines(split, names, item_features=category_features(ds.items.categories))
    rows = [{"model": r.name, "fit_seconds": r.fit_seconds, "warm": r.warm, "cold": r.cold, "valid": r.valid}
            for r in results]
    payload = {"data": ds.name, "split": split.summary(), "results": rows, "machine": platform.platform()}
    md = comparison_markdown(f"Reference baselines on {ds.name}", rows, split.summary())
    from genre_edge.report import write_report

    j, m = write_report(out_dir, f"baselines-{ds.name}", payload, md)
    emit(payload, as_json, md + f"\nwritten: {j} and {m}")
