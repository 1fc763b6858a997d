"""Bundle reading and verification: manifest, format version, sha256 of every file, safe paths.

Nothing in a bundle is executed: models are ONNX (no custom-op libraries are ever registered),
arrays are .npy read with ``allow_pickle=False``, metadata is JSON.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import BundleError
from .fsutil import sha256_file  # noqa: F401 (re-exported for the export side)

log = logging.getLogger(__name__)

FORMAT = "genre-bundle"
SUPPORTED_VERSIONS = (1,)
MANIFEST = "manifest.json"


def safe_path(root: Path, rel: str) -> Path:
    """Resolve ``rel`` inside ``root``; refuse absolute paths, '..', and symlinks leading out."""
    if not isinstance(rel, str) or not rel or rel.startswith(("/", "\\")) or "\\" in rel or ":" in rel:
        raise BundleError(f"manifest names an unsafe file path {rel!r} (must be relative, inside the bundle)")
    parts = Path(rel).parts
    if any(p in ("..", ".") for p in parts):
        raise BundleError(f"manifest names an unsafe file path {rel!r} ('..' is not allowed)")
    p = root / rel
    real_root = root.resolve()
    try:
        real = p.resolve(strict=False)
    except (OSError, RuntimeError) as exc:
        raise BundleError(f"{rel}: cannot resolve path ({exc})") from None
    if real_root != real and real_root not in real.parents:
        raise BundleError(f"{rel}: resolves outside the bundle (symlink?); refused")
    return p


@dataclass
class Bundle:
    root: Path
    manifest: dict

    def path(self, rel: str) -> Path:
        if rel not in self.manifest["files"]:
            raise BundleError(f"{rel}: not listed in the manifest's files; refused")
        return safe_path(self.root, rel)

    def load_npy(self, rel: str, dtype=None, ndim: int | None = None) -> np.ndarray:
        p = self.path(rel)
        try:
            arr = np.load(p, allow_pickle=False)
        # a malformed header reaches numpy's header parser: SyntaxError/TokenError besides ValueError
        except Exception as exc:
            raise BundleError(f"{rel}: not a valid .npy array ({exc})") from None
        if dtype is not None and arr.dtype != np.dtype(dtype):
            raise BundleError(f"{rel}: dtype {arr.dtype}, expected {np.dtype(dtype)}")
        if ndim is not None and arr.ndim != ndim:
            raise BundleError(f"{rel}: {arr.ndim}-d array, expected {ndim}-d")
        return arr

    def load_json(self, rel: str):
        p = self.path(rel)
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except (ValueError, OSError, UnicodeDecodeError) as exc:
            raise BundleError(f"{rel}: not valid JSON ({exc})") from None

    def model(self, part: str, variant: str) -> dict:
        models = self.manifest["models"].get(part, {})
        if variant not in models:
            raise BundleError(f"bundle has no {part} model for variant {variant!r}; it has: {', '.join(models) or 'none'}")
        return models[variant]

    def variants(self, part: str = "encoder") -> list[str]:
        return list(self.manifest["models"].get(part, {}))


def _require(d: dict, key: str, typ, where: str = "manifest"):
    if key not in d:
        raise BundleError(f"{where}: missing field {key!r}")
    if not isinstance(d[key], typ):
        raise BundleError(f"{where}.{key}: expected {getattr(typ, '__name__', typ)}, got {type(d[key]).__name__}")
    return d[key]


def read_manifest(root: Path) -> dict:
    mp = root / MANIFEST
    if not root.is_dir():
        raise BundleError(f"{root}: not a bundle folder")
    if not mp.is_file():
        raise BundleError(f"{root}: no {MANIFEST}; not a genre-edge bundle")
    try:
        m = json.loads(mp.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{mp}: not valid JSON ({exc})") from None
    if not isinstance(m, dict):
        raise BundleError(f"{mp}: expected a JSON object")
    if m.get("format") != FORMAT:
        raise BundleError(f"{mp}: format {m.get('format')!r} is not {FORMAT!r}")
    ver = m.get("format_version")
    if ver not in SUPPORTED_VERSIONS:
        raise BundleError(f"{mp}: format_version {ver!r} is not supported by this runtime "
                          f"(supports {', '.join(map(str, SUPPORTED_VERSIONS))}); upgrade genre-edge or re-export")
    files = _require(m, "files", dict)
    for rel, meta in files.items():
        if not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str) or not isinstance(meta.get("bytes"), int):
            raise BundleError(f"manifest.files[{rel!r}]: needs sha256 (string) and bytes (integer)")
    for key, typ in (("dim", int), ("max_tokens", int), ("tokenizer", str), ("models", dict), ("catalog", dict),
                     ("scoring", dict)):
        _require(m, key, typ)
    for part in ("encoder", "user"):
        variants = _require(m["models"], part, dict, "manifest.models")
        for v, meta in variants.items():
            if not isinstance(meta, dict) or not isinstance(meta.get("file"), str):
                raise BundleError(f"manifest.models.{part}.{v}: needs a 'file' string")
            if meta["file"] not in files:
                raise BundleError(f"manifest.models.{part}.{v}: file {meta['file']!r} is not listed in files")
    return m


def open_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Open a bundle folder; with ``verify`` check every listed file's size and sha256 first."""
    root = Path(path)
    m = read_manifest(root)
    if verify:
        problems = verify_files(root, m)
        if problems:
            raise BundleError(f"{root}: bundle verification failed:\n  " + "\n  ".join(problems[:10]))
    return Bundle(root, m)


def verify_files(root: Path, manifest: dict) -> list[str]:
    problems = []
    for rel, meta in manifest["files"].items():
        try:
            p = safe_path(root, rel)
        except BundleError as exc:
            problems.append(str(exc))
            continue
        if p.is_symlink():
            problems.append(f"{rel}: is a symlink; refused")
            continue
        if not p.is_file():
            problems.append(f"{rel}: missing")
            continue
        size = os.path.getsize(p)
        if size != meta["bytes"]:
            problems.append(f"{rel}: {size} bytes, manifest says {meta['bytes']} (truncated or replaced)")
            continue
        got = sha256_file(p)
        if got != meta["sha256"]:
            problems.append(f"{rel}: sha256 {got[:16]}... does not match the manifest ({meta['sha256'][:16]}...)")
    return problems
