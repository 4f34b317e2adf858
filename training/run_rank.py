"""Entry point of one torchrun rank: python -m training.run_rank INPUT OUTPUT CONFIG_JSON."""
from __future__ import annotations

import json
import os
import sys

from training.recipe import train_worker

if __name__ == "__main__":
    input_dir, output_dir, cfg_path = sys.argv[1:4]
    with open(cfg_path) as f:
        train_worker(input_dir, output_dir, json.load(f))
    # Everything is written and the process group is destroyed. Skip interpreter teardown: a rank
    # sometimes aborted there ("terminate called without an active exception", SIGABRT from a
    # native thread pool's destructor) after a complete run, which torchrun reports as a failure.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
