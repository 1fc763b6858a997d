"""Tokenization shared by training, export and serving (the ``tokenizers`` library)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def load_tokenizer(path: str | Path, max_tokens: int):
    """Load tokenizer.json with padding off (we pad per batch to the longest text) and truncation
    at ``max_tokens``. The packaged MiniLM tokenizer.json pads to 128, which would waste compute."""
    from tokenizers import Tokenizer

    from .errors import BundleError

    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for unreadable or malformed files
        raise BundleError(f"{path}: not a valid tokenizer.json ({str(exc)[:200]})") from None
    tok.no_padding()
    tok.enable_truncation(max_tokens)
    return tok


def encode_batch(tok, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and attention mask [N, T], T = the longest text of the batch."""
    enc = tok.encode_batch(texts)
    T = max(1, max((len(e.ids) for e in enc), default=1))
    ids = np.zeros((len(texts), T), np.int64)
    mask = np.zeros((len(texts), T), np.int64)
    for r, e in enumerate(enc):
        n = len(e.ids)
        ids[r, :n] = e.ids
        mask[r, :n] = 1
    return ids, mask
