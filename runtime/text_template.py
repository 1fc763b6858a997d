"""Item text templates (shared by training and on-device catalog updates)."""
from __future__ import annotations

import re
import string

_EMPTY_PARENS = re.compile(r"\(\s*\)")
_EMPTY_LABEL = re.compile(r"\b[A-Z][a-z]+:\s*\.")
_SPACES = re.compile(r"\s+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,;:!?])")
_REPEATED_PUNCT = re.compile(r"([.,;:])(?:\s+[.,;:])+")  # "Title. ." (an empty field), never an ellipsis


def template_fields(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f]


def render(template: str, fields: dict[str, str]) -> str:
    """Fill ``template``; empty fields vanish with their empty brackets or 'Label: .' stubs."""
    text = template.format(**{n: fields.get(n, "") for n in template_fields(template)})
    text = _EMPTY_PARENS.sub("", text)
    text = _EMPTY_LABEL.sub("", text)
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", _REPEATED_PUNCT.sub(r"\1", text))  # "Title (). Genres: ." -> "Title."
    return _SPACES.sub(" ", text).strip()
