"""Petastorm reading of the weighted output: one shard per rank, numeric columns only, guarded.

petastorm 0.13.1 can end a read early without an error (a race in its ThreadPool: `get_results`
checks "all workers done" before "ventilator completed"; docs/cluster.md), so every pass counts its
rows and `check_rows_read` compares the ranks' total against the Parquet footers; a mismatch fails
the run instead of silently training on less data.

The trainer reads either the row table (`<score output>/event_date=*/`) or the compacted pair
table (`<score output>/_pairs/`, udfs/clickstream/pairs.py), both plain Parquet datasets.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from udfs.clickstream.schema import (
    MODEL_INPUT_COLUMNS,
    PAIR_TARGET_COLUMNS,
    PAIRS_DIR,
    POSITION_COLUMNS,
    QUERY_KEY,
    ROW_TARGET_COLUMNS,
)
from udfs.errors import UserError

EVAL_BUCKETS = 1000  # `query_bucket` is in [0, EVAL_BUCKETS); the held-out split is a bucket range


class ReaderGuardError(RuntimeError):
    """Rows read do not match the dataset's Parquet metadata."""


def dataset_url(path: str) -> str:
    """A URL for `path`: local paths become file:// URLs; file:, hdfs://, s3a:// (any fsspec scheme) pass.

    Local paths are not percent-encoded (Path.as_uri would turn '+' into '%2B', which neither
    petastorm nor fsspec decodes back): petastorm takes the URL's path as it stands.
    """
    if "://" in path:
        return path.rstrip("/")
    return "file://" + str(Path(path.removeprefix("file:")).resolve())


def filesystem(path: str):
    """(fsspec filesystem, path as that filesystem names it) for a local path or URL."""
    import fsspec

    if "://" not in path:
        return fsspec.filesystem("file"), str(Path(path.removeprefix("file:")).resolve())
    return fsspec.core.url_to_fs(dataset_url(path))


def data_files(path: str) -> list[str]:
    """The dataset's Parquet files: a row table's event_date partitions, else the folder's own files."""
    fs, root = filesystem(path)
    partitioned = sorted(fs.glob(f"{root}/event_date=*/*.parquet"))
    return partitioned or sorted(f for f in fs.glob(f"{root}/*.parquet") if f.rsplit("/", 1)[-1][0] not in "._")


def file_sizes(path: str) -> list[tuple[str, int]]:
    """(name relative to the dataset, size in bytes) of every data file: what a checkpoint was trained on."""
    fs, root = filesystem(path)
    return [(f[len(root):].lstrip("/"), int(fs.size(f))) for f in data_files(path)]


def _footers(path: str) -> list:
    import pyarrow.parquet as pq

    fs, _ = filesystem(path)
    out = []
    for f in data_files(path):
        with fs.open(f, "rb") as handle:
            out.append(pq.ParquetFile(handle).metadata)
    return out


def read_text(path: str) -> str | None:
    """A small file's text (local or URL), or None when it does not exist."""
    fs, p = filesystem(path)
    return fs.cat_file(p).decode("utf-8") if fs.isfile(p) else None


def training_table(score_output: str, compact_pairs: bool) -> str:
    """The dataset the trainer streams: the pair table (compact) or the row table."""
    if not compact_pairs:
        return score_output
    pairs = f"{score_output.rstrip('/')}/{PAIRS_DIR}"
    fs, p = filesystem(pairs)
    if not fs.isdir(p):
        raise FileNotFoundError(f"{score_output} has no {PAIRS_DIR}/ pair table (scored by an older clickweight?): "
                                "re-run `clickweight score`, or set train.compact_pairs=false")
    return pairs


def check_rows_read(rows_read: int, path: str, what: str) -> int:
    """The guard: rows read (all ranks) must equal the Parquet footers' count, else ReaderGuardError."""
    expected = dataset_rows(path)
    if rows_read != expected:
        raise ReaderGuardError(f"{what}: ranks read {rows_read} rows but the Parquet footers of {path} hold "
                               f"{expected}: refusing to train on a partial read")
    return expected


def dataset_rows(path: str) -> int:
    """Rows in the dataset according to the Parquet footers (no data read)."""
    footers = _footers(path)
    if not footers:
        raise FileNotFoundError(f"no Parquet files under {path}: is it a `clickweight score` output?")
    return sum(m.num_rows for m in footers)


def check_columns(path: str, fields: tuple[str, ...]) -> None:
    """Fail with the missing column names before any rank starts reading."""
    footers = _footers(path)
    if not footers:
        raise FileNotFoundError(f"no Parquet files under {path}: is it a `clickweight score` output?")
    present = set(footers[0].schema.to_arrow_schema().names)
    missing = [f for f in fields if f not in present]
    if missing and set(missing) <= set(MODEL_INPUT_COLUMNS):
        raise UserError(f"{path} has no token ids on its rows ({missing}): it was scored for the pair table "
                        "(output.row_model_inputs=auto with train.compact_pairs=true). Train on the pair table "
                        "(train.compact_pairs=true, the default), or re-run `clickweight score` with "
                        "--set output.row_model_inputs=true")
    if missing:
        raise UserError(f"{path} lacks training column(s) {missing}: re-run `clickweight score` on it")


def dataset_row_groups(path: str) -> int:
    return sum(m.num_row_groups for m in _footers(path))


def petastorm_seed(seed: int) -> int:
    """A seed petastorm honours: its ventilator treats seed 0 as "unseeded" and shuffles row groups
    with the global NumPy RNG, so epoch 0 of seed 0 was read in a different order on every run (and a
    resumed run replayed different batches). Maps any int into [1, 2**31 - 1]."""
    return seed % (2**31 - 1) + 1


def make_reader(path: str, rank: int, world: int, seed: int, fields: tuple[str, ...], pool: str = "dummy"):
    """A one-epoch petastorm batch reader over this rank's row groups, in a seeded shuffled order."""
    import warnings

    from petastorm import make_batch_reader

    # petastorm 0.13.1 uses pyarrow's legacy dataset API, which warns on every construction.
    warnings.filterwarnings("ignore", category=FutureWarning, module="petastorm")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="petastorm")
    warnings.filterwarnings("ignore", message="schema_fields behavior has changed")
    return make_batch_reader(
        dataset_url(path), schema_fields=list(fields), num_epochs=1,
        shuffle_row_groups=True, seed=petastorm_seed(seed), cur_shard=rank, shard_count=world,
        reader_pool_type=pool, workers_count=2 if pool == "thread" else 1,
        filesystem=_petastorm_filesystem(path),
    )


def _petastorm_filesystem(path: str):
    """None (petastorm's own resolver) for local paths, file: and hdfs:// URLs; for any other scheme
    (s3://, s3a://, gs://, ...) this reader's fsspec filesystem, as a legacy pyarrow filesystem.

    petastorm 0.13.1 gives pyarrow 14's ParquetDataset a bare fsspec filesystem for those schemes,
    and pyarrow then takes its new Dataset API, which rejects petastorm's `validate_schema=False`
    ("Keyword 'validate_schema' is not yet supported with the new Dataset API"): only a
    `pyarrow.filesystem.FileSystem` keeps the legacy API. It is also the filesystem the guard's
    footer count uses (same fsspec options: AWS_ENDPOINT_URL_S3, FSSPEC_S3_* config)."""
    url = dataset_url(path)
    if url.split("://", 1)[0].lower() in ("file", "hdfs"):
        return None
    return _legacy_filesystem(filesystem(url)[0])


def _legacy_filesystem(fs):
    import warnings

    from pyarrow.filesystem import DaskFileSystem

    class FsspecLegacyFileSystem(DaskFileSystem):
        """pyarrow's wrapper of an fsspec filesystem, with the isdir/isfile it leaves unimplemented."""

        def isdir(self, path):
            return self.fs.isdir(path)

        def isfile(self, path):
            return self.fs.isfile(path)

        def __reduce__(self):  # a local class: pickle (petastorm's process pool) rebuilds it by this function
            return _legacy_filesystem, (self.fs,)

    with warnings.catch_warnings():  # "DaskFileSystem/S3FSWrapper are deprecated": the legacy API is the point
        warnings.simplefilter("ignore", FutureWarning)
        return FsspecLegacyFileSystem(fs)


def iter_shard(path: str, rank: int, world: int, seed: int, fields: tuple[str, ...],
               pool: str = "dummy") -> Iterator[dict[str, np.ndarray]]:
    """Column batches (dicts of numpy arrays) of one rank's shard, one pass."""
    reader = make_reader(path, rank, world, seed, fields, pool)
    try:
        for batch in reader:
            yield {f: np.asarray(getattr(batch, f)) for f in fields}
    finally:  # not `with`: its __exit__ prints a cache message on every pass
        reader.stop()
        reader.join()


def is_eval(query_bucket: np.ndarray, eval_fraction: float) -> np.ndarray:
    return np.asarray(query_bucket) < int(round(eval_fraction * EVAL_BUCKETS))


def shard_train_rows(path: str, rank: int, world: int, eval_fraction: float, pool: str = "dummy") -> tuple[int, int]:
    """(train rows, total rows) in this rank's shard: a cheap pass over one int column."""
    train = total = 0
    for b in iter_shard(path, rank, world, seed=0, fields=("query_bucket",), pool=pool):
        n = len(b["query_bucket"])
        total += n
        train += int(n - is_eval(b["query_bucket"], eval_fraction).sum())
    return train, total


class ShuffleBuffer:
    """Row-level shuffling across row-group batches with a seeded RNG (reproducible on resume)."""

    def __init__(self, capacity: int, rng: np.random.Generator):
        self.capacity = capacity
        self.rng = rng
        self.parts: list[dict[str, np.ndarray]] = []
        self.size = 0

    def add(self, batch: dict[str, np.ndarray]) -> None:
        self.parts.append(batch)
        self.size += len(next(iter(batch.values())))

    def _merged(self) -> dict[str, np.ndarray]:
        keys = self.parts[0].keys()
        merged = {k: np.concatenate([p[k] for p in self.parts]) for k in keys}
        self.parts = [merged]
        return merged

    def take(self, n: int, final: bool = False) -> Iterator[dict[str, np.ndarray]]:
        """Yield batches of n rows while the buffer holds more than its capacity (or all, if final)."""
        while self.size >= n and (final or self.size > self.capacity):
            merged = self._merged()
            pick = self.rng.choice(self.size, size=n, replace=False)
            keep = np.ones(self.size, dtype=bool)
            keep[pick] = False
            yield {k: v[pick] for k, v in merged.items()}
            self.parts = [{k: v[keep] for k, v in merged.items()}]
            self.size -= n


class QueryBatchBuffer(ShuffleBuffer):
    """Batches of whole queries for the listwise objective: while the buffer holds more than its
    capacity, the buffered rows are grouped by `key`, the groups shuffled (seeded), and batches of up
    to n rows packed from whole groups. A query with more than n pairs is cut into chunks of n.
    Every row goes into exactly one batch; on the final call the remainder goes out too, in batches
    that may be smaller than n. The pair table keeps a query's pairs in one file, sorted, so a query
    arrives whole unless a row group boundary cuts it: its two parts then train as two lists."""

    def __init__(self, capacity: int, rng: np.random.Generator, key: str):
        super().__init__(capacity, rng)
        self.key = key

    def take(self, n: int, final: bool = False) -> Iterator[dict[str, np.ndarray]]:
        if not self.size or not (final or self.size > self.capacity):
            return
        merged = self._merged()
        _, group = np.unique(merged[self.key], return_inverse=True)
        order = np.argsort(group, kind="stable")
        starts = np.r_[0, np.cumsum(np.bincount(group))]
        chunks = [order[a:b][i:i + n] for a, b in zip(starts[:-1], starts[1:]) for i in range(0, b - a, n)]
        chunks = [chunks[i] for i in self.rng.permutation(len(chunks))]
        batches, current, rows = [], [], 0
        for chunk in chunks:
            if rows + len(chunk) > n:
                batches.append(np.concatenate(current))
                current, rows = [], 0
            current.append(chunk)
            rows += len(chunk)
        if current:
            batches.append(np.concatenate(current))
        # Keep back about half the buffer (the groups of the last batches) to mix with what comes next.
        emit = batches if final else batches[:max(1, len(batches) - self.capacity // (2 * max(n, 1)))]
        for pick in emit:
            yield {k: v[pick] for k, v in merged.items()}
        kept = np.concatenate(batches[len(emit):]) if len(emit) < len(batches) else np.zeros(0, dtype=np.int64)
        self.parts = [{k: v[kept] for k, v in merged.items()}]
        self.size = len(kept)


def training_fields(input_columns: tuple[str, ...], compact_pairs: bool, objective: str = "pointwise",
                    position_tower: bool = False) -> tuple[str, ...]:
    """The trainee's input columns plus the targets of the row or pair table (and the query key the
    listwise objective groups by, the per-position columns the position tower trains on)."""
    listwise = (QUERY_KEY,) if objective == "listwise" else ()
    tower = POSITION_COLUMNS if position_tower else ()
    return (*input_columns, *(PAIR_TARGET_COLUMNS if compact_pairs else ROW_TARGET_COLUMNS), *listwise, *tower)
