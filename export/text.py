"""Item text from a template, and tokenization exactly as the runtime does it."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from genre_edge.text_template import render
from genre_edge.tokenize import encode_batch, load_tokenizer

from .data.schema import Items


def item_texts(items: Items, template: str) -> list[str]:
    """Every item's text from ``template``, whose fields must be the items' own (TEMPLATE_FIELDS) or text
    columns of the data: a field the data lacks is an error naming what it has (it rendered as empty for
    every item, silently - a template's {description} with a data set whose column is "desc")."""
    from genre_edge.errors import ConfigError
    from genre_edge.text_template import template_fields

    from .train_config import TEMPLATE_FIELDS

    have = set(TEMPLATE_FIELDS) | set(items.text)
    missing = [f for f in template_fields(template) if f not in have]
    if missing:
        cols = ", ".join(sorted(items.text)) or "none"
        raise ConfigError(f"encoder.template: {{{missing[0]}}} is not a field of the data; its fields: "
                          f"{', '.join(TEMPLATE_FIELDS)}, and its text columns ([items] text): {cols}")
    return [render(template, items.fields(i)) for i in range(len(items))]


def tokenize(tokenizer_path: str | Path, texts: list[str], max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and mask [N, T], exactly as the runtime tokenizes."""
    return encode_batch(load_tokenizer(tokenizer_path, max_tokens), texts)
