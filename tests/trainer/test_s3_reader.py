"""The trainer's reader over a real S3 API: a moto server on 127.0.0.1, reached through s3:// URLs.

The endpoint is given the standard way (AWS_ENDPOINT_URL_S3, honoured by botocore >= 1.31), so both
paths to S3 pick it up with no code or config of ours: fsspec's `url_to_fs` (row counts, file lists,
footers) and petastorm 0.13.1's FilesystemResolver (which builds `s3fs.S3FileSystem()` itself).
Credentials are fake and every other AWS lookup (profiles, config files, EC2 metadata) is switched off.
"""
from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import tiny_overrides

from jobs import config
from jobs.generate import generate, write
from jobs.score import run_score
from training.reader import (
    ReaderGuardError,
    check_rows_read,
    data_files,
    dataset_rows,
    file_sizes,
    iter_shard,
    read_text,
    training_table,
)

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

BUCKET = "clickweight-test"
PREFIX = "runs/weighted"
ROWS = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_moto(log: Path) -> tuple[subprocess.Popen, str]:
    """moto's standalone server in a child process on a free 127.0.0.1 port; (process, endpoint URL)."""
    for _ in range(3):  # a port taken between _free_port() and the server's bind: try another
        port = _free_port()
        with open(log, "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                    stdout=out, stderr=subprocess.STDOUT)
        endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                    return proc, endpoint
            except OSError:
                time.sleep(0.2)
        proc.kill()
        proc.wait()
    raise RuntimeError(f"moto server did not start; its log: {log.read_text()[-2000:]}")


def _clear_s3fs_cache() -> None:
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # no client bound to another test's endpoint survives


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A running moto S3 server and an environment pointing at it (fake credentials, no AWS lookups)."""
    home = tmp_path_factory.mktemp("s3home")
    proc, endpoint = _start_moto(home / "moto.log")
    try:
        with pytest.MonkeyPatch.context() as mp:
            for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                        "AWS_ENDPOINT_URL", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "AWS_ROLE_ARN",
                        "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                        "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
                mp.delenv(var, raising=False)
            mp.setenv("AWS_ACCESS_KEY_ID", "testing")
            mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
            mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
            mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
            mp.setenv("AWS_CONFIG_FILE", str(home / "no-config"))
            mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "no-credentials"))
            mp.setenv("AWS_ENDPOINT_URL_S3", endpoint)
            _clear_s3fs_cache()
            try:
                yield endpoint
            finally:
                _clear_s3fs_cache()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def local_output(spark, tiny_model_dir, tmp_path_factory) -> Path:
    """A real score output on local disk (scored before any AWS variable is set)."""
    raw = tmp_path_factory.mktemp("raw") / "data"
    write(generate(rows=ROWS, days=2, seed=11, malformed_fraction=0.0), str(raw))
    out = tmp_path_factory.mktemp("w") / "weighted"
    run_score(spark, f"{raw}/clickstream", str(out), config.load_config(overrides=tiny_overrides(tiny_model_dir)))
    return out


@pytest.fixture(scope="module")
def local_and_url(local_output, s3) -> tuple[str, str]:
    """The score output's local path, and the same folder uploaded whole to s3://BUCKET/PREFIX."""
    import boto3
    import s3fs

    out = local_output
    boto3.client("s3").create_bucket(Bucket=BUCKET)  # endpoint from AWS_ENDPOINT_URL_S3, like everything else
    fs = s3fs.S3FileSystem()
    fs.put(f"{out}/", f"{BUCKET}/{PREFIX}/", recursive=True)
    fs.invalidate_cache()
    local_files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    remote_files = sorted(f[len(f"{BUCKET}/{PREFIX}/"):] for f in fs.find(f"{BUCKET}/{PREFIX}"))
    assert remote_files == local_files
    assert any(f.startswith("_pairs/") for f in remote_files) and "_summary.json" in remote_files
    assert "_clickweight.json" in remote_files
    return str(out), f"s3://{BUCKET}/{PREFIX}"


def test_the_bucket_lives_on_the_local_server_only(s3, local_and_url):
    """The endpoint variable is what routes the reads: the moto server holds the bucket."""
    import json

    with urllib.request.urlopen(f"{s3}/moto-api/data.json", timeout=10) as resp:
        state = json.load(resp)
    assert BUCKET in json.dumps(state.get("s3", {}))


def test_footers_and_files_agree_with_the_local_copy(local_and_url):
    local, url = local_and_url
    assert dataset_rows(url) == dataset_rows(local) == ROWS
    remote = [f.split(f"{PREFIX}/", 1)[1] for f in data_files(url)]
    here = [str(Path(f).relative_to(Path(local).resolve())) for f in data_files(local)]
    assert remote == here and len(remote) >= 2
    assert file_sizes(url) == file_sizes(local)
    pairs_url, pairs_local = training_table(url, True), training_table(local, True)
    assert pairs_url == f"{url}/_pairs"
    assert dataset_rows(pairs_url) == dataset_rows(pairs_local) > 0
    assert read_text(f"{url}/_summary.json") == (Path(local) / "_summary.json").read_text()
    assert read_text(f"{url}/_clickweight.json") == (Path(local) / "_clickweight.json").read_text()
    assert read_text(f"{url}/no-such-file.json") is None


def _read_ranks(path: str, fields: tuple[str, ...]) -> list[list[dict]]:
    return [list(iter_shard(path, rank, 2, seed=3, fields=fields)) for rank in (0, 1)]


def _rows(batches: list[dict], field: str) -> list:
    return [v.tolist() if hasattr(v, "tolist") else v for b in batches for v in b[field]]


@pytest.mark.parametrize("compact_pairs", [True, False], ids=["pairs", "rows"])
def test_every_rank_streams_its_whole_shard_over_s3(local_and_url, compact_pairs):
    local, url = local_and_url
    path_url, path_local = training_table(url, compact_pairs), training_table(local, compact_pairs)
    fields = ("query_bucket", "weight", "p_model") + (("impressions", "clicks") if compact_pairs else ("clicked",))
    remote, here = _read_ranks(path_url, fields), _read_ranks(path_local, fields)
    counts_url = [sum(len(b["weight"]) for b in r) for r in remote]
    counts_local = [sum(len(b["weight"]) for b in r) for r in here]
    assert all(counts_url), counts_url  # both ranks got row groups
    assert counts_url == counts_local  # same row groups per rank as the local read
    assert sum(counts_url) == sum(counts_local) == dataset_rows(path_url) == dataset_rows(path_local)
    assert check_rows_read(sum(counts_url), path_url, "s3 read") == sum(counts_local)
    for rank in (0, 1):  # and the same rows, not just as many
        assert sorted(zip(*(_rows(remote[rank], f) for f in fields))) == \
            sorted(zip(*(_rows(here[rank], f) for f in fields)))


def test_the_guard_fails_a_short_read_over_s3(local_and_url):
    _, url = local_and_url
    path = training_table(url, compact_pairs=False)
    batches = [b for rank in (0, 1) for b in iter_shard(path, rank, 2, seed=0, fields=("weight",))]
    assert len(batches) >= 2
    full = sum(len(b["weight"]) for b in batches)
    short = full - len(batches[-1]["weight"])  # one batch lost, as petastorm's pool race does
    assert check_rows_read(full, path, "s3 read") == full
    message = f"read {short} rows but the Parquet footers of {path} hold {full}"
    with pytest.raises(ReaderGuardError, match=re.escape(message)):
        check_rows_read(short, path, "s3 read")
