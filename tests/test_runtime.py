"""Runtime against a tiny real bundle: verification, requests, parity, catalog updates."""
import json
import os
import shutil

import numpy as np
import pytest

from genre_edge.bundle import open_bundle
from genre_edge.errors import BundleError, RequestError
from genre_edge.recommender import Recommender


@pytest.fixture()
def bundle_copy(tiny_bundle, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(tiny_bundle / "bundle", dst)
    return dst


@pytest.fixture()
def rec(bundle_copy, tmp_path):
    return Recommender.load(bundle_copy, "x86-avx512-vnni", state_dir=tmp_path / "state")


def _rewrite_manifest(b, fn):
    m = json.loads((b / "manifest.json").read_text())
    fn(m)
    (b / "manifest.json").write_text(json.dumps(m))


def test_bundle_verifies_and_describes_itself(bundle_copy):
    b = open_bundle(bundle_copy)
    m = b.manifest
    assert set(b.variants()) >= {"fp32", "int8-avx512vnni"}
    assert m.models.encoder["int8-avx512vnni"].file == "models/encoder.int8-avx512vnni.onnx"
    assert set(m.models.encoder["int8-avx512vnni"].profiles) == {"x86-avx512-vnni", "rpi4"}
    q = m.quality
    assert {"teacher-torch-fp32", "model-onnx-fp32", "model-onnx-int8-avx512vnni"} <= set(q.rows)
    assert q.parity["encoder_fp32_vs_torch"]["max_abs_diff"] < 1e-4
    assert q.parity["user_fp32_vs_torch"]["max_abs_diff"] < 1e-5


def test_tampered_file_is_refused(bundle_copy, tmp_path):
    f = bundle_copy / "catalog" / "popularity.npy"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256 .* does not match"):
        Recommender.load(bundle_copy, "x86-avx512-vnni", state_dir=tmp_path / "s")


def test_truncated_model_is_refused(bundle_copy):
    f = bundle_copy / "models" / "encoder.int8-avx512vnni.onnx"
    f.write_bytes(f.read_bytes()[:1000])
    with pytest.raises(BundleError, match="truncated or replaced"):
        open_bundle(bundle_copy)


@pytest.mark.parametrize("mutate, msg", [
    (lambda m: m.update(format_version=99), "format_version 99 is not supported"),
    (lambda m: m.update(format="other"), "is not 'genre-bundle'"),
    (lambda m: m.pop("dim"), "missing field 'dim'"),
    (lambda m: m.update(dim="384"), "dim: expected int"),
    (lambda m: m["files"].update({"../../etc/passwd": {"sha256": "0" * 64, "bytes": 1}}), "unsafe file path"),
    (lambda m: m["files"].update({"/etc/passwd": {"sha256": "0" * 64, "bytes": 1}}), "unsafe file path"),
    (lambda m: m["models"]["encoder"]["fp32"].update(file="models/nope.onnx"), "not listed in files"),
])
def test_bad_manifests_are_refused(bundle_copy, mutate, msg):
    _rewrite_manifest(bundle_copy, mutate)
    with pytest.raises(BundleError, match=msg):
        open_bundle(bundle_copy)


@pytest.mark.parametrize("mutate, msg", [
    (lambda m: m["catalog"].pop("embedding_scales"), "names no embedding_scales"),
    (lambda m: m["catalog"].update(embedding_scales=m["catalog"]["popularity"]), None),  # same shape: accepted
    (lambda m: m["catalog"].update(embeddings=m["catalog"]["popularity"]), "1-d array, expected 2-d"),
    (lambda m: m["catalog"]["cf"].update(idx=m["catalog"]["cf"]["w"]), "expected int16 or int32"),
])
def test_bad_catalog_arrays_are_refused(bundle_copy, tmp_path, mutate, msg):
    _rewrite_manifest(bundle_copy, mutate)
    if msg is None:
        Recommender.load(bundle_copy, "x86-avx512-vnni", state_dir=tmp_path / "s")
        return
    with pytest.raises(BundleError, match=msg):
        Recommender.load(bundle_copy, "x86-avx512-vnni", state_dir=tmp_path / "s")


def test_symlink_out_of_bundle_is_refused(bundle_copy, tmp_path):
    outside = tmp_path / "outside.npy"
    shutil.copy(bundle_copy / "catalog" / "popularity.npy", outside)
    (bundle_copy / "catalog" / "popularity.npy").unlink()
    (bundle_copy / "catalog" / "popularity.npy").symlink_to(outside)
    with pytest.raises(BundleError, match="outside the bundle|symlink"):
        open_bundle(bundle_copy)


def test_missing_variant_falls_back_or_explains(bundle_copy, tmp_path, caplog):
    r = Recommender.load(bundle_copy, "x86-avx2", state_dir=tmp_path / "s")  # wants int8-avx2, not in bundle
    assert r.variant == "int8-avx512vnni"
    with pytest.raises(BundleError, match="no encoder variant"):
        Recommender.load(bundle_copy, "jetson-orin-nano", state_dir=tmp_path / "s", variant="fp16")


def test_recommend_basics(rec):
    hist = ["m0", "m6", "m12"]
    r = rec.recommend(hist + ["nope"], k=5, explain=True)
    assert len(r.items) == 5 and r.unknown_ids == ["nope"]
    ids = [x.id for x in r.items]
    assert not set(ids) & set(hist) and len(set(ids)) == 5
    assert all(x.reasons for x in r.items)
    assert all(0 < z["share"] <= 1 for x in r.items for z in x.reasons)
    scores = [x.score for x in r.items]
    assert scores == sorted(scores, reverse=True)


def test_recommend_options(rec):
    hist = ["m0", "m6"]
    r = rec.recommend(hist, k=5, include_categories=["Horror"])
    assert r.items and all("Horror" in x.categories for x in r.items)
    r = rec.recommend(hist, k=5, exclude_categories=["Action", "Comedy"])
    assert all(not {"Action", "Comedy"} & set(x.categories) for x in r.items)
    r = rec.recommend(hist, k=5, year_min=1990, year_max=1995)
    assert all(1990 <= x.year <= 1995 for x in r.items)
    assert r.unknown_categories == []


def test_category_filters_match_ignoring_case_and_name_the_unknown(rec):
    hist = ["m0", "m6"]
    exact = rec.recommend(hist, k=5, include_categories=["Horror"], exclude_categories=["Comedy"])
    # a user types lower case: the same list, not an empty one (include) or no exclusion (exclude)
    lower = rec.recommend(hist, k=5, include_categories=["horror"], exclude_categories=["COMEDY"])
    assert [x.id for x in lower.items] == [x.id for x in exact.items] and lower.items
    assert lower.unknown_categories == []
    # a name no item has: named in the response; an include of only unknown names still matches nothing
    r = rec.recommend(hist, k=5, include_categories=["Horrror"], exclude_categories=["Nope"])
    assert r.items == [] and r.unknown_categories == ["Horrror", "Nope"]
    assert r.to_dict()["unknown_categories"] == ["Horrror", "Nope"]
    # known and unknown together: the known one filters as usual
    r = rec.recommend(hist, k=5, include_categories=["Horrror", "horror"])
    assert [x.id for x in r.items] == [x.id for x in rec.recommend(hist, k=5, include_categories=["Horror"]).items]
    assert r.unknown_categories == ["Horrror"]
    r = rec.recommend(hist, k=5, exclude_categories=["Nope"])
    assert [x.id for x in r.items] == [x.id for x in rec.recommend(hist, k=5).items]
    rec.add_items([{"id": "fr", "title": "Un film", "categories": ["Comédie"]}])
    r = rec.recommend(hist, k=5, include_categories=["COMEDIE"])
    assert [x.id for x in r.items] == ["fr"] and r.unknown_categories == []
    r = rec.recommend(hist, k=5, exclude_seen=False)
    assert len(r.items) == 5
    a = rec.recommend(hist, k=5, exploration=1.0, seed=3)
    b = rec.recommend(hist, k=5, exploration=1.0, seed=3)
    assert [x.id for x in a.items] == [x.id for x in b.items]  # seeded
    div = rec.recommend(hist, k=8, mmr_lambda=0.0)
    plain = rec.recommend(hist, k=8)
    def ild(items):
        e = rec.catalog.emb[[rec.catalog.index[x.id] for x in items]]
        s = e @ e.T
        return (s.sum() - np.trace(s)) / (len(e) * (len(e) - 1))
    assert ild(div.items) <= ild(plain.items) + 1e-6
    q = rec.recommend(hist, query="scary ghost night", k=5, explain=True)
    assert q.strategy == "query" and any(z["source"] == "query" for x in q.items for z in x.reasons)
    only_q = rec.recommend([], query="space robot future", k=3)
    assert len(only_q.items) == 3
    # nothing to personalise on (no history, only unknown ids, any strategy): the most popular items, even where
    # the calibrated presets weigh popularity 0 (every preset would rank every item alike)
    order = np.argsort(-rec.catalog.popularity(None), kind="stable")
    for kwargs in ({}, {"strategy": "cf"}, {"strategy": "hybrid", "explain": True}):
        for history in ([], ["no-such-item"]):
            pop = rec.recommend(history, k=3, **kwargs)
            assert pop.strategy == "popular" and pop.unknown_ids == history
            assert [x.id for x in pop.items] == [rec.catalog.ids[i] for i in order[:3]]
            assert all(x.reasons == [{"source": "popularity", "share": 1.0}] for x in pop.items) == bool(kwargs.get("explain"))
    genre = rec.catalog.categories[order[-1]][0]  # the least popular item's: filters still apply, popular first
    in_genre = [rec.catalog.ids[i] for i in order if genre in rec.catalog.categories[i]]
    assert [x.id for x in rec.recommend([], k=3, include_categories=[genre]).items] == in_genre[:3]


@pytest.mark.parametrize("kwargs, msg", [
    ({"k": 0}, "k must be an integer"),
    ({"k": "5"}, "k must be an integer"),
    ({"strategy": "magic"}, "choose one of: content, cf, hybrid, query"),
    ({"strategy": "query"}, "needs a query text"),
    ({"mmr_lambda": 2.0}, "mmr_lambda must be in"),
    ({"query": "x" * 5000}, "at most 2000"),
    ({"history": [1, 2]}, "list of item id strings"),
    ({"include_categories": 5}, "include_categories must be a list"),
    ({"year_min": "1990"}, "year_min must be an integer"),
    ({"year_min": 1990, "year_max": 1980}, r"year_min \(1990\) is after year_max \(1980\): no item can match"),
    ({"since": 10, "until": 9}, r"since \(10\) is after until \(9\)"),
    ({"query_weight": 3}, "query_weight must be in"),
])
def test_bad_requests(rec, kwargs, msg):
    kwargs.setdefault("history", ["m1"])
    with pytest.raises(RequestError, match=msg):
        rec.recommend(**kwargs)


def test_int8_vs_fp32_parity(bundle_copy, tmp_path):
    r8 = Recommender.load(bundle_copy, "x86-avx512-vnni", state_dir=tmp_path / "s", variant="int8-avx512vnni")
    r32 = Recommender.load(bundle_copy, "x86-avx512-vnni", state_dir=tmp_path / "s", variant="fp32")
    texts = ["funny silly laugh", "space robot future story", "a love story"]
    e8, e32 = r8.embed(texts), r32.embed(texts)
    cos = (e8 * e32).sum(1)
    assert cos.min() > 0.95
    assert np.allclose(np.linalg.norm(e32, axis=1), 1, atol=1e-4)
    q = open_bundle(bundle_copy).manifest.quality.rows["model-onnx-int8-avx512vnni"]
    assert q["cos_min"] > 0.9


def test_onnx_encoder_matches_torch_student(tiny_bundle):
    torch = pytest.importorskip("torch")
    from genre_edge_export.model_folder import ModelDir
    from genre_edge_export.onnx_export import encoder_parity
    from genre_edge_export.text import tokenize

    M = ModelDir(tiny_bundle / "student")
    tower, _ = M.modules()
    ids, mask = tokenize(M.path / "encoder" / "tokenizer.json", M.items["text"][:8], 16)
    p = encoder_parity(tower, tiny_bundle / "bundle" / "models" / "encoder.fp32.onnx", ids, mask)
    assert p["max_abs_diff"] < 1e-4 and p["min_cosine"] > 0.9999
    del torch


def test_catalog_updates_persist_and_survive_reload(bundle_copy, tmp_path):
    state = tmp_path / "state"
    r = Recommender.load(bundle_copy, "x86-avx512-vnni", state_dir=state)
    n0 = len(r.catalog)
    r.add_items([{"id": "new1", "title": "Robot space odyssey", "categories": ["Sci-Fi", "Space Opera"], "year": 2024}])
    assert len(r.catalog) == n0 + 1
    assert r.remove_items(["m3", "ghost"]) == ["ghost"]
    r.add_items([{"id": "m5", "title": "Renamed", "categories": ["Drama"], "year": 1999}])  # update in place
    r2 = Recommender.load(bundle_copy, "x86-avx512-vnni", state_dir=state)
    assert len(r2.catalog) == n0
    assert r2.catalog.titles[r2.catalog.index["m5"]] == "Renamed"
    assert not r2.catalog.active[r2.catalog.index["m3"]]
    got = r2.recommend(["m0"], k=3, include_categories=["Space Opera"], explain=True)
    assert [x.id for x in got.items] == ["new1"]
    assert "m3" not in [x.id for x in r2.recommend(["m0"], k=40).items]
    assert r2.recommend(["m3"], k=3).unknown_ids == ["m3"]
    # a leftover temp file from a crash mid-write is ignored, the last acknowledged state kept
    (state / ".catalog-updates.json.abc.tmp").write_text("{garbage")
    r3 = Recommender.load(bundle_copy, "x86-avx512-vnni", state_dir=state)
    assert "new1" in r3.catalog.index and not list(state.glob("*.tmp"))
    # a corrupt updates file is refused clearly
    (state / "catalog-updates.json").write_text("{not json")
    with pytest.raises(BundleError, match="catalog updates file is corrupt"):
        Recommender.load(bundle_copy, "x86-avx512-vnni", state_dir=state)


@pytest.mark.parametrize("item, msg", [
    ({"id": "", "title": "x"}, "item id must be"),
    ({"id": "a\x00b", "title": "x"}, "control characters"),
    ({"id": "a", "title": ""}, "title must be"),
    ({"id": "a", "title": "x", "year": -1}, "year must be"),
    ({"id": "a", "title": "x", "year": 10001}, r"year must be an integer in 0\.\.10000 \(0 = unknown\), got 10001"),
    ({"id": "a", "title": "x", "year": 3_000_000_000}, "year must be"),  # past int32: once journaled, then failed loads
    ({"id": "a", "title": "x", "timestamp": 2**63}, "timestamp must be an integer in 0.."),
    ({"id": "a", "title": "x", "categories": [""]}, "categories must be"),
    # a string was taken as its characters (six categories C, o, m, e, d, y)
    ({"id": "a", "title": "x", "categories": "Comedy"}, r"categories must be a list of strings, .*not str 'Comedy'"),
    ({"id": "a", "title": "x", "categories": {"Comedy": 1}}, "categories must be a list of strings"),
])
def test_bad_items(rec, bundle_copy, tmp_path, item, msg):
    with pytest.raises(RequestError, match=msg):
        rec.add_items([item])
    # refused before anything was written: the state folder still loads, without the item
    again = Recommender.load(bundle_copy, "x86-avx512-vnni", state_dir=tmp_path / "state")
    assert "a" not in again.catalog.index


def test_search_finds_a_title_typed_with_its_article(rec):
    """'the godfather' found nothing: the catalog spells it 'Godfather, The'."""
    rec.add_items([{"id": "gf", "title": "Godfather, The"}, {"id": "gf2", "title": "Godfather: Part II, The"},
                   {"id": "tg", "title": "The Gardener"}])
    got = [it["id"] for it in rec.search_items("the godfather")["items"]]
    assert got[:2] in (["gf", "gf2"], ["gf2", "gf"]) and rec.search_items("the godfather")["total"] == 2
    got = [it["id"] for it in rec.search_items("The G")["items"]]
    assert got[0] == "tg" and {"gf", "gf2"} <= set(got) and len(got) == 3  # as typed, then the moved article
    assert len(got) == len(set(got))
    # accents do not matter either way
    rec.add_items([{"id": "ca", "title": "Café au Lait"}])
    assert [it["id"] for it in rec.search_items("cafe AU")["items"]] == ["ca"]
    assert [it["id"] for it in rec.search_items("CAFÉ au")["items"]] == ["ca"]


def test_session_feedback(rec):
    base = rec.recommend(["m0"], k=5, session_id="s1")
    first = base.items[0].id
    rec.feedback("s1", first, "skip")
    rec.feedback("s1", "m6", "click")
    after = rec.recommend(["m0"], k=5, session_id="s1")
    ids = [x.id for x in after.items]
    assert first not in ids and "m6" not in ids
    with pytest.raises(RequestError):
        rec.feedback("s1", "m1", "like")
    with pytest.raises(RequestError, match="item_id"):
        rec.feedback("s1", "x" * 201, "skip")
    # an id the catalog lacks is not recorded (it would push real clicks out of the bounded list)
    assert rec.feedback("s1", "nope", "click") is False and "nope" not in rec.sessions["s1"]["clicks"]
    assert rec.feedback("s1", "m6", "click") is True
    # a session's memory is bounded however many skips and clicks arrive
    from genre_edge.recommender import MAX_SESSION_EVENTS as N

    rec.add_items([{"id": f"many{i}", "title": f"Item {i}"} for i in range(N + 50)])
    for i in range(N + 50):
        rec.feedback("s2", f"many{i}", "skip")
        rec.feedback("s2", f"many{i}", "click")
    assert len(rec.sessions["s2"]["skips"]) == N and rec.sessions["s2"]["clicks"][-1] == f"many{N + 49}"
    assert len(rec.sessions["s2"]["clicks"]) == N


def test_atomic_writes_get_normal_permissions_and_leave_no_temp(tmp_path):
    import os
    import stat

    from genre_edge.fsutil import atomic_write_json

    f = tmp_path / "x.json"
    atomic_write_json(f, {"a": 1})
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask
    assert json.loads(f.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_add_remove_churn_reuses_rows(rec, tmp_path):
    """Months of on-device add/remove churn must not grow the catalog's memory."""
    n0 = len(rec.catalog.ids)
    for i in range(300):
        rec.add_items([{"id": f"churn{i}", "title": f"Churn film {i}", "categories": ["Drama"], "year": 2000 + i % 20}])
        rec.remove_items([f"churn{i}"])
    cat = rec.catalog
    assert len(cat.ids) == n0 + 1 and cat.emb.shape[0] == n0 + 1 and len(cat.years) == n0 + 1
    assert "churn298" not in cat.index and "churn299" in cat.index and not cat.active[cat.index["churn299"]]
    rec.add_items([{"id": "keep", "title": "A film that stays", "categories": ["Comedy"], "year": 1999}])
    i = cat.index["keep"]
    assert cat.active[i] and cat.titles[i] == "A film that stays" and cat.years[i] == 1999
    assert cat.categories[i] == ("Comedy",) and cat.first_seen[i] == 0
    r = rec.recommend([], query="A film that stays", k=len(cat), include_categories=["Comedy"])
    assert "keep" in [x.id for x in r.items] and not any(x.id.startswith("churn") for x in r.items)


def test_item_text_template_drops_empty_fields_cleanly_and_keeps_real_punctuation():
    from genre_edge.text_template import render

    t = "{title} ({year}). Genres: {genres}."
    assert render(t, {"title": "Toy Story", "year": "1995", "genres": "Comedy"}) == "Toy Story (1995). Genres: Comedy."
    assert render(t, {"title": "Toy Story"}) == "Toy Story."
    assert render(t, {"title": "A", "genres": "X, Y"}) == "A. Genres: X, Y."
    assert render(t, {"title": "And Now... Ladies", "year": "1990"}) == "And Now... Ladies (1990)."
    assert render("{title}. {description}.", {"title": "T"}) == "T."


def test_explanations_are_vectorized_exactly_and_bounded(rec):
    """The vectorized explanations equal the per-item sums they replace, and only the last
    EXPLAIN_HISTORY history items can be a reason (cost bounded whatever the history's length)."""
    from genre_edge.recommender import EXPLAIN_HISTORY

    cat = rec.catalog
    rng = np.random.default_rng(0)
    history = [cat.ids[i] for i in rng.choice(len(cat.ids), size=30)]  # repeats included
    r = rec.recommend(history, query="funny", k=8, explain=True)
    hist, _ = cat.rows(history)
    preset, qw = rec.presets[r.strategy], rec.presets[r.strategy].query_weight
    q = rec.embed(["funny"])[0]
    hw, u, att = rec._user_vector(hist, q, qw)
    for it in r.items:  # the reference: per item, per history position, summed by item
        j = cat.index[it.id]
        parts = {}
        for i, c in zip(hw, preset.content * (1 - qw) * att * (cat.emb[hw] @ cat.emb[j])):
            parts[cat.ids[i]] = parts.get(cat.ids[i], 0.0) + c
        for i, c in zip(hist, preset.cf * rec.cf.contributions(hist, j)):
            parts[cat.ids[i]] = parts.get(cat.ids[i], 0.0) + c
        parts["query"] = preset.content * qw * float(q @ cat.emb[j])
        pos = {k: v for k, v in parts.items() if v > 0}
        want = sorted(pos, key=lambda k: -pos[k])[:3]
        got = [x.get("id", x["source"]) for x in it.reasons]
        assert got == want and sum(x["share"] for x in it.reasons) <= 1.0 + 1e-6
    long = [cat.ids[0]] * 5 + [cat.ids[1]] * (EXPLAIN_HISTORY + 50)
    r = rec.recommend(long, k=5, explain=True, strategy="cf")
    assert all(x.get("id") != cat.ids[0] for it in r.items for x in it.reasons)  # beyond the window


def test_memory_budget_is_checked_before_loading(bundle_copy, tmp_path):
    """The profile's memory_budget_mib means something: an estimate from the manifest alone is checked
    before any model is loaded, and info() reports it."""
    from genre_edge import config as cfgmod
    from genre_edge.profile import load_profile

    small = dict(cfgmod.to_dict(load_profile("x86-avx512-vnni")), name="tiny-box", memory_budget_mib=16)
    path = tmp_path / "tiny-box.toml"
    path.write_text(cfgmod.dumps_toml(small))
    with pytest.raises(BundleError, match=r"needs about \d+ MiB on profile tiny-box, whose memory_budget_mib is 16"):
        Recommender.load(bundle_copy, str(path), state_dir=tmp_path / "s")
    r = Recommender.load(bundle_copy, "x86-avx512-vnni", state_dir=tmp_path / "s")
    info = r.info()
    assert 16 < info["memory_estimate_mib"] <= info["memory_budget_mib"]
    assert r.memory["models"] > 0 and r.memory["catalog"] > 0


def test_a_bundle_with_only_the_7bit_variant_serves_every_cpu_profile(tiny_bundle, tmp_path):
    """Issue 17: the 7-bit int8-avx2 file cannot saturate on any CPU class, so VNNI and Pi profiles
    take it when a bundle ships nothing else (before, x86-avx512-vnni refused such a bundle). The bundle is
    exported by the tiny_bundle fixture (``genre export --profile x86-avx2``), so this runs where only the runtime
    is installed too: on emulated Raspberry Pi cores it checks the 7-bit file on NEON."""
    shutil.copytree(tiny_bundle / "bundle-avx2", tmp_path / "b")
    assert open_bundle(tmp_path / "b").variants("encoder") == ["int8-avx2"]
    tops = []
    for prof in ("x86-avx2", "x86-avx512-vnni", "rpi4", "rpi5"):
        r = Recommender.load(tmp_path / "b", prof, state_dir=tmp_path / f"s-{prof}")
        assert r.variant == "int8-avx2"
        tops.append([x.id for x in r.recommend(["m0", "m6"], query="a funny film", k=5).items])
    assert all(t == tops[0] for t in tops)


def test_a_changed_updates_file_is_seen_even_with_the_same_inode_size_and_mtime(bundle_copy, tmp_path):
    """Issue 18 soak: inode, size and mtime can all repeat between two states (inodes are reused, equal
    sizes are common, mtime moves in ticks); a reader that missed the change lost writes. The file's
    generation counter tells them apart."""
    state = tmp_path / "state"
    r1 = Recommender.load(bundle_copy, "x86-avx512-vnni", state_dir=state)
    r1.add_items([{"id": "aa1", "title": "Same size", "categories": ["Drama"], "year": 2001}])
    r2 = Recommender.load(bundle_copy, "x86-avx512-vnni", state_dir=state)
    assert "aa1" in r2.catalog.index
    path = state / "catalog-updates.json"
    text, st = path.read_text(), path.stat()
    assert json.loads(text)["generation"] == 1
    other = text.replace('"aa1"', '"aa2"').replace('"generation": 1', '"generation": 2')
    assert len(other) == len(text)
    with open(path, "r+") as fh:  # same inode, same size ...
        fh.write(other)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... same mtime
    assert r2.catalog.refresh()
    assert "aa2" in r2.catalog.index and r2.catalog.active[r2.catalog.index["aa2"]]
    assert "aa1" not in r2.catalog.index or not r2.catalog.active[r2.catalog.index["aa1"]]
    r2.add_items([{"id": "bb1", "title": "Next", "categories": ["Drama"], "year": 2002}])  # writes on top
    assert json.loads(path.read_text())["generation"] == 3
    assert {a["id"] for a in json.loads(path.read_text())["added"]} == {"aa2", "bb1"}


def test_a_starting_process_never_deletes_a_running_writers_temp_file(bundle_copy, tmp_path):
    """Soak finding: `genre items add` starting next to `genre serve` removed 'leftover' temp files
    without the lock, i.e. the server's write in progress (its rename then failed: HTTP 500). The
    cleanup now happens under the exclusive lock, which a writer holds while its temp file exists."""
    import threading
    import time

    from genre_edge.catalog import _FileLock

    state = tmp_path / "state"
    Recommender.load(bundle_copy, "x86-avx512-vnni", state_dir=state).add_items(
        [{"id": "w0", "title": "First", "categories": ["Drama"], "year": 2001}])
    path = state / "catalog-updates.json"
    tmp = state / ".catalog-updates.json.inflight.tmp"
    holding, outcome = threading.Event(), {}

    def writer():  # what atomic_write_json does inside Catalog.add, slowed down
        with _FileLock(path):
            tmp.write_text(path.read_text())
            holding.set()
            time.sleep(0.5)
            try:
                os.replace(tmp, path)
                outcome["ok"] = True
            except FileNotFoundError as exc:
                outcome["error"] = exc

    t = threading.Thread(target=writer)
    t.start()
    holding.wait(5)
    r = Recommender.load(bundle_copy, "x86-avx512-vnni", state_dir=state)  # waits for the writer's lock
    t.join()
    assert outcome == {"ok": True}
    assert "w0" in r.catalog.index


def test_catalog_updates_append_to_a_journal_compacted_into_snapshots(bundle_copy, tmp_path, monkeypatch, caplog):
    """Issue 18: a change appends one fsync'd line to catalog-updates.journal (not a rewrite of every
    item); every JOURNAL_COMPACT_OPS changes fold into a new snapshot; another process replays both;
    a line cut short by a crash is ignored and the next write starts a fresh snapshot."""
    import logging

    import genre_edge.catalog as catalog

    monkeypatch.setattr(catalog, "JOURNAL_COMPACT_OPS", 4)
    state = tmp_path / "state"
    snap, journal = state / "catalog-updates.json", state / "catalog-updates.journal"
    r1 = Recommender.load(bundle_copy, "x86-avx512-vnni", state_dir=state)
    r1.add_items([{"id": "j0", "title": "First", "categories": ["Drama"], "year": 2001}])
    gen1 = json.loads(snap.read_text())["generation"]
    for i in range(1, 4):
        r1.add_items([{"id": f"j{i}", "title": f"Film {i}", "categories": ["Drama"], "year": 2001}])
    r1.remove_items(["j1", "m2"])
    assert json.loads(snap.read_text())["generation"] == gen1  # the snapshot was not rewritten ...
    lines = journal.read_text().splitlines()
    assert len(lines) == 1 + 4 and json.loads(lines[-1]) == {"op": "remove", "drop": ["j1"], "removed": ["m2"]}
    r2 = Recommender.load(bundle_copy, "x86-avx512-vnni", state_dir=state)  # ... and another process replays it
    for r in (r1, r2):
        cat = r.catalog
        assert all(cat.active[cat.index[i]] for i in ("j0", "j2", "j3"))
        assert not cat.active[cat.index["m2"]] and ("j1" not in cat.index or not cat.active[cat.index["j1"]])
    r2.add_items([{"id": "j4", "title": "Film 4", "categories": ["Drama"], "year": 2001}])  # 5th op: compaction
    assert json.loads(snap.read_text())["generation"] == gen1 + 1 and len(journal.read_text().splitlines()) == 1
    assert r1.catalog.refresh() and "j4" in r1.catalog.index
    # a crash mid-append leaves a partial line: ignored on reading, and the next write starts over
    with open(journal, "a") as fh:
        fh.write('{"op": "add", "items": [{"id": "half')
    caplog.set_level(logging.WARNING)
    r3 = Recommender.load(bundle_copy, "x86-avx512-vnni", state_dir=state)
    assert "partial line" in caplog.text and "j4" in r3.catalog.index
    r3.add_items([{"id": "j5", "title": "Film 5", "categories": ["Drama"], "year": 2001}])
    assert json.loads(snap.read_text())["generation"] == gen1 + 2 and journal.read_text().endswith("\n")
    r4 = Recommender.load(bundle_copy, "x86-avx512-vnni", state_dir=state)
    assert {"j0", "j2", "j3", "j4", "j5"} <= {i for i in r4.catalog.index if r4.catalog.active[r4.catalog.index[i]]}


def test_an_added_items_repeated_category_is_kept_once(rec):
    """["Rock", "Rock"] (a CSV cell "Rock|Rock", tags repeated by their users) was kept and shown twice."""
    rec.add_items([{"id": "dup", "title": "Twice Rocked", "categories": ["Rock", "Pop", "Rock"]}])
    got = rec.search_items("dup")["items"][0]
    assert got["categories"] == ["Rock", "Pop"]


def test_info_offers_example_instructions_in_the_catalogs_own_terms(rec):
    """The playground's instruction placeholder said "like Star Wars, but funnier" for any catalog; /info now
    offers instructions from the active items' most common categories and decade, which the parser reads."""
    from collections import Counter

    import numpy as np
    from genre_edge.query_parser import FILM_EXAMPLES, example_instructions

    cat = rec.catalog
    rows = np.flatnonzero(cat.active)
    counts = Counter(c for i in rows for c in cat.categories[int(i)])
    want = example_instructions(counts, cat.years[rows])
    assert rec.info()["example_instructions"] == list(want) and want
    if {"Comedy", "Romance", "Drama"} <= set(counts):
        assert want == FILM_EXAMPLES
    # on-device items count: a catalog turned into music by them offers music
    rec.add_items([{"id": f"s{k}", "title": f"Song {k}", "categories": ["Jazz", "Blues"] if k % 3 else ["Blues", "Funk"],
                    "year": 1962} for k in range(3 * len(rows))])
    rec.remove_items([cat.ids[int(i)] for i in rows])
    assert rec.info()["example_instructions"] == ["something blues from the 60s", "jazz, no funk"]
    # the same as the data set's side offers for the same items, ties included (they were broken by two orders)
    rec.add_items([{"id": "z1", "title": "Zed", "categories": ["Funk", "Zydeco"], "year": 1962}])
    assert rec.info()["example_instructions"][1] == "jazz, no funk"
    # Funk now ties Jazz (2 per 3 of the songs each): the name decides
    rec.add_items([{"id": f"y{k}", "title": "Why", "categories": ["Funk"], "year": 1962} for k in range(len(rows) - 1)])
    assert rec.info()["example_instructions"] == ["something blues from the 60s", "funk, no jazz"]
