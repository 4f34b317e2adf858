"""`clickweight package`: this virtual environment as one archive, for executors that lack the packages.

Executors run the scoring UDFs and the DDP ranks, so they need torch, transformers, pyarrow, the model
package and clickweight itself. Where the cluster's nodes do not have them, ship them with the job:

    .venv/bin/clickweight package --output clickweight-env.tar.gz
    spark-submit --master spark://HOST:7077 --archives clickweight-env.tar.gz#env \\
        --conf spark.pyspark.python=./env/bin/python \\
        --conf spark.pyspark.driver.python=.venv/bin/python \\
        jobs/score.py --input ... --output ...

The archive is the venv as venv-pack packs it (scripts' shebangs made relative, pyvenv.cfg kept), with
two changes that make it work away from this machine:
- an editable clickweight (`pip install -e .`, as .ci/bootstrap.sh installs it) is a path hook into
  this checkout, which no executor has: the hook is left out and the package's files go in instead;
- pyspark's jars are left out (an executor's Python worker runs inside the cluster's own Spark and
  imports pyspark from it), which halves the archive; `--keep-spark-jars` keeps them.

The venv's python is a link to the interpreter it was made from (`home` in pyvenv.cfg): executors need
that interpreter at the same path, or `--python-prefix` naming where it lives on them. torch is packed as
installed here: build the archive on a machine with the cluster's torch build (CUDA or CPU).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from udfs.errors import UserError

PACKAGES = ("jobs", "udfs", "training", "conf")  # setup.py's packages
SOURCE_SUFFIXES = (".py", ".yaml", ".sh", ".properties")  # setup.py's package_data: conf/*.yaml, .sh, .properties
# Excluded from every archive: the editable install's path hook and its record of the checkout.
EDITABLE_HOOKS = ("*/site-packages/__editable__*clickweight*", "*/site-packages/__pycache__/__editable__*clickweight*",
                  "*/site-packages/clickweight-*.dist-info/direct_url.json")
SPARK_JARS = "*/site-packages/pyspark/jars/*"


def package_files(site_packages: str, prefix: str) -> list[tuple[str, str]]:
    """(source, target in the archive) for clickweight's own files, when they live outside the venv
    (an editable install); none when a regular install already put them in site-packages."""
    files = []
    for name in PACKAGES:
        folder = Path(importlib.import_module(name).__file__).resolve().parent
        if folder.is_relative_to(Path(prefix).resolve()):
            continue
        for f in sorted(folder.rglob("*")):
            if f.is_file() and f.suffix in SOURCE_SUFFIXES and "__pycache__" not in f.parts:
                files.append((str(f), os.path.join(site_packages, name, str(f.relative_to(folder)))))
    return files


def build(output: str, keep_spark_jars: bool = False, compress_level: int = 4, python_prefix: str | None = None,
          force: bool = False) -> dict:
    """Packs sys.prefix (a venv) into `output` (.tar.gz, .tgz or .zip); returns what went in."""
    try:
        import venv_pack
        from venv_pack.core import File
    except ImportError:
        raise UserError("clickweight package needs venv-pack: pip install 'venv-pack==0.2.0'") from None

    if Path(output).exists() and not force:  # before the venv is scanned (seconds)
        raise UserError(f"{output} exists: pass --overwrite to replace it")
    if sys.prefix == sys.base_prefix:
        raise UserError(f"{sys.executable} is not a virtual environment's python: run `clickweight package` "
                        "from the venv the job runs in (e.g. .venv/bin/clickweight package)")
    try:
        env = venv_pack.Env(sys.prefix)
    except venv_pack.VenvPackException as exc:
        raise UserError(f"cannot pack {sys.prefix}: {exc}") from None
    for pattern in EDITABLE_HOOKS + (() if keep_spark_jars else (SPARK_JARS,)):
        env = env.exclude(pattern)
    lib = next(Path(sys.prefix, "lib").glob("python3*")).name
    site_packages = os.path.join("lib", lib, "site-packages")
    ours = [File(src, dst) for src, dst in package_files(site_packages, sys.prefix)]
    env = env._copy_with_files(list(env.files) + ours, list(env._excluded_files))
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    try:
        env.pack(output=output, compress_level=compress_level, python_prefix=python_prefix, force=True)
    except venv_pack.VenvPackException as exc:
        raise UserError(f"cannot pack {sys.prefix}: {exc}") from None
    return {"output": str(Path(output).resolve()), "prefix": sys.prefix, "files": len(env.files),
            "clickweight_files_added": len(ours), "spark_jars": keep_spark_jars,
            "bytes": Path(output).stat().st_size}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="clickweight package", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--output", default="clickweight-env.tar.gz", help=".tar.gz, .tgz or .zip")
    p.add_argument("--keep-spark-jars", action="store_true",
                   help="also pack pyspark/jars (only needed where the archive's pyspark is the cluster's Spark)")
    p.add_argument("--compress-level", type=int, default=4, choices=range(10), metavar="0..9")
    p.add_argument("--python-prefix", help="where the base interpreter lives on the executors, if not where it "
                   "lives here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    args = p.parse_args(argv)
    info = build(args.output, args.keep_spark_jars, args.compress_level, args.python_prefix, args.overwrite)
    print(f"packed {info['files']} files ({info['bytes'] / 2**20:.0f} MiB) into {info['output']}")
    print(f"ship it: spark-submit --archives {info['output']}#env --conf spark.pyspark.python=./env/bin/python "
          f"--conf spark.pyspark.driver.python={sys.executable} ...")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
