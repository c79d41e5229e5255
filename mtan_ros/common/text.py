"""Quoting what users and senders typed, at a length one log line can carry.

Why: a parameter, a path or a field of a message can be of any length, and echoing
it whole once turned a 100 KB model_path into one 200,178-character ERROR line.
Every user-supplied string shown in a log line or an error goes through these.
"""
from __future__ import annotations

import os
from typing import Any

# Values (names, encodings, parameter values) are quoted at most this long, plus
# an ellipsis and the full length.
QUOTE_LIMIT = 64
# Paths get more room (real ones are rarely longer), and keep their end: the file name.
PATH_QUOTE_LIMIT = 256


def quote(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """repr(value), cut to about `limit` characters with '...' and the full length when longer."""
    if isinstance(value, str):
        shown, length = repr(value[:limit]), len(value)
        if length <= limit and len(shown) <= limit + 2:
            return shown
    else:
        shown = repr(value)
        length = len(shown)
        if length <= limit:
            return shown
    return f"{shown[:limit - 3]}... ({length} characters)"


def quote_path(path: str | os.PathLike, limit: int = PATH_QUOTE_LIMIT) -> str:
    """'path' in single quotes (control characters escaped); beyond `limit`, its start ... its end and the length."""
    text = str(os.fspath(path))
    if len(text) <= limit:
        return f"'{_escaped(text)}'"
    head = (limit - 3) * 2 // 3
    tail = limit - 3 - head
    return f"'{_escaped(text[:head])}...{_escaped(text[-tail:])}' ({len(text)} characters)"


def _escaped(text: str) -> str:
    """`text` with backslashes and control characters escaped as repr() does, without its quotes."""
    return text if text.isprintable() and "\\" not in text else repr(text)[1:-1]
