"""Issue 19: Ed25519 bundle signatures - keygen, sign, verify round-trip; a device that trusts a key refuses
unsigned, re-signed-by-another-key and tampered bundles before reading anything else of them."""
import json
import os
import shutil
import stat

import pytest
from click.testing import CliRunner

from conftest import needs_export, needs_tiny_bundle

pytest.importorskip("cryptography")
pytestmark = needs_tiny_bundle


def _cli(*args):
    from genre_edge.cli import main

    return CliRunner().invoke(main, list(args))


def test_sign_verify_round_trip_and_refusals(tiny_bundle, tmp_path, monkeypatch):
    from genre_edge.errors import BundleError
    from genre_edge.recommender import Recommender

    b = tmp_path / "b"
    shutil.copytree(tiny_bundle / "bundle", b)
    r = _cli("bundle", "keygen", "--out", str(tmp_path / "keys"), "--json")
    assert r.exit_code == 0, r.output
    keys = json.loads(r.output)
    assert stat.S_IMODE(os.stat(keys["private_key"]).st_mode) == 0o600
    assert _cli("bundle", "keygen", "--out", str(tmp_path / "keys")).exit_code == 1  # never overwrites a key
    # unsigned: plain verify passes, verify with a key does not, a device that trusts the key refuses it
    assert _cli("bundle", "verify", str(b)).exit_code == 0
    r = _cli("bundle", "verify", str(b), "--key", keys["public_key"])
    assert r.exit_code == 1 and "unsigned bundle" in r.output
    monkeypatch.setenv("GENRE_TRUSTED_KEY", keys["public_key"])
    with pytest.raises(BundleError, match="unsigned"):
        Recommender.load(b, "x86-avx512-vnni", state_dir=tmp_path / "s")
    # signed: both accept
    r = _cli("bundle", "sign", str(b), "--key", keys["private_key"])
    assert r.exit_code == 0, r.output
    assert _cli("bundle", "verify", str(b), "--key", keys["public_key"]).exit_code == 0
    assert len(Recommender.load(b, "x86-avx512-vnni", state_dir=tmp_path / "s").recommend(["m0"], k=3).items) == 3
    # another key's signature is refused
    other = json.loads(_cli("bundle", "keygen", "--out", str(tmp_path / "other"), "--json").output)
    assert _cli("bundle", "sign", str(b), "--key", other["private_key"]).exit_code == 0
    with pytest.raises(BundleError, match="does not match"):
        Recommender.load(b, "x86-avx512-vnni", state_dir=tmp_path / "s")
    # a signed manifest changed afterwards (files re-hashed to match: a hash check alone would pass) is refused
    _cli("bundle", "sign", str(b), "--key", keys["private_key"])
    m = json.loads((b / "manifest.json").read_text())
    m["created_at"] = "2000-01-01T00:00:00+00:00"
    (b / "manifest.json").write_text(json.dumps(m))
    r = _cli("bundle", "verify", str(b), "--key", keys["public_key"])
    assert r.exit_code == 1 and "does not match" in r.output
    monkeypatch.delenv("GENRE_TRUSTED_KEY")
    assert _cli("bundle", "verify", str(b)).exit_code == 0  # a device that trusts no key still loads it


def test_the_profile_can_name_the_trusted_key(tiny_bundle, tmp_path):
    import dataclasses

    from genre_edge.errors import BundleError
    from genre_edge.profile import load_profile
    from genre_edge.recommender import Recommender
    from genre_edge.signing import generate_keys, sign_bundle

    b = tmp_path / "b"
    shutil.copytree(tiny_bundle / "bundle", b)
    priv, pub = generate_keys(tmp_path)
    prof = dataclasses.replace(load_profile("x86-avx512-vnni"), trusted_key=str(pub))
    with pytest.raises(BundleError, match="unsigned"):
        Recommender.load(b, prof, state_dir=tmp_path / "s")
    sign_bundle(b, priv)
    assert Recommender.load(b, prof, state_dir=tmp_path / "s").variant
    r = _cli("bundle", "sign", str(b), "--key", str(pub))  # a public key cannot sign
    assert r.exit_code == 1 and "private key" in r.output


@needs_export
def test_two_exports_with_source_date_epoch_are_byte_identical(tiny_bundle, tmp_path, monkeypatch):
    """Issue 19: firmware-grade bundles - the same inputs give the same bytes (bundle files and tar) when
    SOURCE_DATE_EPOCH is set: its time stamp, no run-dependent timings in the manifest, a normalized tar."""
    import hashlib

    from genre_edge_export.bundle_writer import export_bundle

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    outs = []
    for name in ("one", "two"):
        res = export_bundle(tiny_bundle / "student", tmp_path / name / "bundle", ["x86-avx512-vnni"],
                            tiny_bundle / "teacher", min_kept=0.0, min_request_kept=0.0, min_cold_kept=0.0,
                            tar=True, progress=lambda m: None)
        assert res["timings_ms"]  # measured all the same, reported beside the bundle
        outs.append(tmp_path / name / "bundle")
    files = [{p.relative_to(o).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
              for p in sorted(o.rglob("*")) if p.is_file()} for o in outs]
    assert files[0] == files[1] and "manifest.json" in files[0]
    m = json.loads((outs[0] / "manifest.json").read_text())
    assert m["created_at"].startswith("2023-11-14T22:13:20")
    assert not any("latency_ms" in r for r in m["quality"]["rows"].values())
    tars = [(o.parent / "bundle.tar.gz").read_bytes() for o in outs]
    assert tars[0] == tars[1]
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    from genre_edge.errors import ConfigError
    from genre_edge_export.bundle_writer import source_date_epoch

    with pytest.raises(ConfigError, match="SOURCE_DATE_EPOCH"):
        source_date_epoch()
