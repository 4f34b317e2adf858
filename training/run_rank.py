"""Entry point of one torchrun rank: python -m training.run_rank INPUT OUTPUT CONFIG_JSON."""
from __future__ import annotations

import json
import sys

from training.recipe import train_worker

if __name__ == "__main__":
    input_dir, output_dir, cfg_path = sys.argv[1:4]
    with open(cfg_path) as f:
        train_worker(input_dir, output_dir, json.load(f))
