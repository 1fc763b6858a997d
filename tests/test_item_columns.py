"""Packed item metadata (runtime/item_columns.py) behaves as the lists and dict it replaces."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from genre_edge import item_columns
from genre_edge.catalog import Catalog, Filters
from genre_edge.item_columns import IdIndex, StrColumn, TupleColumn, fold, push

TEXT = st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from(["\ud800", "é", "😀", "\x00"]), max_size=12)


@given(st.lists(TEXT, max_size=30), st.lists(st.tuples(st.integers(0, 40), TEXT), max_size=20), st.lists(TEXT, max_size=5))
@settings(max_examples=200, deadline=None)
def test_str_column_reads_as_the_list_it_packs(values, sets, appends):
    col, ref = StrColumn(values), list(values)
    for v in appends:
        col.append(v)
        ref.append(v)
    for i, v in sets:
        if ref and i < len(ref):
            col[i] = v
            ref[i] = v
    assert len(col) == len(ref) and list(col) == ref and col == ref
    assert col[1:-1:2] == ref[1:-1:2] and col[::-1] == ref[::-1]
    if ref:
        assert col[-1] == ref[-1] and col[np.int64(0)] == ref[0]
    with pytest.raises(IndexError):
        col[len(ref)]


@given(st.lists(st.text(alphabet="abAB ßSsİi\u0307é", max_size=8), max_size=25),
       st.lists(st.tuples(st.integers(0, 30), st.text(alphabet="abAB ßs", max_size=6)), max_size=6),
       st.lists(st.text(alphabet="abAB ßs", max_size=6), max_size=4), st.text(alphabet="abAB ßSsié", max_size=3))
@settings(max_examples=300, deadline=None)
def test_str_column_find_is_str_find_per_row(values, sets, appends, text):
    """The vectorised title search gives, per row, what fold(row).find() gives (case and accents set
    aside): rows matching at the start, rows matching later, none twice; rows set or appended since are
    searched as they are now."""
    col, ref = StrColumn(values), list(values)
    col.find("x")  # the casefolded buffer is built before the changes below: they must still be seen
    for i, v in sets:
        if i < len(ref):
            col[i], ref[i] = v, v
    for v in appends:
        col.append(v)
        ref.append(v)
    t = fold(text)
    starts, inner = col.find(t)
    want = [fold(r).find(t) for r in ref]
    assert starts.tolist() == [i for i, a in enumerate(want) if a == 0]
    assert inner.tolist() == [i for i, a in enumerate(want) if a > 0]
    with pytest.raises(ValueError, match="NUL"):
        col.find("a\x00")


def test_tuple_column_shares_combinations_and_reads_back():
    cats = [("Drama",), ("Comedy", "Drama"), ("Drama",), (), ("Comedy", "Drama")]
    col = TupleColumn(cats)
    assert list(col) == cats and len(col.combos) == 3 and col[np.int64(1)] == ("Comedy", "Drama")
    col[0] = ["Horror"]
    col.append(("Drama",))
    assert list(col) == [("Horror",), *cats[1:], ("Drama",)] and len(col.combos) == 4
    assert col[1:3] == cats[1:3]


@pytest.mark.parametrize("colliding", [False, True])
@given(st.lists(st.text(max_size=4), unique=True, max_size=25),
       st.lists(st.tuples(st.sampled_from(["set", "del", "get"]), st.text(max_size=4), st.integers(0, 60)), max_size=40))
@settings(max_examples=150, deadline=None)
def test_id_index_answers_as_a_dict_under_any_updates(colliding, ids, ops):
    """Lookups, sets, deletes, iteration and the vectorised lookup agree with a dict, also when every
    string's hash collides with many others (a hit is verified against the stored id)."""
    old = item_columns._hash
    if colliding:
        item_columns._hash = lambda s: len(s) % 3
    try:
        col = StrColumn(ids)
        idx, ref = IdIndex(col), {k: i for i, k in enumerate(ids)}
        for op, key, row in ops:
            if op == "set":
                # as the catalog does: a reused row's previous id is deleted first and the row's id set
                for k in [k for k, r in ref.items() if r == row]:
                    del idx[k], ref[k]
                if row < len(col):
                    col[row] = key
                idx[key] = row
                ref[key] = row
            elif op == "del" and key in ref:
                del idx[key], ref[key]
            elif op == "del":
                with pytest.raises(KeyError):
                    del idx[key]
            assert idx.get(key) == ref.get(key) and (key in idx) == (key in ref)
        probe = list(ref) + ["absent", "", *ids]
        assert idx.get_many(probe) == [ref.get(k) for k in probe]
        assert sorted(idx) == sorted(ref) and len(idx) == len(ref) and dict(idx.items()) == ref
        assert idx.get(3) is None and idx.get_many([3, None]) == [None, None]
    finally:
        item_columns._hash = old


def _catalog(n, combos):
    rng = np.random.default_rng(0)
    cats = [combos[i % len(combos)] for i in range(n)]
    return Catalog([f"i{i}" for i in range(n)], [f"Title {i}" for i in range(n)], cats,
                   rng.integers(1950, 2020, n), np.arange(n), rng.normal(size=(n, 4)).astype(np.float32),
                   rng.random(n).astype(np.float32))


def test_filters_per_category_combination_equal_per_item_flags():
    combos = [("Drama",), ("Comedy", "Drama"), (), ("Horror",), ("Comedy",)]
    cat = _catalog(200, combos)
    cat.active[::7] = False
    flags = {c: np.array([c in cats for cats in cat.categories]) for c in ("Drama", "Comedy", "Horror")}
    for f, want in [
        (Filters(include_categories=("Drama", "Horror")), flags["Drama"] | flags["Horror"]),
        (Filters(require_categories=("Comedy", "Drama")), flags["Comedy"] & flags["Drama"]),
        (Filters(exclude_categories=("Drama",)), ~flags["Drama"]),
        (Filters(include_categories=("Nope",)), np.zeros(200, bool)),
        (Filters(any_categories=("Comedy",), exclude_categories=("Drama",)), flags["Comedy"] & ~flags["Drama"]),
    ]:
        np.testing.assert_array_equal(cat.mask(f), want & cat.active)
        rows = np.arange(3, 200, 5)
        np.testing.assert_array_equal(cat.mask(f, rows), (want & cat.active)[rows])
    assert cat.facets()["categories"] == ["Comedy", "Drama", "Horror"]
    cat.active[[i for i in range(200) if "Horror" in cat.categories[i]]] = False
    assert cat.facets()["categories"] == ["Comedy", "Drama"]


def test_a_packed_catalog_answers_every_request_as_the_list_catalog(tiny_bundle, tmp_path, monkeypatch):
    """The same bundle loaded packed (as from PACK_FROM items) and as lists: the same recommendations,
    searches and facets, also after on-device adds, updates of bundle items, removals and row reuse,
    and after another process (a reload from the state folder) replays them."""
    import genre_edge.catalog as catalog
    from conftest import tiny_recommender

    monkeypatch.setattr(catalog, "PACK_FROM", 0)
    packed = tiny_recommender(tiny_bundle, tmp_path / "p")
    monkeypatch.setattr(catalog, "PACK_FROM", 10**9)
    plain = tiny_recommender(tiny_bundle, tmp_path / "l")
    assert packed.catalog.packed and not plain.catalog.packed
    ids = list(plain.catalog.ids)
    first = plain.catalog.titles[0]

    def same():
        for r in (plain, packed):
            r.catalog.refresh()
        cp, cl = packed.catalog, plain.catalog
        assert list(cp.ids) == list(cl.ids) and list(cp.titles) == list(cl.titles) and cp.facets() == cl.facets()
        assert list(cp.categories) == list(cl.categories) and dict(cp.index.items()) == cl.index
        for hist, opts in [(ids[:5], {}), (ids[3:9] + ["nope", "new-1"], {"explain": True}),
                           (ids[:3], {"include_categories": sorted(cl.cat_names)[:1]}),
                           (ids[:4], {"exclude_categories": sorted(cl.cat_names)[:2], "query": "a story"})]:
            a, b = packed.recommend(hist, k=8, **opts), plain.recommend(hist, k=8, **opts)
            assert [(i.id, i.title, i.categories) for i in a.items] == [(i.id, i.title, i.categories) for i in b.items]
            np.testing.assert_allclose([i.score for i in a.items], [i.score for i in b.items], atol=1e-4)
            assert a.unknown_ids == b.unknown_ids
        for q in ("", first[:3], ids[2], "new", "zzz", "the " + first[:5]):
            assert packed.search_items(q, limit=50) == plain.search_items(q, limit=50)

    same()
    for r in (plain, packed):
        r.add_items([{"id": "new-1", "title": "A New Film", "categories": ["Brand New Genre"], "year": 2024},
                     {"id": ids[1], "title": "Renamed", "categories": ["Other"], "year": 1999}])
        r.remove_items([ids[2], "new-1"])
        r.add_items([{"id": "new-2", "title": "Reuses a row", "categories": [], "year": 0}])  # the freed row
    assert packed.catalog.index["new-2"] == plain.catalog.index["new-2"]
    same()
    monkeypatch.setattr(catalog, "PACK_FROM", 0)
    from genre_edge.recommender import Recommender

    packed = Recommender.load(tmp_path / "p" / "b", "x86-avx512-vnni", state_dir=tmp_path / "p" / "state")
    assert packed.catalog.packed
    same()


def test_push_appends_like_np_append_without_touching_memory_it_does_not_own():
    owner = np.arange(100, dtype=np.int64)
    arr, room, ref = owner[:10], None, owner[:10].copy()
    for v in range(200):
        arr, room = push(arr, room, v)
        ref = np.append(ref, v)
        if v == 5:
            arr[3] = -1  # an in-place edit through the view stays
            ref[3] = -1
    np.testing.assert_array_equal(arr, ref)
    np.testing.assert_array_equal(owner, np.arange(100))  # the caller's array past the view is untouched
    m, room = push(np.zeros((2, 3), np.float32), None, np.ones(3, np.float32))
    m2, room2 = push(m, room, np.full(3, 2, np.float32))
    assert room2 is room and m2.shape == (4, 3) and m2[3].tolist() == [2, 2, 2] and m2.flags.c_contiguous
