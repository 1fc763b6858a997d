"""Approximate candidates (catalog_scoring = "ann", faiss): the candidate-set request path answers as
the exact path where the candidates cover the catalog, finds the exact top-k on clustered rows, keeps its
index in the cache folder, and says how to install faiss when it is missing."""
import dataclasses
import sys

import numpy as np
import pytest

from genre_edge.catalog import Filters
from genre_edge.scorer import CFScorer, RowScores

faiss = pytest.importorskip("faiss", reason="the ann extra (faiss-cpu) is not installed: pip install -e '.[ann]'")


def clustered_rows(n, d=32, centres=300, noise=0.03, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, d)).astype(np.float32)
    x = c[rng.integers(0, centres, n)] / np.sqrt(d) + rng.standard_normal((n, d)).astype(np.float32) * noise
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_ivf_candidates_hold_the_exact_top10_for_history_means(tmp_path, monkeypatch):
    from genre_edge.catalog_ann import AnnIndex, n_lists

    monkeypatch.setenv("GENRE_CACHE_DIR", str(tmp_path))
    rows = clustered_rows(30000)
    ix = AnnIndex(rows, nprobe=32, cache_key="k1")
    assert ix.n == 30000 and ix.n_lists == n_lists(30000)
    rng = np.random.default_rng(1)
    recall = []
    for _ in range(20):
        u = rows[rng.choice(len(rows), 50, replace=False)].mean(0)  # a user vector: between the clusters
        cand = ix.search(u, 1000)
        assert len(cand) == len(set(cand.tolist())) <= 1000 and cand.max() < len(rows)
        exact = set(np.argsort(-(rows @ u))[:10].tolist())
        top = cand[np.argsort(-(rows[cand] @ u))[:10]]  # the caller scores the candidates exactly
        recall.append(len(exact & set(top.tolist())) / 10)
    assert np.mean(recall) >= 0.95
    # kept in the cache folder, reopened (not rebuilt) by the next start, rebuilt when damaged
    (path,) = list((tmp_path / "ann-index").glob("k1-*.faiss"))
    ino = path.stat().st_ino  # reopened, not rewritten: the same file (a rewrite renames a new one in)
    again = AnnIndex(rows, nprobe=32, cache_key="k1")
    assert path.stat().st_ino == ino and np.array_equal(again.search(rows[0], 50), ix.search(rows[0], 50))
    path.write_bytes(b"damaged")
    assert len(AnnIndex(rows, nprobe=32, cache_key="k1").search(rows[0], 50)) == 50
    assert path.read_bytes() != b"damaged"


def test_missing_faiss_names_the_install_line(monkeypatch):
    from genre_edge import catalog_ann

    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ImportError, match=r"'\.\[ann\]'"):
        catalog_ann.AnnIndex(clustered_rows(100), nprobe=4)


def test_sparse_cf_and_row_scores_match_the_dense_vectors():
    rng = np.random.default_rng(0)
    n = 500
    idx = np.stack([rng.choice(n, 20, replace=False) for _ in range(n)]).astype(np.int32)
    w = rng.standard_normal((n, 20)).astype(np.float32)
    for cf in (CFScorer("ease", idx=idx, w=w, half_life=5.0, floor=0.2),
               CFScorer("mf", P=rng.standard_normal((n, 8)).astype(np.float32),
                        Q=rng.standard_normal((n, 8)).astype(np.float32))):
        for h in (30, 3):  # 600 neighbour entries: counted over the 500 items; 60: sorted (SPARSE_DENSE_RATIO)
            hist = rng.choice(n, h, replace=False)
            dense = cf.scores(hist, n + 3)  # 3 rows added on device: no CF
            rows = np.sort(rng.choice(n + 3, 100, replace=False))
            assert np.allclose(cf.scores_at(hist, rows), dense[rows], atol=1e-6)
            r, v = cf.sparse(hist)
            if cf.kind == "mf":
                assert len(r) == 0  # factors score every item: no sparse set
            else:  # every neighbour of the history, sorted, scored as the dense vector scores it
                assert np.array_equal(r, np.unique(idx[hist])) and np.allclose(v, dense[r], atol=1e-6)
    s = RowScores(np.array([2, 5, 9]), np.array([0.1, 0.2, 0.3], np.float32))
    assert s[5] == np.float32(0.2) and np.allclose(s[np.array([9, 2])], [0.3, 0.1])
    t = s.copy()
    t[np.array([5])] = 1.0
    assert t[5] == 1.0 and s[5] == np.float32(0.2)
    with pytest.raises(KeyError, match="candidate set"):
        s[np.array([3])]


def test_catalog_mask_over_a_candidate_set_equals_the_whole_mask(tiny_bundle, tmp_path):
    from genre_edge.recommender import Recommender

    cat = Recommender.load(tiny_bundle / "bundle", "x86-avx512-vnni", state_dir=tmp_path).catalog
    rows = np.arange(0, len(cat.ids), 3)
    some = sorted(cat.cat_names)[:2]
    for f in (Filters(), Filters(include_categories=tuple(some[:1])), Filters(exclude_categories=tuple(some)),
              Filters(year_min=1990, year_max=1995)):
        assert np.array_equal(cat.mask(f, rows), cat.mask(f)[rows])


def test_ann_profile_answers_as_the_exact_one_when_candidates_cover_the_catalog(tiny_bundle, tmp_path, monkeypatch):
    """Every step after the candidates (CF, filters, exclusion, MMR, the MLP head, explanations) runs
    on the candidate set exactly as on the whole catalog: with candidates covering the catalog the
    answers are the same; with few candidates they stay valid."""
    from genre_edge.profile import load_profile
    from genre_edge.recommender import Recommender

    monkeypatch.setenv("GENRE_CACHE_DIR", str(tmp_path / "cache"))
    src = load_profile("x86-avx512-vnni")
    exact = Recommender.load(tiny_bundle / "bundle", dataclasses.replace(src, catalog_scoring="fp32"),
                             state_dir=tmp_path / "a")
    n = len(exact.catalog.ids)
    ann = Recommender.load(tiny_bundle / "bundle", dataclasses.replace(src, catalog_scoring="ann", ann_candidates=n,
                                                                        ann_nprobe=1_000_000), state_dir=tmp_path / "b")
    assert ann.catalog_scorer.approximate and ann.catalog_scorer.ann.n == n
    ids = exact.catalog.ids
    cats = sorted(exact.catalog.cat_names)
    requests = [dict(k=5), dict(k=8, mmr_lambda=0.5, explain=True), dict(k=5, strategy="cf"),
                dict(k=5, strategy="content", exclude_categories=[cats[0]]), dict(k=5, query="something funny"),
                dict(k=6, popularity_penalty=0.3, exclude_seen=False),
                dict(k=10, query=f"nothing like {exact.catalog.titles[40]}")]  # it and its neighbours left out
    for i, opts in enumerate(requests):
        hist = ids[i * 5: i * 5 + 7]
        a, b = exact.recommend(hist, **opts), ann.recommend(hist, **opts)
        assert [x.id for x in a.items] == [x.id for x in b.items], opts
        assert np.allclose([x.score for x in a.items], [x.score for x in b.items], atol=1e-5)
        if opts.get("explain"):
            assert [x.reasons for x in a.items] == [x.reasons for x in b.items]
    assert [x.id for x in exact.recommend([], k=5).items] == [x.id for x in ann.recommend([], k=5).items]
    assert ann.recommend(ids[:2], query=f"nothing like {exact.catalog.titles[40]}").parsed["unlike"] == [ids[40]]
    # an item added on the device is a candidate at once, scored exactly
    new = {"id": "ann-new", "title": "Brand new", "categories": [cats[0]], "year": 2001}
    for r in (exact, ann):
        r.add_items([new])
    hist = ids[:4]
    assert [x.id for x in exact.recommend(hist, k=n).items] == [x.id for x in ann.recommend(hist, k=n).items]
    # a restart applies the device's additions, reopens the index over the bundle's rows from the cache
    # (not rebuilt for them), and serves the added item as before
    (cached,) = list((tmp_path / "cache" / "ann-index").glob("*.faiss"))
    ino = cached.stat().st_ino
    again = Recommender.load(tiny_bundle / "bundle", ann.profile, state_dir=tmp_path / "b")
    assert again.catalog.index.get("ann-new") is not None and again.catalog_scorer.ann.n == n
    assert cached.stat().st_ino == ino
    assert [x.id for x in again.recommend(hist, k=n).items] == [x.id for x in ann.recommend(hist, k=n).items]
    # few candidates: still k valid, unseen, filtered items
    few = Recommender.load(tiny_bundle / "bundle", dataclasses.replace(src, catalog_scoring="ann", ann_candidates=10,
                                                                        ann_nprobe=2), state_dir=tmp_path / "c")
    got = few.recommend(ids[:5], k=5, exclude_categories=[cats[0]])
    assert len(got.items) == 5 and not {x.id for x in got.items} & set(ids[:5])
    assert all(cats[0] not in x.categories for x in got.items)


def test_ann_filtered_requests_look_past_the_candidates(tiny_bundle, tmp_path, monkeypatch):
    """With few candidates a selective filter passes fewer than k of them (the answer came back short and
    missed the best passing items); the request then scores the passing rows themselves: every one when
    they are few (the answer is the exact path's), else a wider index search (the answer is full)."""
    import genre_edge.recommender as recmod
    from genre_edge.profile import load_profile
    from genre_edge.recommender import Recommender

    monkeypatch.setenv("GENRE_CACHE_DIR", str(tmp_path / "cache"))
    src = load_profile("x86-avx512-vnni")
    exact = Recommender.load(tiny_bundle / "bundle", dataclasses.replace(src, catalog_scoring="fp32"),
                             state_dir=tmp_path / "a")
    few = Recommender.load(tiny_bundle / "bundle", dataclasses.replace(src, catalog_scoring="ann", ann_candidates=5,
                                                                        ann_nprobe=1), state_dir=tmp_path / "b")
    # the 256 most popular rows are always candidates: this catalog's 48 would all be; keep 3
    few.catalog_scorer.popular = few.catalog_scorer.popular[:3]
    cat, ids = exact.catalog, exact.catalog.ids
    # the rarest category with at least 8 items, and a history outside it
    counts = {c: int(cat.mask(Filters(include_categories=(c,))).sum()) for c in cat.cat_names}
    rare = min((c for c in counts if counts[c] >= 8), key=counts.get)
    inside = set(np.flatnonzero(cat.mask(Filters(include_categories=(rare,)))).tolist())
    hist = [ids[i] for i in range(len(ids)) if i not in inside][:6]
    opts = dict(k=6, include_categories=[rare], strategy="content")  # no CF neighbours as candidates either

    def served(r, **more):
        return [x.id for x in r.recommend(hist, **opts, **more).items]

    want = served(exact)
    assert len(want) == 6
    # as before: the candidates filtered as they come
    monkeypatch.setattr(Recommender, "_filtered_candidates", lambda self, u, passing, k: iter(()))
    before = served(few)
    monkeypatch.undo()
    monkeypatch.setenv("GENRE_CACHE_DIR", str(tmp_path / "cache"))
    assert before != want  # the case this guards: a short or different answer
    assert served(few) == want
    assert served(few, mmr_lambda=0.5, explain=True) == served(exact, mmr_lambda=0.5, explain=True)
    # "nothing like X": X and its neighbours left out on the way past the candidates as on the exact path (X:
    # the item farthest from the category's, so that some of them are left)
    emb = np.asarray(cat.emb[np.arange(len(ids))], np.float32)
    far = int(np.argmin(emb @ emb[sorted(inside)].mean(0)))
    q = f"nothing like {cat.titles[far]}"
    assert few.recommend(hist, **opts, query=q).parsed["unlike"] == [ids[far]]
    assert 0 < len(served(exact, query=q)) and served(few, query=q) == served(exact, query=q)
    # more passing rows than are scored one by one: a wider index search, and still a full, valid answer
    monkeypatch.setattr(recmod, "FILTERED_EXACT_ROWS", 0)
    got = few.recommend(hist, **opts).items
    assert len(got) == 6 and all(rare in x.categories for x in got) and not {x.id for x in got} & set(hist)
    # nothing passes: an empty answer, as the exact path gives
    assert few.recommend(hist, k=5, include_categories=[rare], year_min=3000, strategy="content").items == []
