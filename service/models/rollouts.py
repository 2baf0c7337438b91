"""A model's rollout: how the jobs that name no version share its versions (weights), and which
share of them also runs on a shadow version whose answers are compared, never delivered.

The operator sets it (`PUT /v1/models/{name}/rollout`, `predq models rollout`); every change is
recorded (who, when, from, to). A job's version is chosen once, at submit, from a stable hash
of (tenant, Idempotency-Key) or of the job id (`choose`), and stored on the job as its model
id: a retry of the request (same key) lands on the same version, and a redelivered message
never chooses again. No rollout: the latest registered version, as before.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from service.core.errors import InvalidInput, ModelNotFound
from service.core.times import iso, utcnow
from service.models import registry
from service.models.schema import InputSchema
from service.store.db import model_rollouts, rollout_changes

#: At most this many versions share one rollout (they are also the metrics' version labels).
MAX_VERSIONS = 8


@dataclass(frozen=True)
class Shadow:
    version: str
    percent: float  # of the jobs that follow the rollout, 0..100


@dataclass(frozen=True)
class Rollout:
    """Weights by version (each >= 0, summing to more than 0) and an optional shadow."""

    name: str
    weights: dict[str, float]
    shadow: Shadow | None = None

    def public(self) -> dict[str, Any]:
        total = sum(self.weights.values())
        return {"model": self.name, "weights": dict(self.weights),
                "shares": {v: w / total for v, w in self.weights.items()},
                "shadow": None if self.shadow is None else
                {"version": self.shadow.version, "percent": self.shadow.percent}}

    def choose(self, seed: str) -> str:
        """The version the job with this seed gets: stable, proportional to the weights."""
        point = _unit(seed) * sum(self.weights.values())
        ordered = sorted(self.weights.items())  # the same order however it was stored
        for version, weight in ordered:
            if point < weight:
                return version
            point -= weight
        return next(v for v, w in reversed(ordered) if w > 0)

    def shadowed(self, seed: str, version: str) -> str | None:
        """The shadow version this job also runs on, if it falls in the shadow's share (a
        job already on the shadow version has none)."""
        if self.shadow is None or self.shadow.version == version:
            return None
        return self.shadow.version if _unit("shadow\0" + seed) * 100 < self.shadow.percent \
            else None


def seed_of(tenant: str, key: str | None, job_id: str) -> str:
    """What a job's choice hashes: (tenant, Idempotency-Key) when given, else the job id."""
    return f"{tenant}\0{key}" if key is not None else job_id


def _unit(seed: str) -> float:
    """A stable point in [0, 1) for `seed` (the same in every process and release)."""
    digest = hashlib.sha256(seed.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def parse(conn: Connection, name: str, body: Any) -> Rollout:
    """A rollout of `name` from a request body, every version checked against the registry:
    known, sharing one input schema (a job's rows are validated once, before its version is
    chosen). Each error names its field."""
    if not isinstance(body, dict):
        raise InvalidInput("body", "a JSON object: {\"weights\": {\"1\": 80, \"2\": 20}}")
    unknown = sorted(set(body) - {"weights", "shadow"})
    if unknown:
        raise InvalidInput(str(unknown[0])[:100], "unknown field (weights, shadow)")
    weights = _weights(body.get("weights"))
    shadow = _shadow(body.get("shadow"))
    versions = list(weights) + ([shadow.version] if shadow else [])
    infos = {v: _version(conn, name, v, "shadow.version" if shadow and v == shadow.version
                         and v not in weights else f"weights.{v}") for v in versions}
    schemas = {v: _inputs(info.schema) for v, info in infos.items()}
    first = versions[0]
    for version in versions[1:]:
        if schemas[version] != schemas[first]:
            raise InvalidInput("shadow.version" if version not in weights else f"weights.{version}",
                               f"version {version} takes other inputs than version {first}: "
                               "versions in one rollout must share an input schema")
    return Rollout(name, weights, shadow)


def _inputs(schema: InputSchema) -> str:
    """What versions of one rollout must share: the columns, their types and categories, an
    array or a DataFrame. Numbers-only versions may differ in which columns may be missing
    (their rows are stored alike; a missing value a version cannot take fails that version's
    answer alone); typed ones share everything."""
    if not schema.numeric_only:
        return schema.to_json()
    return InputSchema.numbers(schema.names, schema.frame).to_json() + repr(schema.ignored)


def _weights(value: Any) -> dict[str, float]:
    if not isinstance(value, dict) or not value:
        raise InvalidInput("weights", "required: an object of version: weight, e.g. "
                                      "{\"1\": 80, \"2\": 20}")
    if len(value) > MAX_VERSIONS:
        raise InvalidInput("weights", f"at most {MAX_VERSIONS} versions")
    out: dict[str, float] = {}
    for version, weight in value.items():
        if isinstance(weight, bool) or not isinstance(weight, int | float) \
                or not math.isfinite(weight):
            raise InvalidInput(f"weights.{version}"[:100], "a number")
        if weight < 0:
            raise InvalidInput(f"weights.{version}"[:100], "must not be negative")
        out[str(version)] = float(weight)
    if sum(out.values()) <= 0:
        raise InvalidInput("weights", "must sum to more than 0")
    return out


def _shadow(value: Any) -> Shadow | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"version", "percent"}:
        raise InvalidInput("shadow", "an object: {\"version\": \"2\", \"percent\": 100}")
    version, percent = value.get("version"), value.get("percent", 100)
    if isinstance(version, bool) or not isinstance(version, str | int):
        raise InvalidInput("shadow.version", "required: a registered version")
    if isinstance(percent, bool) or not isinstance(percent, int | float) \
            or not math.isfinite(percent) or not 0 <= percent <= 100:
        raise InvalidInput("shadow.percent", "a number from 0 to 100")
    return Shadow(str(version), float(percent))


def _version(conn: Connection, name: str, version: str, field: str) -> registry.ModelInfo:
    try:
        return registry.resolve(conn, name, version)
    except ModelNotFound:
        raise InvalidInput(field[:100], f"model {name!r} has no version {version!r}") from None


def every(conn: Connection) -> dict[str, Rollout]:
    """Every model's rollout, by model name (the models list shows their shares)."""
    return {row.name: _of(row) for row in conn.execute(select(model_rollouts))}


def get(conn: Connection, name: str) -> Rollout | None:
    """The rollout of `name`, or None (jobs get the latest registered version)."""
    row = conn.execute(select(model_rollouts).where(model_rollouts.c.name == name)).first()
    return None if row is None else _of(row)


def _of(row: Any) -> Rollout:
    shadow = None if row.shadow_version is None else \
        Shadow(row.shadow_version, float(row.shadow_percent or 0))
    return Rollout(row.name, {str(k): float(v) for k, v in row.weights.items()}, shadow)


def put(conn: Connection, rollout: Rollout, by: str) -> Rollout | None:
    """Set `rollout` (in the caller's transaction) and record the change; return the one it
    replaced."""
    before = get(conn, rollout.name)
    values = {"weights": rollout.weights, "updated_at": utcnow(), "updated_by": by[:200],
              "shadow_version": rollout.shadow.version if rollout.shadow else None,
              "shadow_percent": rollout.shadow.percent if rollout.shadow else None}
    if before is None:
        conn.execute(insert(model_rollouts), {"name": rollout.name, **values})
    else:
        conn.execute(update(model_rollouts).where(model_rollouts.c.name == rollout.name)
                     .values(**values))
    _record(conn, rollout.name, by, before, rollout)
    return before


def clear(conn: Connection, name: str, by: str) -> Rollout | None:
    """Return `name` to "latest registered"; record the change if there was a rollout."""
    before = get(conn, name)
    if before is not None:
        conn.execute(delete(model_rollouts).where(model_rollouts.c.name == name))
        _record(conn, name, by, before, None)
    return before


def _record(conn: Connection, name: str, by: str, before: Rollout | None,
            after: Rollout | None) -> None:
    conn.execute(insert(rollout_changes), {
        "name": name, "changed_at": utcnow(), "changed_by": by[:200],
        "before": None if before is None else _stored(before),
        "after": None if after is None else _stored(after)})


def _stored(rollout: Rollout) -> dict[str, Any]:
    return {"weights": rollout.weights, "shadow": None if rollout.shadow is None else
            {"version": rollout.shadow.version, "percent": rollout.shadow.percent}}


def describe(conn: Connection, name: str) -> dict[str, Any]:
    """`name`'s rollout as the API and the command line show it, with its latest registered
    version (weights None: no rollout). ModelNotFound for an unknown model."""
    latest = registry.resolve(conn, name).version
    found = get(conn, name)
    if found is None:
        return {"model": name, "weights": None, "shares": None, "shadow": None,
                "latest": latest}
    return {**found.public(), "latest": latest}


def history(conn: Connection, name: str, limit: int = 100) -> list[dict[str, Any]]:
    """The changes of `name`'s rollout, newest first (`None`: latest registered)."""
    rows = conn.execute(select(rollout_changes).where(rollout_changes.c.name == name)
                        .order_by(rollout_changes.c.id.desc()).limit(limit))
    return [{"at": iso(row.changed_at), "by": row.changed_by, "from": row.before,
             "to": row.after} for row in rows]
