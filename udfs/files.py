"""The one way clickweight replaces a local file: write beside it, then rename over it.

A reader (or a resumed run) sees the old file or the new one, never a half-written one; a kill
mid-write leaves the previous file intact.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def replace_atomically(path: str | Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` fills a temporary file beside `path`, which then replaces `path` in one rename."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def write_text_atomically(path: str | Path, text: str) -> None:
    replace_atomically(path, lambda tmp: tmp.write_text(text))
