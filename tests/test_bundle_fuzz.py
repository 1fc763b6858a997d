"""Corrupted bundle files *with matching hashes* (a re-signed manifest): the parsers behind the
hash check must refuse clearly too — BundleError, never another exception, never a crash."""
import json
import random
import shutil

import pytest

from conftest import needs_tiny_bundle
from genre_edge.errors import BundleError, GenreError
from genre_edge.fsutil import sha256_file
from genre_edge.recommender import Recommender

pytestmark = needs_tiny_bundle


def _mutate(data: bytes, rng: random.Random) -> bytes:
    how = rng.choice(["truncate", "flip", "garbage", "empty", "splice"])
    if how == "truncate":
        return data[: rng.randrange(0, max(1, len(data)))]
    if how == "flip":
        b = bytearray(data)
        for _ in range(rng.randint(1, 16)):
            if b:
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        return bytes(b)
    if how == "garbage":
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 4096)))
    if how == "empty":
        return b""
    a = rng.randrange(0, max(1, len(data)))
    return data[:a] + data[a:][::-1]


@pytest.mark.parametrize("seed", range(int(__import__("os").environ.get("GENRE_FUZZ_BUNDLES", "60"))))
def test_resigned_corrupt_file_is_refused_or_harmless(tiny_bundle, tmp_path, seed):
    rng = random.Random(seed)
    b = tmp_path / "b"
    shutil.copytree(tiny_bundle / "bundle", b)
    m = json.loads((b / "manifest.json").read_text())
    rel = rng.choice(sorted(f for f in m["files"] if not f.endswith(".onnx") or seed % 4 == 0))
    (b / rel).write_bytes(_mutate((b / rel).read_bytes(), rng))
    m["files"][rel] = {"sha256": sha256_file(b / rel), "bytes": (b / rel).stat().st_size}
    (b / "manifest.json").write_text(json.dumps(m))
    try:
        rec = Recommender.load(b, "x86-avx512-vnni", state_dir=tmp_path / "s")
    except BundleError as exc:
        assert str(exc)
        return
    # it loaded (the mutation happened to keep the file valid): requests must still behave
    try:
        rec.recommend(list(rec.catalog.ids[:3]), query="a film", k=5, explain=True)
    except GenreError as exc:
        assert str(exc)


@pytest.mark.parametrize("mutate", [
    lambda it: it.pop("title"),
    lambda it: it.update(ids="m0"),
    lambda it: it.update(title=it["title"][:-1]),
    lambda it: it.update(year=["x"] * len(it["year"])),
    lambda it: it.update(categories=[None] * len(it["categories"])),
    lambda it: it.update(ids=[1] * len(it["ids"])),
    lambda it: it.update(first_seen={"a": 1}),
    lambda it: it.clear(),
])
def test_resigned_items_json_with_wrong_structure_is_refused(tiny_bundle, tmp_path, mutate):
    b = tmp_path / "b"
    shutil.copytree(tiny_bundle / "bundle", b)
    m = json.loads((b / "manifest.json").read_text())
    rel = m["catalog"]["items"]
    items = json.loads((b / rel).read_text())
    mutate(items)
    (b / rel).write_text(json.dumps(items))
    m["files"][rel] = {"sha256": sha256_file(b / rel), "bytes": (b / rel).stat().st_size}
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="items"):
        Recommender.load(b, "x86-avx512-vnni", state_dir=tmp_path / "s")
