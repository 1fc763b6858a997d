"""Free-text request benchmark: precision@10 and nDCG@10 against metadata ground truth.

Requests come from the generator (``genre_edge_export.requests``, the ``test`` part: no template or
mood phrase shared with what distillation reads). Relevance = the item's metadata matches (categories,
years, exclusions). Every encoder is scored on one path, so rows compare encoders only:

- ``embedding``: the whole request embedded, catalog ranked by cosine (no parser);
- ``parsed``: the runtime's request parser turns years/categories/negations into filters, the rest is
  embedded (nothing left: popularity within the filters, or the history);
- with a history: 50 items of a real user; the user vector is the mean of their embeddings, blended
  with the query vector as the bundle's query preset does (``query_weight``), history items excluded.

Rows: the zero-shot encoder (pretrained MiniLM, untrained), the trained teacher (PyTorch), the
student fp32 (PyTorch) and the student int8 (the bundle's ONNX encoder and int8 catalog). A last
row is the int8 bundle **as served** (``Recommender.recommend``: user model, CF, popularity,
re-ranking). Requests are split by what the parser reduces to filters (``reducible``: its filters
equal the ground truth) and the rest (``free``: mood words, paraphrases).

    python benchmarks/request_bench.py --teacher runs/quickstart/teacher --student runs/quickstart/student \\
        --bundle runs/quickstart/bundle --out benchmarks/results
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine, machine_markdown  # noqa: E402

HISTORY_LEN = 50
K = 10


def classify(parser, r) -> str:
    """``reducible`` when the parser's filters are exactly the request's ground truth."""
    p = parser.parse(r.text)
    lo, hi = (r.years or (None, None))
    lo = None if lo is not None and lo <= 0 else lo
    hi = None if hi is not None and hi >= 9999 else hi
    same = (set(p.require_categories) == set(r.require) and not p.include_categories
            and set(p.exclude_categories) == set(r.exclude) and (p.year_min, p.year_max) == (lo, hi)
            and not p.exclude_years)
    return "reducible" if same else "free"


def histories(ds, n: int, seed: int = 0) -> list[np.ndarray]:
    """Last ``HISTORY_LEN`` liked items of ``n`` real users with at least that many."""
    inter = ds.interactions
    pos = inter.take(inter.label == 1)
    order = np.lexsort((pos.time, pos.user))
    users, items = pos.user[order], pos.item[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    good = [(a, b) for a, b in zip(starts, ends) if b - a >= HISTORY_LEN]
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(good), size=min(n, len(good)), replace=False)
    return [items[good[i][1] - HISTORY_LEN: good[i][1]].astype(np.int64) for i in pick]


def rank(E, q, hist, mask, pop, qw):
    """Top-K rows of ``mask``: cosine to the blended user/query vector (popularity when neither)."""
    if hist is not None:
        u = E[hist].mean(0)
        u /= max(np.linalg.norm(u), 1e-9)
        v = u if q is None else (1 - qw) * u + qw * q
        s = E @ v
    elif q is not None:
        s = E @ q
    else:
        s = pop.astype(np.float64).copy()
    s = np.where(mask, s, -np.inf)
    if hist is not None:
        s[hist] = -np.inf
    top = np.argsort(-s, kind="stable")[:K]
    return top[np.isfinite(s[top])]


def metrics(top, rel) -> tuple[float, float]:
    gains = rel[top].astype(float)
    p = gains.sum() / K
    ideal = min(K, int(rel.sum()))
    disc = 1.0 / np.log2(np.arange(2, K + 2))
    ndcg = float((gains * disc[: len(gains)]).sum() / disc[:ideal].sum()) if ideal else 0.0
    return float(p), ndcg


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--student", required=True)
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--student-name", default="student",
                    help="row label of --student (e.g. 'teacher 6-layer' when the bundle ships the teacher's encoder)")
    ap.add_argument("--part", default="test", choices=["train", "valid", "test"])
    ap.add_argument("--per-kind", type=int, default=60, help="requests per kind (6 kinds)")
    ap.add_argument("--name", default="requests-ml-100k")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from genre_edge.bench.report import markdown_table, write_results
    from genre_edge.catalog import Filters
    from genre_edge.recommender import Recommender
    from genre_edge_export.model_folder import ModelDir
    from genre_edge_export.models import ItemTower, load_hf_encoder
    from genre_edge_export.prepare import Prepared, default_encoder_path
    from genre_edge_export.requests import CategoryMembers, generate
    from genre_edge_export.text import tokenize

    torch.set_num_threads(os.cpu_count() or 1)
    T, S = ModelDir(args.teacher), ModelDir(args.student)
    prep = Prepared(T.conf)
    ds = prep.data
    cats, years = ds.items.categories, ds.items.year
    reqs = [r for r in generate(cats, years, per_kind=args.per_kind) if r.part == args.part]
    rec = Recommender.load(args.bundle, "auto", state_dir=Path(str(Path(args.bundle).resolve()) + ".bench-state"))
    if list(rec.catalog.ids[: rec.catalog.n_bundle]) != list(ds.items.ids):
        raise SystemExit("the bundle's catalog is not this data set's items")
    parser = rec.parser
    qw = rec.presets["query"].query_weight or 0.5
    pop = rec.catalog.pop[: len(ds.items.ids)]
    hists = histories(ds, len(reqs))
    classes = [classify(parser, r) for r in reqs]
    members = CategoryMembers(cats)
    rels = [r.relevant(members, years) for r in reqs]
    texts = T.items["text"]

    def torch_encoder(tower, max_tokens, tok):
        def enc(xs):
            ids, mask = tokenize(tok, xs, max_tokens)
            with torch.no_grad():
                return torch.cat([tower(torch.as_tensor(ids[a:a + 128]), torch.as_tensor(mask[a:a + 128]))
                                  for a in range(0, len(xs), 128)]).numpy()
        return enc

    mt = T.conf.encoder.max_tokens
    zs_tower = ItemTower(load_hf_encoder(default_encoder_path()), T.conf.encoder.pooling, 0, False).eval()
    t_tower, _ = T.modules()
    s_tower, _ = S.modules()
    zs = torch_encoder(zs_tower, mt, default_encoder_path() / "tokenizer.json")
    encoders = {
        "zero-shot MiniLM (untrained)": (zs, zs(texts)),
        "teacher (PyTorch)": (torch_encoder(t_tower, mt, T.path / "encoder" / "tokenizer.json"), T.emb),
        f"{args.student_name} fp32 (PyTorch)": (torch_encoder(s_tower, mt, S.path / "encoder" / "tokenizer.json"), S.emb),
        f"{args.student_name} {rec.variant} (bundle encoder + int8 catalog)":
            (rec.embed, rec.catalog.emb[: len(ds.items.ids)]),
    }
    full = {}
    for name, (enc, E) in encoders.items():
        t0 = time.perf_counter()
        Q = enc([r.text for r in reqs])
        parsed = [parser.parse(r.text) for r in reqs]
        rest = sorted({p.text for p in parsed if p.text})
        R = dict(zip(rest, enc(rest))) if rest else {}
        out = {}
        for mode in ("embedding", "parsed"):
            for with_h in (False, True):
                tops = []
                for i, r in enumerate(reqs):
                    h = hists[i] if with_h else None
                    if mode == "embedding":
                        q, mask = Q[i], np.ones(len(E), bool)
                    else:
                        p = parsed[i]
                        q = R.get(p.text) if p.text else None
                        f = Filters((), p.exclude_categories, p.year_min, p.year_max, None, None,
                                    p.require_categories, p.include_categories, p.exclude_years)
                        mask = rec.catalog.mask(f)[: len(E)]
                    tops.append(rank(E, q, h, mask, pop, qw))
                out[(mode, with_h)] = tops
        full[name] = out
        print(f"{name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    # the int8 bundle as served
    served = {}
    for with_h in (False, True):
        tops = []
        for i, r in enumerate(reqs):
            h = [ds.items.ids[j] for j in hists[i]] if with_h else []
            resp = rec.recommend(h, query=r.text, k=K)
            tops.append(np.array([rec.catalog.index[x.id] for x in resp.items], np.int64))
        served[("parsed", with_h)] = tops
    full[f"int8 bundle as served (Recommender, {rec.variant})"] = served
    # latency: the parser alone, and a served request with and without it (interleaved, same requests)
    from genre_edge.bench.timing import stats

    h0 = [ds.items.ids[j] for j in hists[0]]
    parse_ms, with_ms, without_ms = [], [], []
    for _ in range(3):
        for r in reqs:
            t = time.perf_counter()
            parser.parse(r.text)
            parse_ms.append((time.perf_counter() - t) * 1e3)
            for flag, acc in ((True, with_ms), (False, without_ms)):
                t = time.perf_counter()
                rec.recommend(h0, query=r.text, k=K, mmr_lambda=0.7, parse_query=flag)
                acc.append((time.perf_counter() - t) * 1e3)
    latency = {"parse_only": stats(parse_ms), "recommend_parsed": stats(with_ms),
               "recommend_unparsed": stats(without_ms)}
    teacher = full["teacher (PyTorch)"]
    rows = []
    for name, out in full.items():
        for (mode, with_h), tops in out.items():
            for cls in ("reducible", "free", "all"):
                idx = [i for i, c in enumerate(classes) if cls in ("all", c)]
                if not idx:
                    continue
                pn = np.array([metrics(tops[i], rels[i]) for i in idx])
                row = {"encoder": name, "mode": mode, "history": HISTORY_LEN if with_h else 0, "requests": cls,
                       "n": len(idx), "p@10": float(pn[:, 0].mean()), "ndcg@10": float(pn[:, 1].mean())}
                t_tops = teacher.get((mode, with_h))
                if t_tops is not None:
                    row["overlap_teacher@10"] = float(np.mean([len(set(tops[i]) & set(t_tops[i])) / K for i in idx]))
                rows.append(row)
    by = {(r["encoder"], r["mode"], r["history"], r["requests"]): r for r in rows}
    for r in rows:
        t = by.get(("teacher (PyTorch)", r["mode"], r["history"], r["requests"]))
        r["p_kept"] = r["p@10"] / t["p@10"] if t and t["p@10"] else float("nan")
    mach = machine()
    n_cls = {c: classes.count(c) for c in ("reducible", "free")}
    kinds = {k: sum(1 for r in reqs if r.kind == k) for k in dict.fromkeys(r.kind for r in reqs)}
    payload = {"rows": rows, "requests": [dict(r.to_dict(), cls=c) for r, c in zip(reqs, classes)],
               "classes": n_cls, "kinds": kinds, "history_len": HISTORY_LEN, "query_weight": qw, "latency_ms": latency,
               "machine": mach, "command": "python " + " ".join(sys.argv)}
    i8 = [r for r in rows if r["encoder"].startswith("int8 bundle as served")]
    goal = {f"{r['requests']}, history {r['history']}": r["p@10"] for r in i8 if r["requests"] != "all"}
    md = [f"# Free-text requests on {ds.name}\n", machine_markdown(mach) + "\n",
          f"Command: `{payload['command']}`\n",
          f"{len(reqs)} generated requests (part `{args.part}`; kinds: "
          + ", ".join(f"{k} {v}" for k, v in kinds.items()) + f"); {n_cls['reducible']} the parser reduces to "
          f"filters exactly, {n_cls['free']} it does not (mood words, paraphrases). Relevance = metadata match; "
          f"every request has >= 10 relevant items. History: the last {HISTORY_LEN} liked items of a real user "
          f"(one per request), blended with the query at the bundle's query weight {qw}.\n",
          "## int8 bundle as served: precision@10\n",
          "\n".join(f"- {k}: **{v:.3f}**" for k, v in goal.items()) + "\n",
          "## Latency (one thread, 50-item history + the request, MMR top-10)\n",
          "\n".join(f"- {k}: p50 {v['p50']:.3f} ms, p99 {v['p99']:.3f} ms" for k, v in latency.items())
          + "\n\n(A parsed request embeds only the text left after the constraints, or nothing.)\n",
          "## All rows\n",
          markdown_table(rows, ["encoder", "mode", "history", "requests", "n", "p@10", "ndcg@10", "p_kept",
                                "overlap_teacher@10"])]
    write_results(args.out, args.name, payload, "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
