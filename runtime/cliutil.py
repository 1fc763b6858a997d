"""Small helpers every ``genre`` command shares, on the runtime and the export side alike."""
from __future__ import annotations

import json

import click

from .errors import WRITE_FAILURES, GenreError, MissingExtraError


def emit(obj, as_json: bool, text: str | None = None):
    """Print ``obj`` as JSON with ``--json``, else the human-readable ``text``."""
    if as_json:
        click.echo(json.dumps(obj, indent=2, ensure_ascii=False, default=str))
    else:
        click.echo(text if text is not None else json.dumps(obj, indent=2, default=str))


def run_api(fn, *args, **kwargs):
    """Call the Python API, turning user errors into ClickException (exit code 1)."""
    try:
        return fn(*args, **kwargs)
    except (GenreError, MissingExtraError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        if exc.errno not in WRITE_FAILURES:
            raise
        # a full or read-only disk is the user's to fix, not a bug: one line, no traceback (writers clean up
        # their temp files and folders, so what was there before is still there)
        where = exc.filename if exc.filename else "a file"
        raise click.ClickException(f"could not write {where}: {exc.strerror or exc}; free some space there (or "
                                   "make it writable) and run the command again") from None


def split_ids(text: str | None) -> list[str]:
    """Comma-separated ids or names, blanks dropped."""
    return [x.strip() for x in (text or "").split(",") if x.strip()]


def item_label(title: str, year: int, categories) -> str:
    """``Title (1995) [Comedy, Drama]``, leaving out an unknown year (0) and an empty category list (a catalog
    without them printed "Title (0) []")."""
    return (title + (f" ({year})" if year else "") + (f" [{', '.join(categories)}]" if categories else ""))
