"""Where jobs write: which folders a job may replace, and the atomic directory commit.

Every output a job commits carries MARKER (`_clickweight.json`: kind, run_id, config_hash, the
output path, creation time, clickweight version). A job replaces an existing `--output` only when
it is empty or its marker says it is a clickweight output of the same kind, or with `--overwrite`.
Some targets are refused even with `--overwrite`, compared after qualifying every path the way its
filesystem does (qualify()): a filesystem root, the home or working directory (or a folder above
it), an input, a folder holding an input, a folder inside one, and an existing ordinary file.

Staging and backup folders live in one clickweight-owned sibling, `<output>.clickweight-staging/`,
itself marked. Nothing outside it is ever renamed or deleted except `<output>` itself, so a
user's `weighted.old-backup` next to the output is never touched, whatever its name.
"""
from __future__ import annotations

import datetime
import json
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
                  "train": ("train_summary.json", "clickweight_model.json", "checkpoint"),
                  "pipeline": ("pipeline_results.json",)}


class OutputRefused(UserError):
    """The target of --output is not one this job may replace."""


class FileSystem(Protocol):
    default_fs: str  # where a path without a scheme lives (Hadoop's fs.defaultFS)

    def native(self, where: Location) -> str: ...  # how this filesystem's calls name a qualified path
    def protected(self) -> list[tuple[str, str]]: ...  # (location, what it is): never an output
    def exists(self, p: str) -> bool: ...
    def is_dir(self, p: str) -> bool: ...
    def list_names(self, p: str) -> list[str]: ...
    def read_text(self, p: str) -> str: ...
    def write_text(self, p: str, text: str) -> None: ...
    def rename(self, src: str, dst: str) -> None: ...
    def delete(self, p: str) -> None: ...
    def mkdirs(self, p: str) -> None: ...


class LocalFS:
    """The FileSystem protocol on local folders (generate and train write locally)."""

    default_fs = "file:///"

    def native(self, where: Location) -> str:
        return str(where.path)

    def protected(self) -> list[tuple[str, str]]:
        return []

    def exists(self, p: str) -> bool:
        return os.path.lexists(p)

    def is_dir(self, p: str) -> bool:
        return os.path.isdir(p)

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

# Ports a filesystem uses when a URL names none (Hadoop's getCanonicalUri adds the same ones).
DEFAULT_PORTS = {"hdfs": 8020, "webhdfs": 9870, "swebhdfs": 9871}
# Schemes that address the same store under another connector or transport.
SAME_STORE = {"s3a": "s3", "s3n": "s3", "gcs": "gs", "abfss": "abfs", "wasbs": "wasb", "local": "file"}
GLOB_CHARS = "*?[]{}"


@dataclass(frozen=True)
class Location:
    """A path qualified the way the filesystem that writes it names it: scheme, authority, absolute path."""

    scheme: str
    authority: str
    path: PurePosixPath

    @property
    def store(self) -> tuple[str, str]:
        return SAME_STORE.get(self.scheme, self.scheme), self.authority

    def within(self, other: Location) -> bool:
        """This location is `other` or lies below it (same store)."""
        return self.store == other.store and (self.path == other.path or other.path in self.path.parents)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.authority}{self.path}"


def qualify(path: str, default_fs: str = "file:///") -> Location:
    """`path` as its filesystem resolves it: a path without a scheme is on `default_fs` (Hadoop's
    fs.defaultFS; local unless a cluster says otherwise) and relative to the working directory;
    `..`, `.`, repeated and trailing slashes are normalised; local paths have symlinks resolved and
    ignore a `file://host` authority; a URL's authority gets its scheme's default port."""
    scheme, authority, rest = split_url(path)
    if not scheme:
        scheme, authority, _ = split_url(default_fs)
        scheme = scheme or "file"
        if scheme in ("file", "local") or not rest.startswith("/"):  # relative paths: local, as absolute() makes them
            scheme, authority, rest = "file", "", os.path.join(os.getcwd(), rest)
    scheme = scheme.lower()
    if SAME_STORE.get(scheme, scheme) == "file":
        return Location("file", "", PurePosixPath(os.path.realpath(rest or "/")))
    authority = authority.lower()
    if authority and ":" not in authority and scheme in DEFAULT_PORTS:
        authority = f"{authority}:{DEFAULT_PORTS[scheme]}"
    normal = posixpath.normpath("/" + rest.lstrip("/"))
    return Location(scheme, authority, PurePosixPath("/" + normal.lstrip("/")))


def split_url(path: str) -> tuple[str, str, str]:
    """(scheme, authority, path) of `scheme://authority/path`, `scheme:/path` or a plain path."""
    head, sep, tail = path.partition(":")
    if not sep or not head or not head.replace("+", "").replace("-", "").replace(".", "").isalnum() \
            or (len(head) == 1 and not tail.startswith("//")):  # a plain path, or a Windows drive letter
        return "", "", path
    if tail.startswith("//"):
        authority, slash, rest = tail[2:].partition("/")
        return head, authority, slash + rest
    return head, "", tail


def forbidden_reason(output: str, inputs: Iterable[str] = (), default_fs: str = "file:///",
                     protected: Iterable[tuple[str, str]] = ()) -> str | None:
    """Why `output` may never be replaced, or None. Pure: it reads no folder.

    Compared after qualify(): the root of any filesystem, the home and working directory (local,
    plus `protected`: (location, what it is) pairs such as the target filesystem's own home and
    working directory) and every folder above them, and each input, any folder holding it and any
    folder inside it.
    """
    out = qualify(output, default_fs)
    if any(c in out.path.name for c in GLOB_CHARS):
        return "Spark reads paths as glob patterns, so a name with * ? [ ] { } would read other folders"
    if out.path == PurePosixPath("/"):
        return "it is a filesystem root"
    guarded = [(os.path.expanduser("~"), "your home directory"), (os.getcwd(), "the working directory"),
               *protected]
    for where, what in guarded:
        if qualify(where, default_fs).within(out):
            return f"it is {what} or holds it ({qualify(where, default_fs)})"
    for source in inputs:
        src = qualify(source, default_fs)
        if src.within(out):
            return f"it is or holds the input {source}"
        if out.within(src):
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
    reason = forbidden_reason(output, inputs, fs.default_fs, fs.protected())
    if reason:
        raise OutputRefused(f"refusing --output {output}: {reason}; choose a folder of its own")
    target = fs.native(qualify(output, fs.default_fs))  # `file.txt/` and `dir/x/..` name what they resolve to
    if not fs.exists(target):
        return
    if not fs.is_dir(target):
        raise OutputRefused(f"refusing --output {output}: it is an existing file, not a folder; choose a folder "
                            "of its own (--overwrite never replaces a file)")
    if not fs.list_names(target) or overwrite:
        return
    found = output_kind(fs, target)
    if found != kind:
        what = f"a clickweight {found} output" if found else f"not a clickweight output (no {MARKER})"
        raise OutputRefused(f"refusing to replace {output}: it is {what}. Choose another --output, "
                            f"or pass --overwrite to replace it anyway")


def local_form(path: str) -> str | None:
    """The local path of a plain path or a file: URL; None for a URL on any other store."""
    scheme, _, rest = split_url(path)
    if not scheme:
        return path
    return (rest or "/") if SAME_STORE.get(scheme.lower(), scheme.lower()) == "file" else None


def local_path(path: str, what: str = "--output") -> str:
    """local_form(path), or a clear refusal for a URL on another store: the model folder, a generated
    data set and a pipeline's work folder are written with local file calls (a shared mount is local)."""
    local = local_form(path)
    if local is None:
        raise OutputRefused(f"{what} {path}: this command writes a local folder (a path, or a shared mount every "
                            f"node sees); it cannot write {split_url(path)[0]}:// URLs")
    return local


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


@contextmanager
def replaced_as_a_whole(out: Path) -> Iterator[Path]:
    """A local folder built beside `out` (yielded) and swapped in when the block ends: old away, new in,
    then old deleted, so readers never see a half-written folder; on any error the previous folder is
    put back and the half-built one removed. The caller checks `out` with check_output first."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))  # one filesystem: renames
    old: Path | None = None
    try:
        yield tmp
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, old / "data")
        os.rename(tmp, out)
    except BaseException:
        if old is not None and not out.exists():
            os.rename(old / "data", out)    # put the previous folder back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
