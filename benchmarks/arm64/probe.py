"""What the runtime computes for fixed inputs (run natively and under QEMU, then compared).

Imports only the runtime (numpy, onnxruntime, tokenizers): it runs inside a bare arm64 rootfs.
    python probe.py BUNDLE PROFILE OUT.json
"""
import json
import platform
import sys


from genre_edge.bundle import open_bundle
from genre_edge.catalog_index import CatalogScorer
from genre_edge.recommender import Recommender

TEXTS = ["something light and funny from the 90s", "a dark psychological thriller with a twist",
         "animated adventure for kids", "classic western with gunfights", "Toy Story (1995). Animation, Comedy",
         "a quiet drama about a family, set in rural Ireland, with a slow and beautiful score and long silences"]


def main(bundle, profile, out):
    res = {"machine": platform.machine(), "python": platform.python_version(), "variants": {}}
    import onnxruntime

    res["onnxruntime"] = onnxruntime.__version__
    for v in open_bundle(bundle, verify=False).variants("encoder"):
        if v == "fp16":  # a GPU variant: not what a Pi runs
            continue
        rec = Recommender.load(bundle, profile, variant=v)
        ids = rec.catalog.ids
        hists = [ids[:5], ids[100:150], ids[7::40]]
        r = {"embeddings": rec.embed(TEXTS).tolist(), "recs": []}
        for mode in ("fp32", "int8"):  # numpy float32 scoring and the int8 MatMulInteger index
            rec.catalog_scorer = CatalogScorer(mode, 1)
            rec.rebuild_index()
            for h in hists:
                for q in (None, TEXTS[1]):
                    resp = rec.recommend(h, query=q, k=10)
                    r["recs"].append({"mode": mode, "query": q, "history": len(h),
                                      "ids": [x.id for x in resp.items], "scores": [x.score for x in resp.items]})
        res["variants"][v] = r
        res["profile"] = rec.profile.name
    with open(out, "w") as fh:
        json.dump(res, fh)


if __name__ == "__main__":
    main(*sys.argv[1:4])
