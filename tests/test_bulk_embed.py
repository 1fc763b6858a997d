"""Bulk catalog embedding: the local engine and Ray Data give the bundle encoder's vectors, as sharded
Parquet with a checked manifest; `genre export --catalog-embeddings` takes them."""
import json

import numpy as np
import pytest

from conftest import have_export

pytestmark = pytest.mark.skipif(not have_export(), reason="export extra not installed")
pa = pytest.importorskip("pyarrow")


def _items(tiny_bundle, path, n=None):
    it = json.loads((tiny_bundle / "student" / "items.json").read_text())
    rows = list(zip(it["ids"], it["title"], it["categories"], it["year"]))[:n]
    with open(path, "w") as f:
        for i, t, c, y in rows:
            f.write(json.dumps({"id": str(i), "title": t, "categories": c, "year": int(y)}) + "\n")
    return [r[0] for r in rows]


def _reference(tiny_bundle, items_path, variant):
    """What the runtime's encoder gives for the same texts, one text at a time (no batch neighbours)."""
    from genre_edge.catalog import ItemInput, item_text
    from genre_edge.recommender import load_encoder

    enc, _, b = load_encoder(tiny_bundle / "bundle", "x86-avx512-vnni", variant)
    items = [ItemInput(**json.loads(line)) for line in open(items_path)]
    return np.concatenate([enc.embed([item_text(b.manifest.scoring.template, it)]) for it in items])


def test_local_engine_writes_checked_shards_of_the_encoders_vectors(tiny_bundle, tmp_path):
    from genre_edge.errors import ConfigError
    from genre_edge_export.bulk_embed import embed_catalog, read_embeddings

    ids = _items(tiny_bundle, tmp_path / "items.jsonl")
    m = embed_catalog(tiny_bundle / "bundle", tmp_path / "items.jsonl", tmp_path / "out", profile="x86-avx512-vnni",
                      variant="fp32", batch_size=7, shard_rows=20)
    assert m["rows"] == len(ids) and len(m["shards"]) == -(-len(ids) // 21) and m["variant"] == "fp32"
    man, got_ids, emb = read_embeddings(tmp_path / "out")
    assert got_ids == ids and emb.shape == (len(ids), m["dim"])
    np.testing.assert_allclose(emb, _reference(tiny_bundle, tmp_path / "items.jsonl", "fp32"), atol=1e-5)
    with pytest.raises(ConfigError, match="already holds embeddings"):
        embed_catalog(tiny_bundle / "bundle", tmp_path / "items.jsonl", tmp_path / "out", profile="x86-avx512-vnni")
    # what the local engine would ignore is refused: Ray's options, and cuda on an onnxruntime without it
    with pytest.raises(ConfigError, match="workers and address are the Ray engine's"):
        embed_catalog(tiny_bundle / "bundle", tmp_path / "items.jsonl", tmp_path / "o2", workers=2)
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(ConfigError, match="device cuda: this process's onnxruntime runs the encoder on CPU"):
            embed_catalog(tiny_bundle / "bundle", tmp_path / "items.jsonl", tmp_path / "o3", device="cuda")
        assert not (tmp_path / "o3").exists()
    # a shard changed after writing is refused
    shard = tmp_path / "out" / m["shards"][0]["file"]
    shard.write_bytes(shard.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ConfigError, match="changed since it was written"):
        read_embeddings(tmp_path / "out")


def test_a_csv_item_file_embeds_as_its_json_lines_do(tiny_bundle, tmp_path):
    """The local engine reads items from CSV (genre items add --file does too); the Ray engine, JSON lines only,
    says so before starting anything."""
    import csv

    from genre_edge.errors import ConfigError
    from genre_edge_export.bulk_embed import embed_catalog, read_embeddings

    ids = _items(tiny_bundle, tmp_path / "items.jsonl", n=12)
    with open(tmp_path / "items.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "title", "categories", "year"])
        for line in open(tmp_path / "items.jsonl"):
            o = json.loads(line)
            w.writerow([o["id"], o["title"], "|".join(o["categories"]), o["year"]])
    embed_catalog(tiny_bundle / "bundle", tmp_path / "items.csv", tmp_path / "out", profile="x86-avx512-vnni",
                  variant="fp32", batch_size=5)
    _, got_ids, emb = read_embeddings(tmp_path / "out")
    assert got_ids == ids
    np.testing.assert_allclose(emb, _reference(tiny_bundle, tmp_path / "items.jsonl", "fp32"), atol=1e-5)
    with pytest.raises(ConfigError, match=r"items\.csv: the ray engine reads JSON lines"):
        embed_catalog(tiny_bundle / "bundle", tmp_path / "items.csv", tmp_path / "o2", engine="ray")
    assert not (tmp_path / "o2").exists()


@pytest.mark.parametrize("line, msg", [
    ("{not json", "not valid JSON"), ('{"id": "a", "title": "T", "colour": 1}', "expected an object"),
    ('{"id": "a", "title": ""}', "title"), ('{"id": "a", "title": "T", "year": -1}', "year"),
])
def test_bad_item_lines_are_named(tiny_bundle, tmp_path, line, msg):
    from genre_edge.errors import ConfigError
    from genre_edge_export.bulk_embed import embed_catalog

    (tmp_path / "items.jsonl").write_text('{"id": "ok", "title": "Fine"}\n' + line + "\n")
    with pytest.raises(ConfigError, match=f"items.jsonl:2: .*{msg}"):
        embed_catalog(tiny_bundle / "bundle", tmp_path / "items.jsonl", tmp_path / "out", profile="x86-avx512-vnni")
    assert not (tmp_path / "out" / "embeddings.json").exists()
    # a file without items (empty, or blank lines) is named, and no folder of 0 shards is left behind
    (tmp_path / "items.jsonl").write_text("\n  \n")
    with pytest.raises(ConfigError, match="items.jsonl holds no items"):
        embed_catalog(tiny_bundle / "bundle", tmp_path / "items.jsonl", tmp_path / "out", profile="x86-avx512-vnni")
    assert not (tmp_path / "out").exists()


def test_a_failed_or_interrupted_run_leaves_nothing_a_retry_trips_on(tiny_bundle, tmp_path):
    """A bad line stops the run with its partial shards removed (it once left shards.tmp, and the retry into
    the same folder died with FileExistsError); shards.tmp left by a killed run is cleared with a warning."""
    from genre_edge.errors import ConfigError
    from genre_edge_export.bulk_embed import embed_catalog

    (tmp_path / "out").mkdir()
    items = tmp_path / "items.jsonl"
    items.write_text("".join(f'{{"id": "i{k}", "title": "Item {k}"}}\n' for k in range(5)) + "{broken\n")
    with pytest.raises(ConfigError, match="items.jsonl:6: not valid JSON"):
        embed_catalog(tiny_bundle / "bundle", items, tmp_path / "out", profile="x86-avx512-vnni", batch_size=2,
                      shard_rows=2)
    assert list((tmp_path / "out").iterdir()) == []  # the folder the user made stays, empty
    (tmp_path / "out" / "shards.tmp").mkdir()
    (tmp_path / "out" / "shards.tmp" / "part-00000.parquet").write_bytes(b"half")
    items.write_text("".join(f'{{"id": "i{k}", "title": "Item {k}"}}\n' for k in range(5)))
    m = embed_catalog(tiny_bundle / "bundle", items, tmp_path / "out", profile="x86-avx512-vnni", batch_size=2,
                      shard_rows=2)
    assert m["rows"] == 5 and not (tmp_path / "out" / "shards.tmp").exists()


def test_ray_engine_on_a_local_instance_matches_the_local_engine(tiny_bundle, tmp_path):
    pytest.importorskip("ray")
    from genre_edge_export.bulk_embed import embed_catalog, read_embeddings

    ids = _items(tiny_bundle, tmp_path / "items.jsonl")
    m = embed_catalog(tiny_bundle / "bundle", tmp_path / "items.jsonl", tmp_path / "ray", engine="ray", workers=2,
                      profile="x86-avx512-vnni", variant="fp32", batch_size=8, shard_rows=16)
    _, got_ids, emb = read_embeddings(tmp_path / "ray")
    assert sorted(got_ids) == sorted(ids) and m["engine"] == "ray" and len(m["shards"]) >= 2
    ref = _reference(tiny_bundle, tmp_path / "items.jsonl", "fp32")
    order = [got_ids.index(i) for i in ids]
    np.testing.assert_allclose(emb[order], ref, atol=1e-5)


def test_export_takes_bulk_embeddings_made_with_its_own_encoder_file(tiny_bundle, tmp_path):
    from genre_edge.recommender import Recommender
    from genre_edge_export.bulk_embed import embed_catalog, read_embeddings
    from genre_edge_export.bundle_writer import export_bundle

    _items(tiny_bundle, tmp_path / "items.jsonl")
    opts = dict(min_kept=0.0, min_request_kept=0.0, min_cold_kept=0.0, progress=lambda m: None)
    m = embed_catalog(tiny_bundle / "bundle", tmp_path / "items.jsonl", tmp_path / "emb", profile="x86-avx512-vnni")
    assert m["variant"] == "int8-avx512vnni"
    # the same model exported again gives the same encoder file, so the embeddings fit it
    export_bundle(tiny_bundle / "student", tmp_path / "b", ["x86-avx512-vnni"], tiny_bundle / "teacher",
                  catalog_embeddings=tmp_path / "emb", **opts)
    r = Recommender.load(tmp_path / "b", "x86-avx512-vnni", state_dir=tmp_path / "s")
    _, given_ids, given = read_embeddings(tmp_path / "emb")
    stored = np.asarray(r.catalog.emb[[r.catalog.index[i] for i in given_ids]])
    cos = (stored * given).sum(1) / np.linalg.norm(stored, axis=1) / np.linalg.norm(given, axis=1)
    assert cos.min() > 0.99  # the export's own sample check; stored as int8 rows (dim 32 here: coarser than 384)
    # embeddings of some items only are refused, naming how many are missing
    _items(tiny_bundle, tmp_path / "few.jsonl", n=5)
    embed_catalog(tiny_bundle / "bundle", tmp_path / "few.jsonl", tmp_path / "few", profile="x86-avx512-vnni")
    with pytest.raises(ValueError, match="lack .* of the .* catalog items"):
        export_bundle(tiny_bundle / "student", tmp_path / "b2", ["x86-avx512-vnni"], tiny_bundle / "teacher",
                      catalog_embeddings=tmp_path / "few", **opts)
    # embeddings made with another variant's file than this export builds are refused
    embed_catalog(tiny_bundle / "bundle", tmp_path / "items.jsonl", tmp_path / "fp32", profile="x86-avx512-vnni",
                  variant="fp32")
    with pytest.raises(ValueError, match="does not build"):
        export_bundle(tiny_bundle / "student", tmp_path / "b3", ["x86-avx512-vnni"], tiny_bundle / "teacher",
                      catalog_embeddings=tmp_path / "fp32", **opts)
    assert not (tmp_path / "b2").exists() and not (tmp_path / "b3").exists()
