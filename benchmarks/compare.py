"""Query encoding side by side with the references, in one process, one thread.

Rows (ratios to the first): PyTorch fp32 teacher (transformers), ONNX Runtime fp32 teacher,
ONNX Runtime int8 teacher, fastembed running the same teacher ONNX from a local folder, and our
distilled student fp32 / int8 through the runtime's encoder. Every timing includes tokenization
(texts in, normalised vectors out), at batch 1 and batch 32, 32-token texts. Quality: validation
nDCG@10 with each encoder's catalog embeddings (the teacher's / student's own user model), and
cosine to the PyTorch teacher. Also measures this CPU's int8 peak (a large pre-packed u8 x s8
MatMulInteger) and says how far the int8 student is from it.

Needs the export extra and fastembed (``pip install -e '.[export,bench]'``).

    python benchmarks/compare.py --teacher runs/full/teacher --student runs/full/student \\
        --bundle runs/full/bundle
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from genre_edge.bench.machine import machine, machine_markdown  # noqa: E402

log = logging.getLogger("compare")
TOKENS = 32
GOALS = {"speedup_vs_torch": 10.0, "speedup_vs_fastembed": 3.0, "ndcg_kept": 0.98}


def _time(fn, reps: int, warmup: int = 5) -> dict:
    from genre_edge.bench.timing import time_calls

    return time_calls(fn, reps, warmup)


def timed_rounds(fns: list, reps: int, rounds: int = 10) -> list[dict]:
    """p50/p95/p99 ms of each function, timed in ``rounds`` interleaved rounds after a warm-up."""
    per = [[] for _ in fns]
    for f in fns:
        for _ in range(3):
            f()
    for _ in range(rounds):
        for f, out in zip(fns, per):
            for _ in range(max(1, reps // rounds)):
                t = time.perf_counter()
                f()
                out.append((time.perf_counter() - t) * 1e3)
    return [{"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
             "p99": float(np.percentile(a, 99)), "n": len(a)} for a in map(np.asarray, per)]


def query_texts(tokenizer_path: Path, texts: list[str], n: int) -> list[str]:
    """``n`` texts of at least 32 tokens (item texts joined), so every row encodes exactly 32 tokens."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_path))
    tok.no_padding()
    tok.no_truncation()
    out, i = [], 0
    while len(out) < n:
        t = texts[i % len(texts)]
        while len(tok.encode(t).ids) < TOKENS:
            i += 1
            t = t + " " + texts[i % len(texts)]
        out.append(t)
        i += 1
    return out


def free_text_queries() -> list[str]:
    """Requests as a user types them (not item texts): what the query path of the runtime serves."""
    genres = ["comedy", "thriller", "romance", "sci-fi", "horror", "western", "animated", "documentary", "war",
              "crime", "musical", "fantasy"]
    moods = ["funny and light", "dark and tense", "heart-warming", "slow and thoughtful", "action-packed"]
    return [f"a {m} {g} movie" for g in genres for m in moods] + \
        [f"{g} from the {d}s" for g in genres for d in (50, 70, 90)]


def fastembed_folder(onnx_path: Path, encoder_dir: Path, dst: Path, dim: int):
    """A local fastembed model folder for our teacher ONNX (pooling and normalisation are in the graph)."""
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(onnx_path, dst / "model.onnx")
    for f in ("tokenizer.json", "special_tokens_map.json", "config.json"):
        shutil.copy(encoder_dir / f, dst / f)
    tc = json.loads((encoder_dir / "tokenizer_config.json").read_text())
    tc["model_max_length"] = TOKENS  # truncate like the others
    (dst / "tokenizer_config.json").write_text(json.dumps(tc))
    from fastembed import TextEmbedding
    from fastembed.common.model_description import ModelSource, PoolingType

    name = "genre-edge/teacher-local"
    try:
        TextEmbedding.add_custom_model(model=name, pooling=PoolingType.DISABLED, normalization=True,
                                       sources=ModelSource(hf=name), dim=dim, model_file="model.onnx")
    except ValueError:  # already registered in this process
        pass
    return TextEmbedding(name, specific_model_path=str(dst), threads=1, local_files_only=True)


def optimum_encoders(encoder_dir: Path, work: Path, tower, tok) -> list[tuple[str, object]]:
    """optimum's standard pipeline on the same teacher: its ONNX export of the Hugging Face encoder
    (``ORTModelForFeatureExtraction``), fp32 and quantized with its hardware presets (dynamic, per-channel:
    ``avx512_vnni`` and ``avx2``), each followed by the teacher's mean pooling and adapter, so every row
    produces the teacher's item space. One thread, like every row here."""
    import onnxruntime as ort
    import torch
    from optimum.onnxruntime import ORTModelForFeatureExtraction, ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
    fp32_dir = work / "fp32"
    ORTModelForFeatureExtraction.from_pretrained(str(encoder_dir), export=True).save_pretrained(fp32_dir)
    dirs = [("optimum fp32 (its ONNX export)", fp32_dir, None)]
    for preset in ("avx512_vnni", "avx2"):
        qdir = work / preset
        qconf = getattr(AutoQuantizationConfig, preset)(is_static=False, per_channel=True)
        ORTQuantizer.from_pretrained(fp32_dir).quantize(save_dir=qdir, quantization_config=qconf)
        dirs.append((f"optimum int8, preset {preset} (dynamic, per-channel)", qdir, next(qdir.glob("*quantized*.onnx")).name))
    out = []
    for name, d, file_name in dirs:
        kw = {"file_name": file_name} if file_name else {}
        model = ORTModelForFeatureExtraction.from_pretrained(d, session_options=so, provider="CPUExecutionProvider", **kw)

        def enc(texts, model=model):
            e = tok.encode_batch(texts)
            ids = torch.tensor([x.ids for x in e])
            mask = torch.tensor([x.attention_mask for x in e])
            h = model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).last_hidden_state
            m = mask.unsqueeze(-1).to(h.dtype)
            with torch.no_grad():
                return tower.head((h * m).sum(1) / m.sum(1).clamp(min=1e-9)).numpy()
        out.append((name, enc))
    return out


def int8_peak(reps: int = 20) -> dict:
    """This core's int8 GEMM peak through ONNX Runtime (u8 x s8, constant pre-packed B, one thread)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    best = {}
    for m, k, n in ((256, 1024, 1024), (512, 1536, 384), (32, 384, 1536)):
        b = np.random.default_rng(0).integers(-127, 128, (k, n), dtype=np.int8)
        g = helper.make_graph([helper.make_node("MatMulInteger", ["A", "B"], ["Y"])], "peak",
                              [helper.make_tensor_value_info("A", TensorProto.UINT8, [m, k])],
                              [helper.make_tensor_value_info("Y", TensorProto.INT32, [m, n])],
                              initializer=[numpy_helper.from_array(b, "B")])
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        a = np.random.default_rng(1).integers(0, 256, (m, k), dtype=np.uint8)
        t = _time(lambda: s.run(None, {"A": a}), reps)["p50"]
        g_macs = m * k * n / (t / 1e3) / 1e9
        best[f"{m}x{k}x{n}"] = g_macs
    return best


def cpu_ghz() -> float | None:
    """The highest clock the kernel reports (max frequency when cpufreq is exposed, else cpuinfo MHz)."""
    p = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    try:
        return int(p.read_text()) / 1e6
    except (OSError, ValueError):
        pass
    try:
        mhz = [float(line.split(":")[1]) for line in Path("/proc/cpuinfo").read_text().splitlines()
               if line.lower().startswith("cpu mhz")]
        return max(mhz) / 1e3 if mhz else None
    except (OSError, ValueError):
        return None


def encoder_macs(config: dict, tokens: int, adapter_dim: int) -> dict:
    """Multiply-accumulates per text: the int8 linear layers, and the fp32 attention products."""
    h, i, L = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    linear = L * tokens * (4 * h * h + 2 * h * i) + h * adapter_dim
    attention = L * 2 * tokens * tokens * h
    return {"int8_linear": linear, "fp32_attention": attention}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teacher", required=True, help="trained teacher folder (genre train)")
    ap.add_argument("--student", required=True, action="append",
                    help="distilled student folder (genre distill); repeat to compare several students")
    ap.add_argument("--bundle", required=True, action="append",
                    help="bundle exported from the student (genre export), one per --student, same order")
    ap.add_argument("--reps", type=int, default=200, help="timed calls at batch 1 (batch 32: reps / 8)")
    ap.add_argument("--no-optimum", dest="optimum", action="store_false",
                    help="leave out optimum's pipeline rows (its ONNX export + hardware presets)")
    ap.add_argument("--name", default=None)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--dir", dest="data_dir", default=os.environ.get("GENRE_DATA_DIR"))
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if len(a.student) != len(a.bundle):
        ap.error("give one --bundle per --student, in the same order")
    for flag, p, need in ([("--teacher", a.teacher, "config.toml")] + [("--student", x, "config.toml") for x in a.student]
                          + [("--bundle", x, "manifest.json") for x in a.bundle]):
        if not (Path(p) / need).is_file():
            ap.error(f"{flag} {p}: no {need} there")
    if a.reps < 16:
        ap.error("--reps must be >= 16")
    try:
        import torch
        from fastembed import TextEmbedding  # noqa: F401
        if a.optimum:
            from optimum.onnxruntime import ORTModelForFeatureExtraction  # noqa: F401
    except ImportError as exc:
        raise SystemExit(f"compare.py needs the export extra, fastembed and optimum-onnx: pip install -e '.[export,bench]' "
                         f"(or --no-optimum) ({exc})")
    from genre_edge_export.evaluate import category_features, evaluate
    from genre_edge.recommender import Recommender
    from genre_edge_export.model_folder import ModelDir
    from genre_edge_export.onnx_export import cosine_rows, export_encoder, ort_session
    from genre_edge_export.quantize import quantize
    from genre_edge_export.prepare import Prepared
    from genre_edge_export.scoring import Scorer, popularity_rows

    torch.set_num_threads(1)
    T = ModelDir(a.teacher)
    t_tower, t_rec = T.modules()
    students = []
    for sdir, bdir in zip(a.student, a.bundle):
        S = ModelDir(sdir)
        layers = json.loads((S.path / "distill.json").read_text()).get("layers") if (S.path / "distill.json").is_file() \
            else None
        students.append((S, S.modules()[1], bdir, f"layers {tuple(layers)}" if layers else S.path.name))
    labels = [x[3] for x in students]
    if len(set(labels)) < len(labels):  # the same layers twice (e.g. with and without augmentation): say which
        students = [(S, r, b, f"{lab}, {S.path.name}") for S, r, b, lab in students]
    prep = Prepared(T.conf, a.data_dir)
    feats = category_features(prep.data.items.categories)
    item_texts = T.items["text"]
    tok_path = T.path / "encoder" / "tokenizer.json"
    q1 = query_texts(tok_path, item_texts, 64)
    q32 = [query_texts(tok_path, item_texts[k * 7:] + item_texts[: k * 7], 32) for k in range(4)]

    def ndcg(rec_, conf, emb):
        pop_rows = popularity_rows(rec_, prep.split, prep.split.request_times("valid"))  # trending models
        r = evaluate(Scorer(conf, rec_, emb, prep.hist, pop_rows=pop_rows), prep.split, "valid", item_features=feats)
        return r["ndcg@10"]

    # --- the encoders, each as texts -> normalised vectors
    from tokenizers import Tokenizer

    hf_tok = Tokenizer.from_file(str(tok_path))
    hf_tok.no_padding()
    hf_tok.enable_truncation(TOKENS)
    hf_tok.enable_padding(pad_id=0, pad_token="[PAD]")

    def torch_encode(texts):
        enc = hf_tok.encode_batch(texts)
        ids = torch.tensor([e.ids for e in enc])
        mask = torch.tensor([e.attention_mask for e in enc])
        with torch.no_grad():
            return t_tower(ids, mask).numpy()

    work = Path(tempfile.mkdtemp(prefix="genre-compare-"))
    try:
        t_fp32 = export_encoder(t_tower, work / "teacher.fp32.onnx", TOKENS)
        t_int8 = quantize(t_fp32, work / "teacher.int8.onnx", "int8-avx512vnni")

        def ort_encoder(path):
            s = ort_session(path, threads=1)

            def enc(texts):
                e = hf_tok.encode_batch(texts)
                ids = np.array([x.ids for x in e], np.int64)
                mask = np.array([x.attention_mask for x in e], np.int64)
                return s.run(None, {"input_ids": ids, "attention_mask": mask})[0]
            return enc

        fe = fastembed_folder(t_fp32, T.path / "encoder", work / "fastembed", t_tower.dim)

        def fe_encode(texts):
            return np.stack(list(fe.embed(texts, batch_size=32)))

        optimum_rows = optimum_encoders(T.path / "encoder", work / "optimum", t_tower, hf_tok) if a.optimum else []
        rows = [("PyTorch fp32 teacher (transformers)", torch_encode, (t_rec, T.conf)),
                ("ONNX Runtime fp32 teacher", ort_encoder(t_fp32), (t_rec, T.conf)),
                ("ONNX Runtime int8 teacher (dynamic, per-channel)", ort_encoder(t_int8), (t_rec, T.conf)),
                ("fastembed 0.9 (same teacher ONNX, local folder)", fe_encode, (t_rec, T.conf)),
                *[(name, enc, (t_rec, T.conf)) for name, enc in optimum_rows]]
        stud = {}
        for S, s_rec, bdir, label in students:
            for v in ("fp32", "int8-avx512vnni"):
                if v in _variants(bdir):
                    r = stud[(label, v)] = Recommender.load(bdir, "x86-avx512-vnni", variant=v)
                    rows.append((f"genre-edge student {v} ({label}, runtime encoder)", r.embed, (s_rec, S.conf)))
        ref = ref_top = None
        free = free_text_queries()
        results = []
        for name, enc, (rec_, conf) in rows:
            log.info("quality: %s ...", name)
            emb = np.concatenate([enc(item_texts[i: i + 32]) for i in range(0, len(item_texts), 32)]).astype(np.float32)
            qe = np.concatenate([enc(free[i: i + 32]) for i in range(0, len(free), 32)]).astype(np.float32)
            top = np.argsort(-(qe @ emb.T), axis=1)[:, :10]
            if ref is None:
                ref, ref_top = emb, top
            cos = cosine_rows(emb, ref)
            results.append({"encoder": name, "ndcg@10": ndcg(rec_, conf, emb),
                            "cos_to_torch_mean": float(cos.mean()), "cos_to_torch_min": float(cos.min()),
                            "query_top10_overlap": float(np.mean([len(set(a_) & set(b_)) / 10.0
                                                                  for a_, b_ in zip(top, ref_top)]))})
        # Timing, interleaved: every round runs each encoder in turn, so drift on a shared machine
        # (other tenants, clock changes) lands on every row alike instead of on whichever ran last.
        b1 = timed_rounds([lambda enc=enc: enc([q1[np.random.randint(len(q1))]]) for _, enc, _ in rows], a.reps)
        b32 = timed_rounds([lambda enc=enc: enc(q32[np.random.randint(4)]) for _, enc, _ in rows],
                           max(10, a.reps // 8))
        for r, t1, t32 in zip(results, b1, b32):
            r.update(batch1_ms=t1, batch32_ms=t32, batch32_texts_per_s=32000.0 / t32["p50"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = results[0]
    fe_row = next(r for r in results if r["encoder"].startswith("fastembed"))
    for r in results:
        r["speedup_b1"] = base["batch1_ms"]["p50"] / r["batch1_ms"]["p50"]
        r["speedup_b32"] = base["batch32_ms"]["p50"] / r["batch32_ms"]["p50"]
        r["ndcg_kept"] = r["ndcg@10"] / base["ndcg@10"]
        r["vs_fastembed_b1"] = fe_row["batch1_ms"]["p50"] / r["batch1_ms"]["p50"]
    # --- int8 peak and how close the int8 student gets
    log.info("int8 peak ...")
    peak = int8_peak()
    ghz = cpu_ghz()
    best_peak = max(peak.values())
    # the goals are judged on the first student given (the default one)
    S0, _, _, label0 = students[0]
    macs = encoder_macs(json.loads((S0.path / "encoder" / "config.json").read_text()), TOKENS, t_tower.dim)
    s8 = next((r for r in results if "int8" in r["encoder"] and label0 in r["encoder"]), None)
    eff = None
    if s8 is not None and (label0, "int8-avx512vnni") in stud:
        enc = stud[(label0, "int8-avx512vnni")].encoder
        ids, mask = enc.tokenize(q32[0])
        onnx_b32 = _time(lambda: enc.run(ids, mask), 30, 3)["p50"]
        ids1, mask1 = enc.tokenize(q1[:1])
        onnx_b1 = _time(lambda: enc.run(ids1, mask1), a.reps)["p50"]
        eff = {"onnx_only_b1_ms": onnx_b1, "onnx_only_b32_ms": onnx_b32,
               "int8_gmacs_b1": macs["int8_linear"] / (onnx_b1 / 1e3) / 1e9,
               "int8_gmacs_b32": 32 * macs["int8_linear"] / (onnx_b32 / 1e3) / 1e9}
        eff["fraction_of_peak_b1"] = eff["int8_gmacs_b1"] / best_peak
        eff["fraction_of_peak_b32"] = eff["int8_gmacs_b32"] / best_peak
    res = {"machine": machine(), "tokens": TOKENS, "reps": a.reps, "rows": results, "goals": GOALS,
           "int8_peak_gmacs": peak, "cpu_ghz": ghz,
           "int8_macs_per_cycle": best_peak / ghz if ghz else None, "student_macs_per_text": macs,
           "student_efficiency": eff, "goal_student": label0,
           "command": "python benchmarks/compare.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    if s8:
        res["goals_met"] = {"speedup_vs_torch": s8["speedup_b1"] >= GOALS["speedup_vs_torch"],
                            "speedup_vs_fastembed": s8["vs_fastembed_b1"] >= GOALS["speedup_vs_fastembed"],
                            "ndcg_kept": s8["ndcg_kept"] >= GOALS["ndcg_kept"]}
    from genre_edge.bench.report import write_results

    write_results(a.out, a.name or f"compare-{Path(a.bundle[0]).resolve().name}", res, markdown(res), chart)
    print(markdown(res))
    return 0


def _variants(bundle) -> list[str]:
    from genre_edge.bundle import open_bundle

    return open_bundle(bundle, verify=False).variants("encoder")


def markdown(res: dict) -> str:
    L = ["# Query encoding vs the references", "", machine_markdown(res["machine"]), "",
         f"Command: `{res['command']}`", "",
         f"One process, one thread, {res['tokens']}-token texts, tokenization included (texts in, vectors out). "
         "Speed-ups and quality are relative to the first row; nDCG@10 on the validation split with each "
         "encoder's own catalog embeddings; query top-10 overlap: the catalog items each encoder retrieves for "
         "95 free-text requests (\"a dark and tense thriller movie\"), against PyTorch's.", "",
         "| encoder | batch 1 p50 ms | p99 | speed-up | vs fastembed | batch 32 p50 ms | texts/s | speed-up b32 | "
         "nDCG@10 | kept | cos to torch (mean / min) | query top-10 overlap |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        L.append(f"| {r['encoder']} | {r['batch1_ms']['p50']:.3f} | {r['batch1_ms']['p99']:.3f} | "
                 f"{r['speedup_b1']:.1f}x | {r['vs_fastembed_b1']:.2f}x | {r['batch32_ms']['p50']:.2f} | "
                 f"{r['batch32_texts_per_s']:.0f} | {r['speedup_b32']:.1f}x | {r['ndcg@10']:.4f} | "
                 f"{r['ndcg_kept']:.3f} | {r['cos_to_torch_mean']:.3f} / {r['cos_to_torch_min']:.3f} | "
                 f"{r['query_top10_overlap']:.2f} |")
    if "goals_met" in res:
        g = res["goals"]
        L += ["", f"Goals for the int8 student ({res.get('goal_student', 'first')}, batch 1): "
              + ", ".join(f"{k} >= {g[k]:g}: {'met' if v else '**missed**'}" for k, v in res["goals_met"].items())]
    e, m = res.get("student_efficiency"), res["student_macs_per_text"]
    peak = max(res["int8_peak_gmacs"].values())
    L += ["", "## int8 peak", "",
          "Peak: u8 x s8 MatMulInteger with a pre-packed constant B, one thread: "
          + ", ".join(f"{k}: {v:.1f} GMAC/s" for k, v in res["int8_peak_gmacs"].items())
          + (f"; at the {res['cpu_ghz']:.2f} GHz the kernel reports that is {res['int8_macs_per_cycle']:.0f} int8 "
             "MACs/cycle (an upper bound: a boosting core runs faster than its reported clock; AVX-512 VNNI on "
             "Zen 4 does 64 per cycle)" if res.get("cpu_ghz") else "") + ".",
          f"Student ({res.get('goal_student', 'first')}) per 32-token text: {m['int8_linear'] / 1e6:.1f} M int8 MACs (linear layers) + "
          f"{m['fp32_attention'] / 1e6:.2f} M fp32 MACs (attention products)."]
    if e:
        L.append(f"ONNX encoder alone (no tokenization): batch 1 {e['onnx_only_b1_ms']:.3f} ms = "
                 f"{e['int8_gmacs_b1']:.1f} GMAC/s ({100 * e['fraction_of_peak_b1']:.0f}% of the {peak:.0f} GMAC/s "
                 f"peak); batch 32 {e['onnx_only_b32_ms']:.2f} ms = {e['int8_gmacs_b32']:.1f} GMAC/s "
                 f"({100 * e['fraction_of_peak_b32']:.0f}%).")
    return "\n".join(L) + "\n"


def chart(res: dict, path: Path) -> None:
    from genre_edge.bench.report import pyplot, save_png

    plt = pyplot()
    if plt is None:
        return

    rows = res["rows"]
    names = [r["encoder"].replace(" (", "\n(") for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 0.55 * len(rows) + 1.8), sharey=True)
    a1.barh(names, [r["batch1_ms"]["p50"] for r in rows], color="tab:blue")
    a1.set_xscale("log")
    a1.set_xlabel("batch 1: ms per text (p50, log)")
    a2.barh(names, [r["batch32_texts_per_s"] for r in rows], color="tab:green")
    a2.set_xlabel("batch 32: texts per second")
    for i, r in enumerate(rows):
        a1.text(r["batch1_ms"]["p50"], i, f" {r['batch1_ms']['p50']:.2f} ms, nDCG kept {r['ndcg_kept']:.3f}",
                va="center", fontsize=7)
    a1.invert_yaxis()
    a1.tick_params(axis="y", labelsize=7)
    fig.suptitle("Query encoding, one thread, 32 tokens, tokenization included")
    fig.tight_layout()
    save_png(fig, path)


if __name__ == "__main__":
    sys.exit(main())
