"""Where jobs write: which folders a job may replace, and the atomic directory commit.

Every output a job commits carries MARKER (`_clickweight.json`: kind, run_id, config_hash, the
output path, creation time, clickweight version). A job replaces an existing `--output` only when
it is empty or its marker says it is a clickweight output of the same kind, or with `--overwrite`.
Some targets are refused even with `--overwrite`: a filesystem root, the home or working
directory (or a folder above it), an input, a folder holding an input, or a folder inside one.

Staging and backup folders live in one clickweight-owned sibling, `<output>.clickweight-staging/`,
itself marked. Nothing outside it is ever renamed or deleted except `<output>` itself, so a
user's `weighted.old-backup` next to the output is never touched, whatever its name.
"""
from __future__ import annotations

import datetime
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from jobs.common import log
from udfs.errors import UserError
from udfs.files import write_text_atomically

MARKER = "_clickweight.json"
STAGING_SUFFIX = ".clickweight-staging"
STAGING_MARKER = "_clickweight_staging.json"
# Outputs written before the marker existed: the file each kind always wrote.
LEGACY_MARKERS = {"score": ("_summary.json",), "generate": ("_generate_summary.json",),
                  "train": ("train_summary.json", "clickweight_model.json", "checkpoint")}


class OutputRefused(UserError):
    """The target of --output is not one this job may replace."""


class FileSystem(Protocol):
    def exists(self, p: str) -> bool: ...
    def list_names(self, p: str) -> list[str]: ...
    def read_text(self, p: str) -> str: ...
    def write_text(self, p: str, text: str) -> None: ...
    def rename(self, src: str, dst: str) -> None: ...
    def delete(self, p: str) -> None: ...
    def mkdirs(self, p: str) -> None: ...


class LocalFS:
    """The FileSystem protocol on local folders (generate and train write locally)."""

    def exists(self, p: str) -> bool:
        return os.path.lexists(p)

    def list_names(self, p: str) -> list[str]:
        return sorted(os.listdir(p)) if os.path.isdir(p) else []

    def read_text(self, p: str) -> str:
        return Path(p).read_text()

    def write_text(self, p: str, text: str) -> None:
        write_text_atomically(p, text)

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)

    def delete(self, p: str) -> None:
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        elif os.path.lexists(p):
            os.unlink(p)

    def mkdirs(self, p: str) -> None:
        os.makedirs(p, exist_ok=True)


# ---------------------------------------------------------------- which targets are allowed

def _split(path: str) -> tuple[str, PurePosixPath]:
    """(scheme://authority, absolute path) of a local path or a URL."""
    if "://" in path:
        scheme, rest = path.split("://", 1)
        authority, _, p = rest.partition("/")
        return f"{scheme}://{authority}", PurePosixPath("/" + p)
    if path.startswith("file:"):
        return "", PurePosixPath(os.path.realpath(path[len("file:"):]))
    return "", PurePosixPath(os.path.realpath(path))


def _inside(a: PurePosixPath, b: PurePosixPath) -> bool:
    return a == b or b in a.parents


def forbidden_reason(output: str, inputs: Iterable[str] = ()) -> str | None:
    """Why `output` may never be replaced, or None. Pure: it reads no folder."""
    where, out = _split(output)
    if any(c in out.name for c in "*?[]{}"):
        return "Spark reads paths as glob patterns, so a name with * ? [ ] { } would read other folders"
    if out == PurePosixPath("/"):
        return "it is a filesystem root"
    if not where:
        home, cwd = PurePosixPath(os.path.realpath(Path.home())), PurePosixPath(os.getcwd())
        if _inside(home, out):
            return "it is your home directory or holds it"
        if _inside(cwd, out):
            return "it is the working directory or holds it"
    for source in inputs:
        src_where, src = _split(source)
        if src_where != where:
            continue
        if _inside(src, out):
            return f"it is or holds the input {source}"
        if _inside(out, src):
            return f"it is inside the input {source}"
    return None


def read_marker(fs: FileSystem, folder: str) -> dict[str, Any] | None:
    path = f"{folder.rstrip('/')}/{MARKER}"
    if not fs.exists(path):
        return None
    try:
        return json.loads(fs.read_text(path))
    except ValueError:
        return None


def output_kind(fs: FileSystem, folder: str) -> str | None:
    """The kind of clickweight output `folder` is (its marker, else its legacy marker file), or None."""
    marker = read_marker(fs, folder)
    if marker is not None:
        return marker.get("kind")
    names = set(fs.list_names(folder))
    return next((kind for kind, files in LEGACY_MARKERS.items() if names & set(files)), None)


def check_output(fs: FileSystem, output: str, kind: str, inputs: Iterable[str] = (), overwrite: bool = False) -> None:
    """Refuse, before any work, an --output this job must not replace (see the module doc)."""
    reason = forbidden_reason(output, inputs)
    if reason:
        raise OutputRefused(f"refusing --output {output}: {reason}; choose a folder of its own")
    if not fs.exists(output) or not fs.list_names(output) or overwrite:
        return
    found = output_kind(fs, output)
    if found != kind:
        what = f"a clickweight {found} output" if found else f"not a clickweight output (no {MARKER})"
        raise OutputRefused(f"refusing to replace {output}: it is {what}. Choose another --output, "
                            f"or pass --overwrite to replace it anyway")


def marker(kind: str, run_id: str, output: str, **provenance: Any) -> str:
    from importlib import metadata

    try:
        version = metadata.version("clickweight")
    except metadata.PackageNotFoundError:
        version = "unknown"
    body = {"kind": kind, "run_id": run_id, "output": output, "clickweight": version,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), **provenance}
    return json.dumps(body, indent=2, sort_keys=True, default=str) + "\n"


# ---------------------------------------------------------------- staging and commit

def staging_area(output: str) -> str:
    return output.rstrip("/") + STAGING_SUFFIX


def staged_path(output: str, run_id: str) -> str:
    return f"{staging_area(output)}/tmp-{run_id}"


def prepare_staging(fs: FileSystem, output: str, run_id: str) -> str:
    """This run's staging folder, in the output's own staging area (created and marked if new).

    A run killed between the commit's two renames left no output, only its backup in the area: it
    goes back in place first. Staging folders of runs killed before their commit are removed.
    """
    area = staging_area(output)
    if fs.exists(area) and not fs.exists(f"{area}/{STAGING_MARKER}"):
        raise OutputRefused(f"{area} exists but is not clickweight's staging folder for {output}; move it away")
    fs.mkdirs(area)
    fs.write_text(f"{area}/{STAGING_MARKER}", json.dumps({"output": output}) + "\n")
    names = fs.list_names(area)
    backups = sorted(n for n in names if n.startswith("old-"))
    if backups and not fs.exists(output):
        log.warning("%s is missing after an interrupted commit: restoring %s", output, backups[-1])
        fs.rename(f"{area}/{backups[-1]}", output)
        backups = backups[:-1]
    for name in backups + [n for n in names if n.startswith("tmp-")]:
        log.info("removing %s/%s, left by a run killed before its commit finished", area, name)
        fs.delete(f"{area}/{name}")
    return staged_path(output, run_id)


def commit_dir(fs: FileSystem, staged: str, final: str, run_id: str) -> None:
    """Replace `final` with the fully written `staged` folder, then remove the staging area.

    On a filesystem with atomic rename (local, HDFS) readers see the old or the new output; between
    the two renames `final` is briefly absent, and a kill there is repaired by the next run's
    prepare_staging. On object stores (s3a) a rename is copy-and-delete: see docs/robustness.md.
    """
    area = staging_area(final)
    old = f"{area}/old-{run_id}"
    had_old = fs.exists(final)
    if had_old:
        fs.rename(final, old)
    try:
        fs.rename(staged, final)
    except Exception:
        if had_old:
            fs.rename(old, final)
        raise
    if had_old:
        fs.delete(old)
    _remove_area_if_empty(fs, area)


def abandon(fs: FileSystem, staged: str) -> None:
    """Remove this run's own staging folder (and the area when nothing else is in it)."""
    fs.delete(staged)
    _remove_area_if_empty(fs, staged.rsplit("/", 1)[0])


def _remove_area_if_empty(fs: FileSystem, area: str) -> None:
    """The staging area goes once it holds nothing but its own marker."""
    if area.endswith(STAGING_SUFFIX) and set(fs.list_names(area)) <= {STAGING_MARKER}:
        fs.delete(area)
