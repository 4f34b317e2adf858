"""The `clickweight` command: one subcommand per job; each job is also spark-submit-able from jobs/."""
from __future__ import annotations

import importlib
import sys
import traceback
from collections.abc import Callable

from udfs.errors import UserError

SUBCOMMANDS = {
    "generate": ("jobs.generate", "synthetic clickstream with hidden true relevance"),
    "score": ("jobs.score", "validate, BERT-score, weight and write a clickstream (Spark)"),
    "train": ("jobs.train", "DDP fine-tuning on a scored output (Petastorm)"),
    "evaluate": ("jobs.evaluate", "AUC / NDCG@10 / log loss of a model on labelled pairs"),
    "pipeline": ("jobs.pipeline", "generate -> score -> train -> evaluate demo with a comparison table"),
    "report": ("jobs.report", "an HTML + markdown report (plots) of a score output, model folder or pipeline"),
    "explain": ("jobs.explain", "why one row of a score output got its weight, formula with its numbers"),
    "package": ("jobs.package", "this venv as one archive for executors without the packages (venv-pack)"),
}


def usage() -> str:
    lines = ["usage: clickweight {" + ",".join(SUBCOMMANDS) + "} [options]", ""]
    lines += [f"  {name:<10}{doc}" for name, (_, doc) in SUBCOMMANDS.items()]
    lines += ["", "`clickweight SUBCOMMAND --help` lists a subcommand's options."]
    return "\n".join(lines)


def run_job(name: str, job_main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run one subcommand's main: a UserError (bad input, config, path, a refused output) is the user's
    to fix, so it prints as one line and exits 2; CLICKWEIGHT_LOG=DEBUG adds its trace. Any other
    exception is a bug or an infrastructure failure and keeps its traceback."""
    from jobs.common import verbose

    try:
        return int(job_main(argv) or 0)
    except (UserError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        if verbose():
            traceback.print_exc()
        print(f"clickweight {name}: error: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"clickweight: unknown subcommand '{name}'\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    return run_job(name, module.main, rest)


if __name__ == "__main__":
    raise SystemExit(main())
