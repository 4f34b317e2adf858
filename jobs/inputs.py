"""Every subcommand checks what it is given before any work: one line naming the path and what is wrong.

A typo must not cost a Spark start and a page of Java traces. Local paths (and file: URLs) are
checked here without Spark: missing, no read permission, not Parquet (by the format's magic
bytes), not a clickweight output of the expected kind, not a model folder, a missing column. URLs
on other stores are checked by the job through the filesystem that reads them.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

from jobs.outputs import MARKER, LocalFS, local_form, output_kind
from udfs.errors import UserError

PARQUET_MAGIC = b"PAR1"
MAX_FILES_CHECKED = 1000  # a huge local folder: its first files stand for the rest


class InputError(UserError):
    """An input the user named cannot be used; the message names the path and why."""


def require_readable(path: str, what: str) -> Path:
    """`path` exists and can be read (a folder: listed), else InputError."""
    p = Path(path)
    if not os.path.lexists(p):
        raise InputError(f"{what} {path}: no such file or folder")
    if not p.exists():
        raise InputError(f"{what} {path}: a broken symbolic link")
    if not os.access(p, os.R_OK | (os.X_OK if p.is_dir() else 0)):
        raise InputError(f"{what} {path}: no read permission")
    return p


def data_files(folder: Path) -> Iterator[Path]:
    """A dataset folder's data files, as Spark reads them: hidden (`.`) and `_` names are skipped."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        for name in sorted(files):
            if not name.startswith((".", "_")):
                yield Path(root) / name


def is_parquet_file(path: Path) -> bool:
    """Parquet files begin and end with the magic bytes PAR1."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
            if os.fstat(f.fileno()).st_size < 12:
                return False
            f.seek(-4, os.SEEK_END)
            return head == PARQUET_MAGIC and f.read(4) == PARQUET_MAGIC
    except PermissionError as exc:
        raise InputError(f"{path}: no read permission") from exc


def check_parquet(path: str, what: str = "--input") -> None:
    """A local Parquet file or dataset folder, readable, every data file Parquet (URLs: not checked here)."""
    local = local_form(path)
    if local is None:
        return
    p = require_readable(local, what)
    files = [p] if p.is_file() else list(islice(data_files(p), MAX_FILES_CHECKED))
    if not files:
        raise InputError(f"{what} {path}: the folder holds no data files (an empty or wrong folder?)")
    for f in files:
        if not os.access(f, os.R_OK):
            raise InputError(f"{what} {path}: no read permission on {f}")
        if not is_parquet_file(f):
            shown = f if f != p else path
            raise InputError(f"{what} {path}: not Parquet ({shown} lacks Parquet's PAR1 magic bytes; "
                             "clickweight reads Parquet files or folders, or a catalog table name)")


def check_clickweight_output(path: str, kind: str, what: str = "--input") -> None:
    """A local folder that a clickweight `kind` job wrote (outputs.output_kind: its marker, or a legacy file)."""
    local = local_form(path)
    if local is None:
        return
    p = require_readable(local, what)
    if not p.is_dir():
        raise InputError(f"{what} {path}: a file, not a clickweight {kind} output folder")
    found = output_kind(LocalFS(), str(p))
    if found is None:
        raise InputError(f"{what} {path}: not a clickweight {kind} output (no {MARKER})")
    if found != kind:
        raise InputError(f"{what} {path}: a clickweight {found} output, not a {kind} output")


def check_model_folder(path: str, what: str = "--model") -> None:
    """A local model folder: Hugging Face layout (config.json beside the weights)."""
    local = local_form(path)
    if local is None:
        raise InputError(f"{what} {path}: models load from a local folder (or a shared mount), not a URL")
    p = require_readable(local, what)
    if not p.is_dir():
        raise InputError(f"{what} {path}: a file, not a model folder")
    if not (p / "config.json").is_file():
        raise InputError(f"{what} {path}: not a model folder (no config.json)")


def check_columns(path: str, columns: list[str], what: str = "--input") -> None:
    """A local Parquet input has these columns (read from one footer)."""
    import pyarrow.parquet as pq

    local = local_form(path)
    if local is None:
        return
    p = Path(local)
    first = p if p.is_file() else next(data_files(p))
    present = set(pq.read_schema(first).names)
    if p.is_dir():  # hive partition folders are columns too
        present |= {part.split("=", 1)[0] for part in first.relative_to(p).parts[:-1] if "=" in part}
    missing = [c for c in columns if c not in present]
    if missing:
        raise InputError(f"{what} {path}: no column(s) {', '.join(missing)} (it has {', '.join(sorted(present))})")

