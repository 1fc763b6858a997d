"""Item text from a template, and tokenization exactly as the runtime does it."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from genre_edge.text_template import render
from genre_edge.tokenize import encode_batch, load_tokenizer

from .data.schema import Items


def item_texts(items: Items, template: str) -> list[str]:
    return [render(template, items.fields(i)) for i in range(len(items))]


def tokenize(tokenizer_path: str | Path, texts: list[str], max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and mask [N, T], exactly as the runtime tokenizes."""
    return encode_batch(load_tokenizer(tokenizer_path, max_tokens), texts)
