"""Fault injection for the tests, kept out of product code.

A Python process started with this folder on PYTHONPATH (a Spark Python worker, a DDP rank, an
executor) imports this file at start-up. When one of the variables below is set, it wraps the real
clickweight function as its module is imported, so the product runs unchanged around the fault:

- CLICKWEIGHT_FAULT_ONCE=<marker path>: the first scoring task to start (`get_scorer`) writes the
  marker and kills its Python worker (os._exit), once; Spark must retry the task.
- CLICKWEIGHT_TASK_DELAY_S=<s>: every scoring task waits that long first (a test's window to act).
- CLICKWEIGHT_FAULT_RANK=<rank>:<step>: that DDP rank exits right after that global step.
- CLICKWEIGHT_STEP_DELAY_S=<s>: every training step takes that much longer.

tests/conftest.py `fault_env` puts this folder on the path.
"""
from __future__ import annotations

import importlib.abc
import os
import sys
import time

VARIABLES = ("CLICKWEIGHT_FAULT_ONCE", "CLICKWEIGHT_TASK_DELAY_S", "CLICKWEIGHT_FAULT_RANK",
             "CLICKWEIGHT_STEP_DELAY_S")


def _wrap_scoring(module) -> None:
    real = module.get_scorer

    def get_scorer(settings):
        delay = float(os.environ.get("CLICKWEIGHT_TASK_DELAY_S") or 0)
        if delay > 0:
            time.sleep(delay)
        marker = os.environ.get("CLICKWEIGHT_FAULT_ONCE")
        if marker and not os.path.exists(marker):
            with open(marker, "w") as f:
                f.write("fault injected\n")
            os._exit(17)
        return real(settings)

    module.get_scorer = get_scorer


def _wrap_recipe(module) -> None:
    real = module.WeightedFinetuneRecipe._step

    def _step(self, batch):
        loss = real(self, batch)
        delay = float(os.environ.get("CLICKWEIGHT_STEP_DELAY_S") or 0)
        if delay:
            time.sleep(delay)
        if os.environ.get("CLICKWEIGHT_FAULT_RANK") == f"{self.rank}:{self.state.global_step + 1}":
            print(f"[clickweight train] fault injected: rank {self.rank} exits after step "
                  f"{self.state.global_step + 1}", flush=True)
            os._exit(17)
        return loss

    module.WeightedFinetuneRecipe._step = _step


WRAPPERS = {"udfs.scoring.bert": _wrap_scoring, "training.recipe": _wrap_recipe}


class _WrapOnImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: lets the normal finders load a wrapped module, then wraps it."""

    def find_spec(self, name, path, target=None):
        if name not in WRAPPERS:
            return None
        sys.meta_path.remove(self)
        try:
            from importlib.util import find_spec
            spec = find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return None
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_and_wrap(module):
            exec_module(module)
            WRAPPERS[name](module)

        loader.exec_module = exec_and_wrap
        return spec


if any(os.environ.get(v) for v in VARIABLES):
    sys.meta_path.insert(0, _WrapOnImport())
