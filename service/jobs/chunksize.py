"""How many rows a bulk chunk of a model holds: as many as its predict takes about
`bulk_chunk_seconds` (0.25 s) on, from the model version's measured cost per row
(service/models/costs.py). The API reads it when it cuts an upload into chunks or plans the
chunks of a file by reference; a model with no cost yet gets the largest chunks the settings
allow.

So one chunk of a 300-tree forest takes a quarter of a second, not five: a slot of the bulk
processes frees every fraction of a second, a second tenant's job waits a chunk, not a job,
and a cancel stops within one.
"""

from __future__ import annotations

import threading
import time

from sqlalchemy import Engine, select

from service.store.db import model_costs

MIN_ROWS = 100  # a chunk's rows at least: below, a chunk's own overhead (a commit, a message)
#                 would outweigh its predict


def rows_for(per_row: float | None, target_seconds: float, most: int) -> int:
    """Rows a chunk holds: `target_seconds` of predict at `per_row` each, within
    [MIN_ROWS, most] (`most` when the cost is not known)."""
    if not per_row or per_row <= 0:
        return most
    return max(min(MIN_ROWS, most), min(most, int(target_seconds / per_row)))


class ChunkSizer:
    """Per process: chunk rows by model, the costs re-read at most every `refresh` seconds."""

    def __init__(self, engine: Engine, target_seconds: float, refresh: float = 10.0) -> None:
        self.engine, self.target, self.refresh = engine, target_seconds, refresh
        self._costs: dict[int, tuple[float, float | None]] = {}
        self._lock = threading.Lock()

    def rows(self, model_id: int, most: int) -> int:
        return rows_for(self.cost(model_id), self.target, most)

    def cost(self, model_id: int) -> float | None:
        now = time.monotonic()
        with self._lock:
            hit = self._costs.get(model_id)
        if hit is not None and now - hit[0] < self.refresh:
            return hit[1]
        with self.engine.connect() as conn:
            value = conn.execute(select(model_costs.c.seconds_per_row).where(
                model_costs.c.model_id == model_id)).scalar()
        with self._lock:
            self._costs[model_id] = (now, value)
        return value
