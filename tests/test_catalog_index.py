"""The int8 and 4-bit catalog indexes and the blocked top-k: parity with float32 numpy and brute force."""
import numpy as np
import pytest

from genre_edge.catalog_index import (CatalogScorer, Int4Index, Int8Index, int8_scoring_model, quantize_rows,
                                      quantize_rows_int4, top_n)


def unit_rows(n, d=48, seed=0):
    e = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def test_hand_written_onnx_model_is_valid_onnx():
    onnx = pytest.importorskip("onnx")  # the runtime writes the protobuf itself; the onnx package checks it
    q, s = quantize_rows(unit_rows(30))
    m = onnx.load_from_string(int8_scoring_model(q, s))
    onnx.checker.check_model(m, full_check=True)
    assert [n.op_type for n in m.graph.node] == ["MatMulInteger", "Cast", "Mul", "Mul"]
    got = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
    assert np.array_equal(got["catalog_t"], q.T) and np.array_equal(got["scales"], s)


@pytest.mark.parametrize("reduce_range", [None, True, False])
@pytest.mark.parametrize("n", [1, 257, 5000])
def test_int8_index_matches_float32_scores(n, reduce_range):
    """None: what this CPU gets (7-bit query without VNNI on x86); True runs everywhere; full range only
    where the u8 x s8 kernel cannot saturate."""
    from genre_edge.catalog_index import saturates_u8s8

    if reduce_range is False and saturates_u8s8():
        pytest.skip("full-range u8 x s8 saturates int16 pair sums on x86 without VNNI (this CPU)")
    e = unit_rows(n, seed=n)
    u = e[: min(n, 20)].mean(0)
    got, ref = Int8Index(e, reduce_range=reduce_range).scores(u), e @ u
    assert got.shape == (n,) and got.dtype == np.float32
    assert np.abs(got - ref).max() < 0.01  # two int8 roundings of unit vectors
    if n > 10:
        assert len(set(np.argsort(-got)[:10]) & set(np.argsort(-ref)[:10])) >= 9


def test_reduced_range_query_cannot_saturate_and_detection_follows_the_cpu():
    from genre_edge.catalog_index import saturates_u8s8

    ix = Int8Index(unit_rows(64), reduce_range=True)
    uq, _ = ix.quantize_query(np.random.default_rng(0).normal(size=48).astype(np.float32) * 9)
    assert uq.max() <= 127 and uq.min() >= 1
    assert 2 * 127 * 127 <= 32767 < 2 * 255 * 127  # vpmaddubsw's int16 pair sums: safe at 7 bits, not at 8
    assert saturates_u8s8({"avx2", "fma"}, "x86_64") and not saturates_u8s8({"avx2", "avx512_vnni"}, "x86_64")
    assert not saturates_u8s8({"asimd", "asimddp"}, "aarch64") and not saturates_u8s8({"avx2", "avx_vnni"}, "x86_64")


def test_int8_index_handles_a_zero_query_and_zero_rows():
    e = unit_rows(50)
    e[3] = 0
    ix = Int8Index(e)
    assert np.all(ix.scores(np.zeros(48, np.float32)) == 0)
    assert ix.scores(e[0])[3] == 0


class FakeCatalog:
    def __init__(self, emb):
        self.emb = emb
        self.changed_rows = set()


def test_scorer_uses_float32_for_rows_changed_or_added_after_the_index():
    cat = FakeCatalog(unit_rows(300))
    sc = CatalogScorer("int8")
    sc.build(cat)
    assert sc.index is not None and sc.index.n == 300
    cat.emb = np.vstack([cat.emb, unit_rows(5, seed=9)])  # added on device
    cat.emb[7] = -cat.emb[7]  # updated in place
    cat.changed_rows.add(7)
    u = cat.emb[:10].mean(0)
    got = sc.scores(cat, u)
    ref = cat.emb @ u
    assert got.shape == (305,)
    assert np.allclose(got[300:], ref[300:], atol=1e-6) and abs(got[7] - ref[7]) < 1e-6
    assert np.abs(got - ref).max() < 0.01


def int4_error_bound(e: np.ndarray, u: np.ndarray, block: int = 32) -> np.ndarray:
    """Per row, the most a 4-bit index score can be off: each row value is rounded to half its block's step
    (amax / 7), and the kernel rounds the query to int8 per block (half of amax / 127)."""
    d = e.shape[1]
    nb = -(-d // block)
    ep = np.pad(e, ((0, 0), (0, nb * block - d))).reshape(len(e), nb, block)
    up = np.pad(u, (0, nb * block - d)).reshape(nb, block)
    row_step = np.abs(ep).max(axis=2) / 7.0  # [N, nb]
    q_step = np.abs(up).max(axis=1) / 127.0  # [nb]
    return (0.5 * row_step * np.abs(up).sum(1)).sum(1) + (0.5 * q_step * (np.abs(ep).sum(2) + 0.5 * row_step * block)).sum(1)


@pytest.mark.parametrize("n,d", [(1, 384), (257, 384), (3000, 384), (500, 40), (300, 8)])
def test_int4_index_matches_float32_within_its_rounding_bound(n, d):
    """The 4-bit index (MatMulNBits, int8 compute) against float32, on any CPU: every score within the
    rounding bound of its 4-bit row and int8 query (a dimension that is not a multiple of the block is
    padded), from float rows and from the bundle's int8 rows alike."""
    e = unit_rows(n, d=d, seed=n + d)
    u = e[: min(n, 20)].mean(0)
    ref = e @ u
    int8_rounding = 0.5 * np.abs(e).max(axis=1) / 127 * np.abs(u).sum()  # the bundle's int8 rows' own
    for ix, slack in ((Int4Index(e), 0.0), (Int4Index(None, rows=quantize_rows(e)), int8_rounding)):
        got = ix.scores(u)
        assert got.shape == (n,) and got.dtype == np.float32 and ix.bits == 4
        assert np.all(np.abs(got - ref) <= int4_error_bound(e, u) * 1.01 + slack + 1e-5)
        if d >= 256 and n > 10:
            assert np.abs(got - ref).max() < 0.03
            assert len(set(np.argsort(-got)[:10]) & set(np.argsort(-ref)[:10])) >= 8
    packed, scales = quantize_rows_int4(e)
    assert packed.shape == (n, -(-d // 32), 16) and packed.dtype == np.uint8 and scales.shape == (n, -(-d // 32))
    lo, hi = packed & 15, packed >> 4
    assert lo.min() >= 1 and hi.max() <= 15  # values -7..7 around zero point 8: the 4-bit range, never -8
    with pytest.raises(ValueError, match="power of 2"):
        Int4Index(e, block=24)


def test_hand_written_4bit_model_is_valid_onnx():
    onnx = pytest.importorskip("onnx")
    from genre_edge.catalog_index import _int4_model_parts, _join

    packed, scales = quantize_rows_int4(unit_rows(30, d=64))
    m = onnx.load_from_string(_join(_int4_model_parts(packed, scales, 64, 32)))
    onnx.checker.check_model(m, full_check=True)
    (node,) = m.graph.node
    assert (node.op_type, node.domain) == ("MatMulNBits", "com.microsoft")
    assert {a.name: a.i for a in node.attribute} == {"K": 64, "N": 30, "bits": 4, "block_size": 32,
                                                      "accuracy_level": 4}
    got = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
    assert np.array_equal(got["catalog_q4"], packed) and np.array_equal(got["scales"], scales.reshape(-1))


@pytest.mark.parametrize("kind,reduce_range", [("int8", True), ("int8", None), ("int4", None)])
def test_refinement_makes_the_top_rows_exact_whatever_the_index(kind, reduce_range):
    """The index pass finds candidates; its best rows are scored again in float: the top-k then equals
    float32's even where the 7-bit query (AVX2 without VNNI) or the 4-bit rows alone swap near-ties (the
    4-bit index by default re-scores 512 rows)."""
    rng = np.random.default_rng(5)
    d = 64 if kind == "int8" else 384  # the 4-bit index is for wide embeddings (auto: from 256 dims)
    base = unit_rows(500, d=d, seed=5)
    near = base[rng.integers(0, 500, 29500)] + rng.standard_normal((29500, d)).astype(np.float32) * 0.03 * np.sqrt(64 / d)
    cat = FakeCatalog(np.vstack([base, near / np.linalg.norm(near, axis=1, keepdims=True)]))  # many near-ties
    raw, refined = CatalogScorer(kind, refine_top=0), CatalogScorer(kind)
    for sc in (raw, refined):
        sc.build(cat)
        if kind == "int8":
            sc.index = Int8Index(cat.emb, reduce_range=reduce_range)
    assert refined.refine_top == (256 if kind == "int8" else 512) and refined.index.bits == (8 if kind == "int8" else 4)
    top = lambda x, k=200: set(np.argpartition(-x, k)[:k])  # noqa: E731
    raw_overlap, refined_overlap = [], []
    for i in range(8):
        u = cat.emb[rng.choice(len(cat.emb), 50, replace=False)].mean(0)
        ref, got, loose = cat.emb @ u, refined.scores(cat, u), raw.scores(cat, u)
        best = top_n(loose, None, refined.refine_top)
        assert np.allclose(got[best], ref[best], atol=1e-5)  # the refined rows: float32 scores
        rest = np.setdiff1d(np.arange(len(ref)), best)
        assert np.array_equal(got[rest], loose[rest])  # the others: the int8 pass's
        raw_overlap.append(len(top(loose) & top(ref)) / 200)
        refined_overlap.append(len(top(got) & top(ref)) / 200)
    assert min(refined_overlap) == 1.0 and np.mean(raw_overlap) < 1.0  # the case is hard for int8 alone
    with pytest.raises(ValueError, match="refine_top"):
        CatalogScorer("int8", refine_top=-1)


@pytest.mark.parametrize("n,k", [(100000, 256), (5000, 256), (300, 256), (10, 256), (1000, 1), (50, 0)])
def test_top_n_without_a_mask_equals_argpartition(n, k):
    s = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    got = top_n(s, None, k)
    assert len(got) == min(n, k) and len(set(got.tolist())) == len(got)
    assert set(got.tolist()) == set(np.argsort(-s)[: min(n, k)].tolist())


def test_auto_mode_builds_an_index_only_for_large_catalogs():
    small, big = FakeCatalog(unit_rows(100)), FakeCatalog(unit_rows(20000, d=8))
    s1, s2 = CatalogScorer("auto"), CatalogScorer("auto")
    s1.build(small)
    s2.build(big)
    assert s1.index is None and s2.index is not None
    assert np.allclose(s1.scores(small, small.emb[0]), small.emb @ small.emb[0])
    with pytest.raises(ValueError, match="auto, fp32, int8, int4"):
        CatalogScorer("fp16")


@pytest.mark.parametrize("saturates", [True, False])
def test_auto_mode_takes_4_bits_where_the_8_bit_kernel_saturates_and_rows_are_wide(monkeypatch, saturates):
    """auto: 4 bits on x86 without VNNI (there the 8-bit scan is the slow part) for rows of 256+ dims, else 8;
    int4 / int8 choose. Decided from what the CPU reports, so both classes are checked on any machine."""
    import genre_edge.catalog_index as ci
    from genre_edge.catalog_index import index_bits, index_bytes_per_row

    monkeypatch.setattr(ci, "saturates_u8s8", lambda *a, **k: saturates)
    assert index_bits("auto", 384) == (4 if saturates else 8) and index_bits("auto", 48) == 8
    assert index_bits("int4", 8) == 4 and index_bits("int8", 384) == 8
    wide, narrow = FakeCatalog(unit_rows(20000, d=256)), FakeCatalog(unit_rows(20000, d=48))
    for cat, bits in ((wide, 4 if saturates else 8), (narrow, 8)):
        sc = CatalogScorer("auto")
        sc.build(cat)
        assert sc.index.bits == bits and sc.refine_top == (512 if bits == 4 else 256)
        if bits == 4:  # (an 8-bit index told this CPU does not saturate may: its parity is tested above)
            u = cat.emb[:30].mean(0)
            assert set(np.argsort(-sc.scores(cat, u))[:50]) == set(np.argsort(-(cat.emb @ u))[:50])
    assert index_bytes_per_row(8, 384) == 384 and index_bytes_per_row(4, 384) == 12 * (16 + 4)


@pytest.mark.parametrize("n,k,block", [(100000, 200, None), (5000, 200, None), (1000, 10, 16), (50, 200, None),
                                       (20000, 1, None)])
def test_top_n_equals_brute_force_under_a_mask(n, k, block):
    rng = np.random.default_rng(n + k)
    s = rng.standard_normal(n).astype(np.float32)
    s[rng.integers(0, n, n // 10)] = 0.5  # ties
    mask = rng.random(n) > 0.3
    got = top_n(s, mask, k, block)
    cand = np.flatnonzero(mask)
    kk = min(k, len(cand))
    assert len(got) == kk == len(set(got.tolist())) and mask[got].all()
    kth = np.sort(s[cand])[::-1][kk - 1]
    assert s[got].min() >= kth  # nothing better was left out (ties may pick either)
    assert np.isclose(np.sort(s[got]).sum(), np.sort(s[cand])[::-1][:kk].sum())


@pytest.mark.parametrize("layout", ["ascending", "descending", "one_group", "one_block"])
def test_top_n_is_exact_whatever_where_the_best_rows_sit(layout):
    """The group maxima bound holds for any arrangement: the best rows sorted to either end, all in one
    strided group (rows g, g + G, ...), or all in one contiguous stretch."""
    n, k = 50000, 200
    s = np.random.default_rng(7).standard_normal(n).astype(np.float32)
    if layout == "ascending":
        s = np.sort(s)
    elif layout == "descending":
        s = np.sort(s)[::-1].copy()
    else:
        block = n // (8 * k)
        groups = n // block  # as top_n splits the rows: group g = rows g, g + groups, ...
        best = ((np.arange(k) % block) * groups + np.arange(k) // block if layout == "one_group"
                else np.arange(1000, 1000 + k))  # whole strided groups, or one contiguous stretch
        s[best] = 10.0 + np.arange(k, dtype=np.float32)
    for mask in (None, np.random.default_rng(8).random(n) > 0.2):
        got = top_n(s, mask, k)
        cand = np.arange(n) if mask is None else np.flatnonzero(mask)
        assert set(got.tolist()) == set(cand[np.argsort(-s[cand], kind="stable")[:k]].tolist())


def test_top_n_with_nothing_allowed_or_infinite_scores():
    s = np.arange(10, dtype=np.float32)
    assert len(top_n(s, np.zeros(10, bool), 5)) == 0
    s2 = np.full(100000, -np.inf, np.float32)
    s2[[5, 99999]] = 1.0
    m = np.ones(100000, bool)
    assert set(top_n(s2, m, 2).tolist()) == {5, 99999}
    assert len(top_n(s2, m, 300)) == 300  # -inf scores still count as candidates


def test_recommender_int8_scoring_agrees_with_float32(tiny_bundle, tmp_path):
    from genre_edge.recommender import Recommender

    b = tiny_bundle / "bundle"
    rec = Recommender.load(b, "x86-avx512-vnni", state_dir=tmp_path)
    ids = rec.catalog.ids
    ref = [rec.recommend(ids[i: i + 6], k=5).items for i in range(0, 30, 6)]
    rec.catalog_scorer = CatalogScorer("int8")
    rec.rebuild_index()
    assert rec.catalog_scorer.index is not None
    for i, want in zip(range(0, 30, 6), ref):
        got = rec.recommend(ids[i: i + 6], k=5).items
        assert len({r.id for r in got} & {r.id for r in want}) >= 4
        assert abs(got[0].score - want[0].score) < 0.05
    # an item updated in place is scored from its new embedding at once
    rec.add_items([{"id": ids[0], "title": "Completely different", "categories": ["Comedy"], "year": 1999}])
    assert 0 in rec.catalog.changed_rows
    u = rec.catalog.emb[1]
    assert abs(rec.catalog_scorer.scores(rec.catalog, u)[0] - float(rec.catalog.emb[0] @ u)) < 1e-6


def test_int8_rows_gather_append_overwrite_and_product_match_float32(tmp_path):
    """Issue 20: the lean catalog matrix (int8 rows memory-mapped + scales, float32 rows beside them)
    answers every access the runtime makes as the de-quantized float32 matrix would."""
    from genre_edge.catalog_rows import Int8Rows

    q, s = quantize_rows(unit_rows(500))
    np.save(tmp_path / "q.npy", q)
    rows = Int8Rows(np.load(tmp_path / "q.npy", mmap_mode="r"), s)
    ref = q.astype(np.float32) * s[:, None]
    extra = unit_rows(40, seed=5)
    for e in extra:  # on-device additions: amortised appends, never a copy of the int8 rows
        rows.append(e)
        ref = np.vstack([ref, e[None]])
    rows[3] = extra[0]  # an in-place update of a bundle row ...
    ref[3] = extra[0]
    rows[510] = -extra[1]  # ... and of an added row
    ref[510] = -extra[1]
    assert rows.shape == ref.shape == (540, 48) and len(rows) == 540 and rows.overwritten == [3]
    for idx in (np.array([0, 3, 499, 500, 510, 539, 3]), slice(495, None), slice(None, 10), 3, 510, -1,
                np.array([[1, 3], [510, 2]])):
        assert np.array_equal(rows[idx], ref[idx]), idx
    u = unit_rows(1, seed=7)[0]
    assert np.allclose(rows @ u, ref @ u, atol=1e-6)
    # the candidate-set product (rows_dot): any order, repeats, added and overwritten rows, blocks of 8192
    from genre_edge.catalog_rows import rows_dot

    for idx in (np.array([0, 3, 499, 500, 510, 539, 3]), np.array([7, 2]), np.array([510, 3, 1]), np.zeros(0, int),
                np.arange(500)[::-1].repeat(20)):
        assert np.allclose(rows.dot(idx, u), ref[idx] @ u, atol=1e-6), idx
        assert np.allclose(rows_dot(ref, idx, u), ref[idx] @ u, atol=1e-6)
    with pytest.raises(IndexError):
        rows.dot(np.array([540]), u)
    with pytest.raises(IndexError):
        rows[np.array([540])]
    assert isinstance(rows.q, np.memmap) and rows.q.dtype == np.int8


def test_lean_catalog_serves_like_the_float32_one(tiny_bundle, tmp_path):
    """A profile that scores through the int8 index loads only the int8 rows (memory-mapped) and
    answers as the float32 catalog does; on-device adds and in-place updates are exact."""
    from genre_edge.catalog_rows import Int8Rows
    from genre_edge.profile import load_profile
    from genre_edge.recommender import Recommender

    import dataclasses

    src = load_profile("x86-avx512-vnni")
    lean_prof = dataclasses.replace(src, catalog_scoring="int8")
    fp = Recommender.load(tiny_bundle / "bundle", src, state_dir=tmp_path / "a")
    lean = Recommender.load(tiny_bundle / "bundle", lean_prof, state_dir=tmp_path / "b")
    assert isinstance(lean.catalog.emb, Int8Rows) and not isinstance(fp.catalog.emb, Int8Rows)
    assert lean.catalog_scorer.index is not None and lean.memory["catalog"] < fp.memory["catalog"] * 2
    # the CF tables stay memory-mapped as stored (not widened), with the same scores
    assert isinstance(lean.cf.idx, np.memmap) and lean.cf.w.dtype == np.float16 and fp.cf.w.dtype == np.float32
    h = np.arange(0, 40, 3)
    assert np.array_equal(lean.cf.scores(h, len(fp.catalog.ids)), fp.cf.scores(h, len(fp.catalog.ids)))
    assert np.array_equal(lean.cf.contribution_matrix(h, np.arange(20)), fp.cf.contribution_matrix(h, np.arange(20)))
    assert lean.memory["cf"] < fp.memory["cf"]
    ids = fp.catalog.ids
    for i in range(0, 30, 6):
        a = fp.recommend(ids[i: i + 6], k=5, explain=True, mmr_lambda=0.5)
        b = lean.recommend(ids[i: i + 6], k=5, explain=True, mmr_lambda=0.5)
        assert len({x.id for x in a.items} & {x.id for x in b.items}) >= 4
        assert abs(a.items[0].score - b.items[0].score) < 0.05
    new = {"id": "lean1", "title": "Completely different", "categories": ["Comedy"], "year": 1999}
    for r in (fp, lean):
        r.add_items([new, {"id": ids[0], "title": "Renamed in place", "categories": ["Drama"], "year": 1990}])
    for row in (lean.catalog.index["lean1"], 0):  # exact for what the device wrote
        assert np.allclose(lean.catalog.emb[row], fp.catalog.emb[row], atol=1e-6)
        u = fp.catalog.emb[1]
        assert abs(lean.catalog_scorer.scores(lean.catalog, u)[row] - float(fp.catalog.emb[row] @ u)) < 1e-5
    lean.rebuild_index()  # a rebuild keeps the updated row exact (the index holds the stored rows)
    assert 0 in lean.catalog.changed_rows


def test_int8_index_from_a_cached_model_file_scores_like_the_in_memory_one(tmp_path, monkeypatch):
    """The streamed model file is byte-identical to the in-memory model; a lean catalog's index is
    kept in the cache folder by key and reopened from there."""
    from genre_edge.catalog_index import write_int8_scoring_model
    from genre_edge.catalog_rows import Int8Rows

    q, s = quantize_rows(unit_rows(700))
    write_int8_scoring_model(tmp_path / "m.onnx", q, s, 128)
    assert (tmp_path / "m.onnx").read_bytes() == int8_scoring_model(q, s, 128)
    monkeypatch.setenv("GENRE_CACHE_DIR", str(tmp_path / "cache"))
    cat = FakeCatalog(Int8Rows(q, s, key="abc"))
    sc = CatalogScorer("int8", refine_top=0)  # the index's own scores
    sc.build(cat)
    files = list((tmp_path / "cache" / "int8-index").glob("abc-z*.onnx"))
    assert len(files) == 1
    u = unit_rows(1, seed=3)[0]
    ref = Int8Index(None, rows=(q, s)).scores(u)
    assert np.array_equal(sc.scores(cat, u), ref)
    ino = files[0].stat().st_ino  # reopened, not rewritten: the same file (a rewrite renames a new one in)
    sc.build(cat)  # reopened, not rewritten
    assert files[0].stat().st_ino == ino and np.array_equal(sc.scores(cat, u), ref)
    files[0].write_bytes(b"damaged")  # a broken cache file is rebuilt, with a warning
    sc.build(cat)
    assert np.array_equal(sc.scores(cat, u), ref)



def test_int4_index_from_a_cached_model_file_scores_like_the_in_memory_one(tmp_path, monkeypatch):
    """A lean catalog's 4-bit index is kept in the cache folder (int4-index/) by key, reopened from there,
    and written again when damaged."""
    from genre_edge.catalog_rows import Int8Rows

    monkeypatch.setenv("GENRE_CACHE_DIR", str(tmp_path / "cache"))
    q, s = quantize_rows(unit_rows(700, d=64))
    cat = FakeCatalog(Int8Rows(q, s, key="abc"))
    sc = CatalogScorer("int4", refine_top=0)
    sc.build(cat)
    files = list((tmp_path / "cache" / "int4-index").glob("abc-b32.onnx"))
    assert len(files) == 1 and sc.index.bits == 4
    u = unit_rows(1, d=64, seed=3)[0]
    ref = Int4Index(None, rows=(q, s)).scores(u)
    assert np.array_equal(sc.scores(cat, u), ref)
    ino = files[0].stat().st_ino
    sc.build(cat)  # reopened, not rewritten
    assert files[0].stat().st_ino == ino and np.array_equal(sc.scores(cat, u), ref)
    files[0].write_bytes(b"damaged")
    sc.build(cat)
    assert np.array_equal(sc.scores(cat, u), ref)


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_requests_through_an_index_answer_as_float32_does(tiny_bundle, tmp_path, mode):
    """Through an index, the re-ranking pool is chosen from POOL_MARGIN more rows and their content scores
    made exact (Recommender._exact_pool): a row that CF lifts into the pool is not left with the index's
    approximate score. Every answered item carries float32's score; with the 8-bit index (whose errors are
    ~1e-3) the lists are float32's, at 6,000 items of the tiny model's near-ties; the 4-bit index at its 32
    dims (one block a row, errors ~0.1: why auto keeps it for wide rows) still finds most of them."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from scale_curve import grow

    from genre_edge.recommender import Recommender

    rec = Recommender.load(tiny_bundle / "bundle", "x86-avx512-vnni", state_dir=tmp_path)
    grow(rec, 6000)
    ids = rec.catalog.ids
    rng = np.random.default_rng(0)
    hists = [list(rng.choice(ids[:48], 8, replace=False)) for _ in range(20)]
    rec.catalog_scorer = CatalogScorer("fp32")
    rec.rebuild_index()
    ref = [rec.recommend(h, k=10, mmr_lambda=0.7).items for h in hists]
    full = [rec.score_all(rec.catalog.rows(h)[0]) for h in hists]
    rec.catalog_scorer = CatalogScorer(mode)
    rec.rebuild_index()
    assert rec.catalog_scorer.index.bits == (8 if mode == "int8" else 4)
    if mode == "int8":  # 7-bit queries compute the same on every CPU class (see above): one case for all machines
        rec.catalog_scorer.index = Int8Index(rec.catalog.emb, reduce_range=True)
    got = [rec.recommend(h, k=10, mmr_lambda=0.7).items for h in hists]
    for items, s in zip(got, full):
        for it in items:
            assert abs(it.score - s[rec.catalog.index[it.id]]) < 1e-5  # the answered scores: float32's
    if mode == "int8":
        assert [[x.id for x in a] for a in got] == [[x.id for x in a] for a in ref]
    else:
        assert np.mean([len({x.id for x in a} & {x.id for x in b}) for a, b in zip(got, ref)]) >= 8
