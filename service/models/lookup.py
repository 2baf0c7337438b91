"""Model versions by name, cached per process: what every submit resolves first."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from sqlalchemy import Engine

from service.models import registry, rollouts
from service.models.registry import ModelInfo
from service.models.rollouts import Rollout


@dataclass(frozen=True)
class Routed:
    """The version a job gets, and the shadow version it also runs on (None: none)."""

    model: ModelInfo
    shadow: ModelInfo | None = None


class ModelLookup:
    """Model signatures by (name, version). A version never changes once registered, so it is
    cached for good; which version is "latest", and a model's rollout, are re-read after
    `latest_ttl` seconds (a rollout change reaches every process within that time)."""

    def __init__(self, engine: Engine, latest_ttl: float = 2.0) -> None:
        self._engine = engine
        self._ttl = latest_ttl
        self._versions: dict[tuple[str, str], ModelInfo] = {}
        self._latest: dict[str, tuple[float, ModelInfo]] = {}
        self._rollouts: dict[str, tuple[float, Rollout | None]] = {}
        self._lock = threading.Lock()

    def resolve(self, name: str, version: str | None) -> ModelInfo:
        now = time.monotonic()
        with self._lock:
            if version is None:
                hit = self._latest.get(name)
                if hit and now - hit[0] < self._ttl:
                    return hit[1]
                if hit:  # one request re-reads "latest"; the others use the last until it has
                    self._latest[name] = (now, hit[1])
            elif (name, version) in self._versions:
                return self._versions[(name, version)]
        with self._engine.connect() as conn:
            info = registry.resolve(conn, name, version)
        with self._lock:
            self._versions[(info.name, info.version)] = info
            if version is None:
                self._latest[name] = (now, info)
        return info

    def route(self, name: str, version: str | None, seed: str) -> Routed:
        """The version a job of `name` gets: the one it names, else its rollout's choice for
        `seed` (and a shadow, if it falls in the shadow's share), else the latest."""
        if version is not None:
            return Routed(self.resolve(name, version))
        latest = self.resolve(name, None)  # an unknown name raises here, and is not cached
        rollout = self.rollout(name)
        if rollout is None:
            return Routed(latest)
        chosen = rollout.choose(seed)
        shadow = rollout.shadowed(seed, chosen)
        return Routed(self.resolve(name, chosen),
                      None if shadow is None else self.resolve(name, shadow))

    def rollout(self, name: str) -> Rollout | None:
        """`name`'s rollout as this process last read it (at most `latest_ttl` seconds ago);
        `name` is a registered model's (`route` resolves it first)."""
        now = time.monotonic()
        with self._lock:
            hit = self._rollouts.get(name)
            if hit and now - hit[0] < self._ttl:
                return hit[1]
            if hit:
                self._rollouts[name] = (now, hit[1])
        with self._engine.connect() as conn:
            found = rollouts.get(conn, name)
        with self._lock:
            self._rollouts[name] = (now, found)
        return found

    def forget_rollout(self, name: str) -> None:
        """This process changed `name`'s rollout: its next job reads it again."""
        with self._lock:
            self._rollouts.pop(name, None)
