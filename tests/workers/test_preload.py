"""A prediction worker loads its models once, in its main process, before the pool forks, and
gives each predict one BLAS/OpenMP thread."""

from __future__ import annotations

import re
import time
from pathlib import Path

from sqlalchemy import Engine

from service.core.settings import Settings
from service.models.registry import ModelInfo
from tests.support.processes import WorkerProcess


def test_the_worker_is_ready_with_its_models_loaded_and_its_pool_starts_with_them(
    settings: Settings, engine: Engine, models: dict[str, ModelInfo], tmp_path: Path
) -> None:
    worker = WorkerProcess(settings, tmp_path / "worker.log")  # returns once it logged ready.
    try:
        pool = re.compile(r"pool process \d+: (\d+) model versions loaded here")
        deadline = time.monotonic() + 30
        while len(pool.findall(worker.log_path.read_text())) < 2:  # concurrency 2
            assert time.monotonic() < deadline, worker.log_path.read_text()[-3000:]
            time.sleep(0.1)
        log = worker.log_path.read_text()
        preloaded = re.search(r"preloaded (\d+) model versions before starting the pool", log)
        assert preloaded is not None, log[-3000:]
        assert int(preloaded.group(1)) >= 1  # (the session's models, and any other test's)
        assert preloaded.start() < log.index("ready.")  # ready means loaded
        assert pool.findall(log) == ["0", "0"]  # nothing left to load in a pool process
        # One BLAS/OpenMP thread per pool process (model_threads): a process per core already.
        threads = re.findall(r"process (\d+): model threads: (.*)", log)
        assert len({pid for pid, _ in threads}) == 3, log[-3000:]  # main and both pool processes
        for _, pools in threads:
            counts = re.findall(r"\w+ (\d+)", pools)
            assert counts and set(counts) == {"1"}, pools
    finally:
        worker.stop()
