"""What the runtime computes for fixed inputs (run natively and under QEMU, then compared).

Imports only the runtime (numpy, onnxruntime, tokenizers): it runs inside a bare arm64 rootfs.
    python probe.py BUNDLE PROFILE OUT.json
"""
import json
import platform
import sys


from genre_edge.bundle import open_bundle
from genre_edge.catalog_index import CatalogScorer, Int8Index, saturates_u8s8
from genre_edge.recommender import Recommender

TEXTS = ["something light and funny from the 90s", "a dark psychological thriller with a twist",
         "animated adventure for kids", "classic western with gunfights", "Toy Story (1995). Animation, Comedy",
         "a quiet drama about a family, set in rural Ireland, with a slow and beautiful score and long silences"]


def index_overlap(rec, n=100_000, queries=20, k=200):
    """Top-``k`` overlap of this CPU's int8 index with float32 on ``n`` items: the catalog grown with
    synthetic rows (catalog rows + noise, re-normalised) and queried with user vectors of random
    50-item histories, as benchmarks/scale_curve.py does; mean and min over ``queries``."""
    import numpy as np

    rng = np.random.default_rng(0)
    emb = np.asarray(rec.catalog.emb, np.float32)
    extra = emb[rng.integers(0, len(emb), n - len(emb))] + rng.standard_normal((n - len(emb), emb.shape[1]),
                                                                                np.float32) * 0.03
    rows = np.concatenate([emb, extra / np.linalg.norm(extra, axis=1, keepdims=True)])
    class _Catalog:  # what CatalogScorer reads of a catalog
        changed_rows: set = set()

    cat = _Catalog()
    cat.emb = rows
    scorer = CatalogScorer("int8", 1)  # as this CPU builds it (7-bit queries where u8 x s8 saturates)
    scorer.build(cat)
    out, raw = [], []
    top = lambda s: set(np.argpartition(-s, k)[:k])  # noqa: E731
    for _ in range(queries):
        u, _ = rec.user_model(emb[rng.choice(len(emb), size=min(50, len(emb)), replace=False)])
        exact = top(rows @ u)
        out.append(len(exact & top(scorer.scores(cat, u))) / k)  # what a request gets: index + exact refinement
        raw.append(len(exact & top(scorer.index.scores(u))) / k)  # the int8 pass alone
    return {"items": n, "queries": queries, "k": k, "top_k_overlap_mean": float(np.mean(out)),
            "top_k_overlap_min": float(np.min(out)), "index_only_overlap_mean": float(np.mean(raw)),
            "index_only_overlap_min": float(np.min(raw))}


def main(bundle, profile, out):
    # the int8 index quantizes queries to 7 bits where the u8 x s8 kernel saturates (x86 without VNNI)
    res = {"machine": platform.machine(), "python": platform.python_version(), "variants": {},
           "index_7bit": saturates_u8s8()}
    import onnxruntime

    res["onnxruntime"] = onnxruntime.__version__
    for v in open_bundle(bundle, verify=False).variants("encoder"):
        if v == "fp16":  # a GPU variant: not what a Pi runs
            continue
        rec = Recommender.load(bundle, profile, variant=v)
        ids = rec.catalog.ids
        # 1 and 2 items: histories the short-history CF tables serve (catalog.cf.short), where a bundle has them
        hists = [ids[:5], ids[100:150], ids[7::40], ids[3:4], ids[10:12]]
        r = {"embeddings": rec.embed(TEXTS).tolist(), "recs": []}
        # the query as a request embeds it: what the parser leaves of it, alone (a batch of one quantizes its
        # activations over that text only; in the batch above they share one range with the other texts)
        parsed = rec.parser.parse(TEXTS[1])
        r["query_embeddings"] = rec.embed([parsed.text or TEXTS[1]]).tolist()
        # numpy float32 scoring, the int8 MatMulInteger index as this CPU builds it, and the index with
        # 7-bit queries everywhere (the same arithmetic on every CPU class: comparable across them)
        for mode in ("fp32", "int8", "int8-7bit"):
            rec.catalog_scorer = CatalogScorer("fp32" if mode == "fp32" else "int8", 1)
            rec.rebuild_index()
            if mode == "int8-7bit":
                rec.catalog_scorer.index = Int8Index(rec.catalog.emb, 1, reduce_range=True)
            for h in hists:
                for q in (None, TEXTS[1]):
                    resp = rec.recommend(h, query=q, k=10)
                    r["recs"].append({"mode": mode, "query": q, "history": len(h),
                                      "ids": [x.id for x in resp.items], "scores": [x.score for x in resp.items]})
        res["variants"][v] = r
        res["profile"] = rec.profile.name
    res["index_overlap"] = index_overlap(rec)
    with open(out, "w") as fh:
        json.dump(res, fh)


if __name__ == "__main__":
    main(*sys.argv[1:4])
