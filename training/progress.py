"""Rank 0's console progress for one epoch: a tqdm bar on a terminal; elsewhere (CI, a cluster log,
TorchDistributor's piped output) a plain line at most every `every_s` seconds and at the end."""
from __future__ import annotations

import sys
import time
from typing import TextIO


def clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


class EpochProgress:
    def __init__(self, label: str, total: int, done: int, rows_per_step: int, enabled: bool,
                 every_s: float = 10.0, stream: TextIO | None = None):
        self.label, self.total, self.done, self.rows_per_step = label, total, done, rows_per_step
        self.enabled, self.every_s, self.stream = enabled, every_s, stream or sys.stderr
        self.start = self.last = time.monotonic()
        self.first = done
        self.losses: list[float] = []
        self.bar = None
        if enabled and self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, desc=label, unit="step", file=self.stream, dynamic_ncols=True)

    def line(self, now: float) -> str:
        made = self.done - self.first
        rate = made / max(now - self.start, 1e-9)
        loss = sum(self.losses[-50:]) / len(self.losses[-50:]) if self.losses else float("nan")
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        return (f"[clickweight train] {self.label} step {self.done}/{self.total} ({100 * self.done / self.total:.0f}%) "
                f"loss {loss:.4f}  {rate * self.rows_per_step:.0f} rows/s  elapsed {clock(now - self.start)}  "
                f"eta {clock(eta)}")

    def update(self, loss: float) -> None:
        if not self.enabled:
            return
        self.done += 1
        self.losses.append(loss)
        now = time.monotonic()
        if self.bar is not None:
            self.bar.update(1)
            rows_s = (self.done - self.first) * self.rows_per_step / max(now - self.start, 1e-9)
            self.bar.set_postfix(loss=f"{loss:.4f}", rows_s=f"{rows_s:.0f}")
        elif now - self.last >= self.every_s or self.done == self.total:
            self.last = now
            print(self.line(now), file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
