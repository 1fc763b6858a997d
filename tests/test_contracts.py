"""The contracts defined once: the bundle manifest (one module writes and reads it), the variant
registry, the request type (Python API, CLI and HTTP body), the catalog's query methods, and the
training run state stored in checkpoints."""
import json
import shutil

import numpy as np
import pytest

from conftest import have_export, needs_tiny_bundle
from genre_edge.bundle import Manifest, manifest_json, open_bundle, read_manifest
from genre_edge.catalog import Filters
from genre_edge.errors import BundleError, RequestError
from genre_edge.profile import DeviceProfile
from genre_edge.recommender import Recommender
from genre_edge.request import MAX_HISTORY, MAX_K, STRATEGIES, Request
from genre_edge.variants import BUILT, SAME_FILE, VARIANTS


@pytest.fixture()
def bundle_copy(tiny_bundle, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(tiny_bundle / "bundle", dst)
    return dst


def _rewrite(b, fn):
    m = json.loads((b / "manifest.json").read_text())
    fn(m)
    (b / "manifest.json").write_text(json.dumps(m))


# ------------------------------------------------------------------ manifest
@needs_tiny_bundle
def test_manifest_reads_back_to_exactly_what_the_exporter_wrote(bundle_copy):
    raw = json.loads((bundle_copy / "manifest.json").read_text())
    m = read_manifest(bundle_copy)
    assert isinstance(m, Manifest)
    assert json.dumps(manifest_json(m)) == json.dumps(raw)  # same keys, same order, same values
    assert m.catalog.cf.kind == "ease" and m.catalog.cf.idx.startswith("catalog/cf_idx.")
    assert m.scoring.presets["query"].query_weight == 0.7 and m.quality.gate.passed


@needs_tiny_bundle
@pytest.mark.parametrize("mutate, msg", [
    (lambda m: m["scoring"].update(colour="red"), r"scoring\.colour: unknown key; valid keys are"),
    (lambda m: m["catalog"]["cf"].update(kind="magic"), r"catalog\.cf\.kind: 'magic' is not valid; choose one of"),
    (lambda m: m["models"]["encoder"].update({"int4-npu": m["models"]["encoder"]["fp32"]}),
     "unknown variant 'int4-npu'"),
    (lambda m: m["catalog"]["cf"].pop("idx"), "needs the file field"),
    (lambda m: m["catalog"]["cf"].update(short=[{"max_history": 3, "idx": m["catalog"]["cf"]["idx"]}]),
     r"short\[0\]\.w: required key is missing"),
    (lambda m: m["catalog"]["cf"].update(short=[{"max_history": 0, "idx": m["catalog"]["cf"]["idx"],
                                                 "w": m["catalog"]["cf"]["w"]}]), r"max_history: 0 is below the minimum 1"),
    (lambda m: m["catalog"]["cf"].update(short=[{"max_history": t, "idx": m["catalog"]["cf"]["idx"],
                                                 "w": m["catalog"]["cf"]["w"]} for t in (3, 1)]),
     r"max_history must ascend without repeats, got \[3, 1\]"),
    (lambda m: m["scoring"]["presets"].pop("query"), "missing the strategy query"),
    (lambda m: m["scoring"]["defaults"].update(mmr_lambda=3.0), r"mmr_lambda: 3\.0 is above the maximum"),
])
def test_manifest_the_runtime_does_not_know_is_refused(bundle_copy, mutate, msg):
    _rewrite(bundle_copy, mutate)
    with pytest.raises(BundleError, match=msg):
        open_bundle(bundle_copy, verify=False)


# ------------------------------------------------------------------ variants
def test_one_variant_registry():
    assert set(DeviceProfile.__dataclass_fields__["variant"].metadata["choices"]) == set(VARIANTS)
    assert set(BUILT) == set(VARIANTS) - set(SAME_FILE) and all(v in VARIANTS for v in SAME_FILE.values())
    if have_export():
        from genre_edge_export.quantize import QUANT_PRESETS

        assert list(QUANT_PRESETS) == list(VARIANTS)
        assert all(p.dtype == VARIANTS[n].dtype for n, p in QUANT_PRESETS.items())


# ------------------------------------------------------------------ request
def test_request_validates_and_names_unknown_options():
    r = Request(["a", "b"], query="  ", include_categories="Comedy")
    assert r.history == ("a", "b") and r.query is None and r.include_categories == ("Comedy",)
    with pytest.raises(RequestError, match="unknown request option 'mmr'; valid options are: .*mmr_lambda"):
        Request.create(["a"], mmr=0.5)
    for bad in ({"k": True}, {"seed": -1}, {"year_min": -5}, {"exploration": float("nan")}, {"explain": "yes"},
                {"history": ["x"] * (MAX_HISTORY + 1)}, {"session_id": ""}):
        with pytest.raises(RequestError):
            Request(**bad)


def test_http_body_schema_is_derived_from_the_request():
    pytest.importorskip("pydantic")
    from genre_edge.server import request_body_model

    schema = request_body_model().model_json_schema()
    props = schema["properties"]
    assert set(props) == set(Request.__dataclass_fields__)
    assert props["k"]["maximum"] == MAX_K and props["k"]["minimum"] == 1
    assert props["history"]["maxItems"] == MAX_HISTORY
    strategy = json.dumps(props["strategy"])
    assert all(s in strategy for s in STRATEGIES)
    assert schema.get("additionalProperties") is False


@needs_tiny_bundle
def test_request_object_and_keywords_answer_alike(bundle_copy, tmp_path):
    rec = Recommender.load(bundle_copy, "x86-avx512-vnni", state_dir=tmp_path / "s")
    kw = dict(query="funny", k=4, mmr_lambda=0.7, exclude_categories=["Horror"], explain=True)
    a = rec.recommend(["m1", "m2"], **kw)
    b = rec.recommend(Request(("m1", "m2"), **kw))
    assert [x.id for x in a.items] == [x.id for x in b.items] and a.items[0].reasons == b.items[0].reasons
    with pytest.raises(RequestError, match="not both"):
        rec.recommend(Request(("m1",)), k=3)


# ------------------------------------------------------------------ catalog
@needs_tiny_bundle
def test_catalog_query_methods(bundle_copy, tmp_path):
    rec = Recommender.load(bundle_copy, "x86-avx512-vnni", state_dir=tmp_path / "s")
    cat = rec.catalog
    rec.remove_items(["m3"])
    rows, unknown = cat.rows(["m1", "nope", "m3", "m2", "nope"])
    assert [cat.ids[r] for r in rows] == ["m1", "m2"] and unknown == ["m3", "nope"]
    m = cat.mask(Filters(include_categories=("Comedy",), year_min=1985))
    expect = [i for i in range(len(cat.ids)) if cat.active[i] and "Comedy" in cat.categories[i] and cat.years[i] >= 1985]
    assert np.flatnonzero(m).tolist() == expect and len(expect) > 0
    assert not cat.mask(Filters(include_categories=("NoSuchCategory",))).any()
    assert len(cat.active_rows()) == len(cat)
    with cat.locked() as view:
        assert view is cat and cat.lock._is_owned()


# ------------------------------------------------------------------ run state
def test_run_state_keeps_the_checkpoint_layout_and_selects():
    torch = pytest.importorskip("torch")
    from genre_edge.errors import ConfigError
    from genre_edge_export.runloop import RunState
    from genre_edge_export.train_config import TrainConfig

    st = RunState("genre-teacher/1", start={"zero_shot": {"valid": {"ndcg@10": 0.1}}})
    d = st.to_json()
    assert list(d) == ["format", "epoch", "best_ndcg", "best_epoch", "bad_epochs", "history", "seconds", "config",
                       "zero_shot"]
    assert RunState.from_json(json.loads(json.dumps(d)), "p") == st
    # a progress file from before the config was recorded still loads (its resume is checked against nothing)
    old = {k: v for k, v in d.items() if k != "config"}
    assert RunState.from_json(old, "p") == st and RunState.from_json(old, "p").config == {}
    with pytest.raises(ConfigError, match="not a training progress file"):
        RunState.from_json([], "progress.json")
    w = {"w": torch.zeros(2)}
    tc = TrainConfig(epochs=5, patience=2)
    best = st.select(1, 0.3, w, None)
    assert st.best_epoch == 1 and best is not None
    w["w"] += 1
    assert st.select(2, 0.2, w, best) is best and st.bad_epochs == 1 and st.more_epochs(tc)
    st.select(3, 0.1, w, best)
    assert st.bad_epochs == 2 and not st.more_epochs(tc)  # patience used up
    assert torch.equal(best["w"], torch.zeros(2))
