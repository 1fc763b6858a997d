"""The README's main job: get data -> train -> distill -> quantize -> bundle -> recommend + bench."""
from __future__ import annotations

import json
import time
from pathlib import Path

import click

from genre_edge.bench.harness import latency_bench
from genre_edge.cliutil import item_label
from genre_edge.recommender import Recommender

from genre_edge.errors import ConfigError

from .bundle_writer import export_bundle
from .distill import DistillConfig, distill
from .prepare import config_dataset
from .reports import quality_table, teacher_summary
from .runloop import checkpoint_differences
from .train import train
from .train_config import load_config, packaged_config


def _step(title: str):
    click.secho(f"\n== {title}", bold=True, err=True)


ENCODERS = ("student", "teacher")


def demo_profiles() -> list[str]:
    """The profiles the demo bundle is built for: this machine's x86 class and the Raspberry Pis.

    Why this machine's class: without VNNI, the full-range int8 encoder can saturate (AVX2's
    vpmaddubsw adds u8 x s8 pairs into int16), so an AVX2-only host needs the 7-bit ``int8-avx2``
    file; with VNNI (and on the Pis' NEON) the full-range file is exact and 0.2% closer to the
    teacher. A VNNI host therefore ships one encoder file (19.9 MB on ml-100k), an AVX2 host two.
    """
    from genre_edge.profile import detect

    try:
        here = detect().name
    except ConfigError:  # no built-in profile fits (e.g. another architecture): the VNNI build, as before
        here = "x86-avx512-vnni"
    x86 = here if here in ("x86-avx2", "x86-avx512-vnni") else "x86-avx512-vnni"
    return [x86, "rpi4", "rpi5"]


def run(config_name: str, work_dir: str, data_dir: str | None, distill_epochs: int | None,
        encoder: str = "student", device: str | None = None, min_kept: float = 0.97) -> dict:
    """``encoder``: ``student`` distils a smaller encoder (the default: fastest on a device);
    ``teacher`` exports the teacher's own encoder, int8 (on ml-100k its free-text top-10 overlaps
    the teacher's 0.81 against the student's 0.4, at ~2x the encode time; benchmarks/results/
    requests-ml-100k-teacher-int8.md). ``device``: where training and distillation run (export/device.py;
    None: the config's)."""
    if encoder not in ENCODERS:
        raise ConfigError(f"encoder must be one of {', '.join(ENCODERS)}, not {encoder!r}")
    if encoder == "teacher" and distill_epochs is not None:
        raise ConfigError("--distill-epochs distils a student; --encoder teacher ships the teacher's encoder and "
                          "distils nothing: give one of them")
    t_all = time.perf_counter()
    work = Path(work_dir)
    path = Path(config_name) if config_name.endswith(".toml") else packaged_config(config_name)
    conf = load_config(path, {"train": {"device": device}} if device else None)
    quick = "quick" in conf.name
    ds = _data(conf, data_dir)
    _step(f"2/6 train the teacher ({conf.name})")
    teacher = work / "teacher"
    if (teacher / "report.json").is_file() and (teacher / "config.toml").is_file() and \
            load_config(teacher / "config.toml") == conf:
        rep = json.loads((teacher / "report.json").read_text())
        click.echo("  (already trained with this config; reusing it)", err=True)
    else:
        # the demo's own folder: another config's teacher there is replaced (an interrupted run of this
        # config is resumed)
        stale = checkpoint_differences(teacher, conf)
        if stale:
            click.echo(f"  ({teacher} holds a teacher of another config ({', '.join(stale[:4])}): training this "
                       "one from scratch)", err=True)
        rep = train(conf, teacher, data_dir, restart=bool(stale))
    click.echo(teacher_summary(rep))
    if encoder == "student":
        dconf = DistillConfig(epochs=distill_epochs or (4 if quick else 8), device=conf.train.device)
        _step(f"3/6 distill the encoder into a {len(dconf.layers)}-layer student (teacher layers "
              f"{', '.join(map(str, dconf.layers))})")
        student = work / "student"
        drep = distill(teacher, dconf, student, data_dir=data_dir)
        h = drep["history"][-1]
        click.echo(f"student: layers {drep['layers']}, cosine to teacher mean {h['cos_mean']:.4f} min {h['cos_min']:.4f}")
    else:
        _step("3/6 distillation skipped: the teacher's own encoder is exported (--encoder teacher)")
        student = teacher
    _step("4/6 export: ONNX, int8 per-channel quantization, quality gate, bundle")
    bundle = work / ("bundle" if encoder == "student" else "bundle-teacher")
    # the CF table ships as trained (cf.neighbors per item): with the encoder's side information EASE's weights
    # spread over more items, and keeping 150 of the 500 cost the bundle 3% of the teacher's validation nDCG@10
    out = export_bundle(student, bundle, demo_profiles(), teacher, data_dir=data_dir, min_kept=min_kept,
                        progress=lambda m: click.echo(f"  {m}", err=True))
    click.echo(quality_table(out["manifest"]))
    g = out["manifest"].quality.gate
    click.echo(f"quality kept after compression: {g.kept:.1%} of the teacher's nDCG@10 ({g.variant}); "
               f"bundle {out['bytes'] / 1e6:.1f} MB at {bundle}")
    _step("5/6 recommend on device (ONNX Runtime only)")
    rec = Recommender.load(bundle, "auto", state_dir=work / "state")
    inter = ds.interactions
    u0 = int(inter.user[0])
    mine = inter.take((inter.user == u0) & (inter.label == 1))
    history = [ds.items.ids[i] for i in mine.item[-20:]]
    click.echo(f"profile: {rec.profile.name}, variant: {rec.variant}, catalog: {len(rec.catalog)} items")
    # say the history is longer than what is listed: the reasons below name any of its items
    click.echo(f"user {ds.users[u0]}, a history of {len(history)} liked items; the latest 5: "
               + "; ".join(ds.items.title[ds.items.index(h)] for h in history[-5:]))
    r = rec.recommend(history, k=5, explain=True)
    _print(r)
    # an instruction naming an item: the most popular one this user has not liked
    popular = rec.search_items("", 50)["items"]
    example = next((it["title"] for it in popular if it["id"] not in history), None)
    queries = _instructions(ds)
    for q in (*queries, *([f"something like {example}"] if example else [])):
        r = rec.recommend(history, query=q, k=5, explain=True)
        click.echo(f'\nsame user, with the instruction "{q}" (understood: {r.parsed["summary"]}):')
        _print(r)
        if len(r.items) < 5:
            click.echo(f"  (all there is: only {len(r.items)} items this user has not liked pass these filters)")
    click.echo("\na new user (no history yet): the most popular")
    _print(rec.recommend([], k=3, explain=True))
    _step("6/6 latency on this machine (one thread)")
    lat = latency_bench(rec, history_len=50, reps=300)
    width = max(map(len, lat))
    for name, st in lat.items():
        click.echo(f"  {name:<{width}} p50 {st['p50']:.3f} ms  p95 {st['p95']:.3f} ms  p99 {st['p99']:.3f} ms")
    click.echo(f"\ndone in {time.perf_counter() - t_all:.0f} s. Try: genre recommend --bundle {bundle} "
               f"--history {','.join(history[-3:])} --query \"{queries[0] if queries else 'something new'}\" --explain")
    click.echo(f"training curves: tensorboard --logdir {work}  (or: python benchmarks/plot_curves.py --run {work})")
    click.echo(f"playground page: genre serve --bundle {bundle} --state-dir {work / 'state'}  "
               f"then open http://127.0.0.1:8080/")
    return {"bundle": str(bundle), "latency": lat}


DATA_NAMES = {"ml-100k": "MovieLens 100K"}
MOVIE_INSTRUCTIONS = ("something light and funny from the 90s", "a romantic comedy from the 80s, no drama")


def _instructions(ds) -> tuple[str, ...]:
    """Free-text instructions for step 5 in the data set's own terms: a film catalog (one with Comedy, Romance
    and Drama) gets the README's; another data set those the playground offers for it (its most common
    category and decade, a category without another: what the request parser turns into filters; a music
    catalog asked for "a romantic comedy, no drama" showed nothing the parser could do)."""
    from genre_edge.query_parser import example_instructions

    counts = ds.items.category_counts()
    if {"Comedy", "Romance", "Drama"} <= set(counts):
        return MOVIE_INSTRUCTIONS
    return example_instructions(counts, ds.items.year)


def _data(conf, data_dir: str | None):
    """Step 1: the config's data set (fetched when it is a known name, else read from its path), in the
    config's domain; what step 5 picks its example user from."""
    _step(f"1/6 data: {DATA_NAMES.get(conf.data.source, conf.data.source)}")
    steps: list[str] = []
    ds = config_dataset(conf, data_dir, steps)
    for s in steps:
        click.echo(f"  {s}", err=True)
    inter = ds.interactions
    click.echo(f"  {ds.n_users} users, {ds.n_items} items, {int((inter.label == 1).sum())} positive interactions",
               err=True)
    return ds


def _print(resp):
    for n, it in enumerate(resp.items, 1):
        why = ", ".join(
            (f"{r['title']} ({r['share']:.0%})" if r["source"] == "history" else f"{r['source']} ({r['share']:.0%})")
            for r in it.reasons)
        click.echo(f"  {n}. {item_label(it.title, it.year, it.categories)}  score {it.score:.3f}"
                   + (f"\n     because: {why}" if why else ""))
