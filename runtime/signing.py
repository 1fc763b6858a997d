"""Ed25519 bundle signatures: a bundle's ``manifest.sig`` signs its ``manifest.json``, which lists every
file's sha256, so one signature covers the whole bundle.

Keys are PEM files (``genre bundle keygen``); signing and checking use the ``cryptography`` package
(the 'sign' extra). A device that must run only bundles it trusts names the public key in its profile
(``trusted_key``) or in ``GENRE_TRUSTED_KEY``: the runtime then refuses unsigned bundles and bundles
whose signature does not match, before anything else of them is read.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import BundleError, ConfigError, MissingExtraError
from .fsutil import atomic_write_bytes

SIG_FILE = "manifest.sig"
MANIFEST = "manifest.json"
TRUSTED_KEY_ENV = "GENRE_TRUSTED_KEY"


def _ed25519():
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise MissingExtraError("sign", "bundle signatures") from None
    return serialization, ed25519


def generate_keys(folder: str | Path, name: str = "genre-bundle") -> tuple[Path, Path]:
    """A new key pair in ``folder``: ``NAME.key`` (private, mode 0600) and ``NAME.pub``. Refuses to overwrite."""
    serialization, ed25519 = _ed25519()
    folder = Path(folder)
    priv, pub = folder / f"{name}.key", folder / f"{name}.pub"
    for p in (priv, pub):
        if p.exists():
            raise ConfigError(f"{p} exists; move it away or choose another --name (keys are never overwritten)")
    key = ed25519.Ed25519PrivateKey.generate()
    atomic_write_bytes(priv, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()), mode=0o600)
    atomic_write_bytes(pub, key.public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


def _load(path: str | Path, private: bool):
    serialization, ed25519 = _ed25519()
    try:
        data = Path(path).read_bytes()
        key = (serialization.load_pem_private_key(data, password=None) if private
               else serialization.load_pem_public_key(data))
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: not a readable PEM {'private' if private else 'public'} key ({exc})") from None
    want = ed25519.Ed25519PrivateKey if private else ed25519.Ed25519PublicKey
    if not isinstance(key, want):
        raise ConfigError(f"{path}: not an Ed25519 {'private' if private else 'public'} key")
    return key


def sign_bundle(root: str | Path, private_key: str | Path) -> Path:
    """Write ``manifest.sig`` (64 raw bytes) for the bundle's current manifest; returns its path."""
    root = Path(root)
    key = _load(private_key, True)
    try:
        data = (root / MANIFEST).read_bytes()
    except OSError as exc:
        raise BundleError(f"{root}: no readable {MANIFEST} ({exc})") from None
    atomic_write_bytes(root / SIG_FILE, key.sign(data))
    return root / SIG_FILE


def check_signature(root: str | Path, manifest_bytes: bytes, public_key: str | Path) -> None:
    """Raise BundleError unless ``manifest_bytes`` carry a valid signature by ``public_key``."""
    from cryptography.exceptions import InvalidSignature  # the extra is there: _load checked it

    key = _load(public_key, False)
    sig_path = Path(root) / SIG_FILE
    if not sig_path.is_file():
        raise BundleError(f"{root}: unsigned bundle (no {SIG_FILE}), and this device accepts only bundles signed "
                          f"by {public_key}; sign it with `genre bundle sign`")
    try:
        key.verify(sig_path.read_bytes(), manifest_bytes)
    except InvalidSignature:
        raise BundleError(f"{root}: the signature does not match: {MANIFEST} was changed after signing, or it was "
                          f"signed with another key than {public_key}") from None


def trusted_key(profile=None) -> str | None:
    """The public key a device trusts: ``GENRE_TRUSTED_KEY``, else the profile's ``trusted_key``, else none."""
    env = os.environ.get(TRUSTED_KEY_ENV, "").strip()
    if env:
        return env
    key = getattr(profile, "trusted_key", "") if profile is not None else ""
    return os.path.expanduser(key) if key else None
