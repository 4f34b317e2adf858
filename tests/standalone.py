"""A real Spark standalone cluster on 127.0.0.1 for the cluster tests: master and workers from the
installed pyspark, spark-submit against it, every process stopped by PID (tree) on close."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# spark-submit confs for jobs/train.py with train.local_mode=false: a barrier stage that cannot get its
# slots fails at once instead of retrying for 10 minutes.
BARRIER = ("--conf", "spark.scheduler.barrier.maxConcurrentTasksCheck.interval=1s",
           "--conf", "spark.scheduler.barrier.maxConcurrentTasksCheck.maxFailures=2")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for(cond, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a process we started and everything below it (executor JVM, Python workers)."""
    try:
        kids = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        kids = []
    for p in kids:
        try:
            p.kill()
        except psutil.Error:
            pass
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)


class StandaloneCluster:
    """`with StandaloneCluster(tmp_path, workers=2) as c: c.submit(...)`; logs go to tmp_path/NAME.log."""

    def __init__(self, tmp: Path, workers: int = 2, python: str = sys.executable):
        """`python`: the workers' default Python (PYSPARK_PYTHON); a job's spark.pyspark.python overrides it."""
        self.tmp, self.n_workers = tmp, workers
        self.work = tmp / "work"  # executor logs: work/app-*/<executor>/std{out,err}
        self.env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_MASTER_HOST": "127.0.0.1",
                    "PYSPARK_PYTHON": python, "PYSPARK_DRIVER_PYTHON": sys.executable,
                    "SPARK_WORKER_DIR": str(self.work)}
        self.port, self.ui = free_port(), free_port()
        self.url = f"spark://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []
        self.workers: list[subprocess.Popen] = []
        self._logs: list = []

    def __enter__(self) -> StandaloneCluster:
        try:
            self._start("master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                                   "--port", str(self.port), "--webui-port", str(self.ui)])
            wait_for(lambda: listening(self.port), 60, "the master")
            for i in range(self.n_workers):
                self.add_worker(f"worker{i + 1}")
            self.wait_workers(self.n_workers)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "wb")
        self._logs.append(log)
        proc = subprocess.Popen([str(BIN / "spark-class"), *args], env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def add_worker(self, name: str) -> subprocess.Popen:
        worker = self._start(name, ["org.apache.spark.deploy.worker.Worker", self.url, "--host", "127.0.0.1",
                                    "--cores", "1", "--memory", "2g", "--webui-port", str(free_port())])
        self.workers.append(worker)
        return worker

    def alive_workers(self) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ui}/json/", timeout=2) as r:
                return int(json.load(r).get("aliveworkers", 0))
        except (OSError, ValueError):  # not up yet; while the master starts, /json/ can answer with an HTML page
            return 0

    def wait_workers(self, n: int, timeout: float = 90) -> None:
        wait_for(lambda: self.alive_workers() == n, timeout, f"{n} registered workers")

    def submit(self, name: str, script: str, args: list[str], *conf: str) -> subprocess.Popen:
        """spark-submit `script` (a path under the repository) with `args`; stdout/stderr to NAME.out/.err."""
        cmd = [str(BIN / "spark-submit"), "--master", self.url, "--conf", "spark.driver.host=127.0.0.1",
               "--conf", "spark.driver.bindAddress=127.0.0.1", "--conf", "spark.executor.memory=1g",
               "--conf", "spark.executor.cores=1", "--conf", f"spark.pyspark.python={sys.executable}",
               *conf, str(ROOT / script), *args]
        proc = subprocess.Popen(cmd, env=self.env, stdout=open(self.tmp / f"{name}.out", "wb"),
                                stderr=open(self.tmp / f"{name}.err", "wb"))
        self.procs.append(proc)
        return proc

    def stderr(self, name: str) -> str:
        return (self.tmp / f"{name}.err").read_text(errors="replace")

    def output(self, name: str) -> str:
        """stdout and stderr together (the driver's Python traceback lands in stdout under spark-submit)."""
        return (self.tmp / f"{name}.out").read_text(errors="replace") + self.stderr(name)

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                kill_tree(proc)
        for log in self._logs:
            log.close()
