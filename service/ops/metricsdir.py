"""The directory in which predq's processes share their Prometheus samples.

prometheus_client decides when it is first imported whether to write samples to files
(multiprocess mode), so `PROMETHEUS_MULTIPROC_DIR` must be in a process's environment before it
starts: the CLI exports it before it execs gunicorn or celery, and `predq up` hands it to its
children. This module does not import prometheus_client.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


def export(directory: str, clean: bool = False) -> dict[str, str]:
    """Create `directory`, set it in this process's environment (for the processes it starts)
    and return it as {ENV: path}; `clean` removes the samples of processes of an earlier run.
    An empty `directory` leaves multiprocess mode off."""
    if not directory:
        return {}
    path = Path(directory).resolve()
    path.mkdir(parents=True, exist_ok=True)
    if clean:
        for stale in path.glob("*.db"):
            stale.unlink(missing_ok=True)
    os.environ[ENV] = str(path)
    return {ENV: str(path)}
