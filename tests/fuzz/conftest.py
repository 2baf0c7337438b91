"""Fixtures for fuzzing the live API: a tenant whose key every generated request carries, and a
count of the requests sent, printed at the end of the run."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis.configuration import set_hypothesis_home_dir
from sqlalchemy import Engine

from service.models.registry import ModelInfo
from service.tenants.keys import CLI_ONLY_SCOPES, SCOPES
from tests.support.processes import WorkerProcess
from tests.support.tenants import Tenant, make_tenant

#: Examples per operation and stateful scenarios per run: small in CI, large for `make fuzz`.
EXAMPLES = int(os.environ.get("PREDQ_FUZZ_EXAMPLES", "25"))
#: Requests sent, by schemathesis phase.
SENT: Counter[str] = Counter()
_HYPOTHESIS_HOME = ""


@pytest.fixture(scope="module")
def fuzz_tenant(engine: Engine, api_url: str, models: dict[str, ModelInfo],
                worker: WorkerProcess) -> Iterator[Tenant]:
    """One tenant for the module, with a real worker running its jobs and a secret for jobs'
    own webhooks; deleted afterwards."""
    # admin too: /v1/keys is fuzzed. Not operator: a rollout the fuzzer set on a demo model
    # would move the session's other jobs (its routes answer 403, as documented).
    scopes = tuple(s for s in SCOPES if s not in CLI_ONLY_SCOPES)
    for tenant in make_tenant(engine, api_url, scopes):
        assert tenant.post("/v1/webhooks/job-secret").status_code == 201
        yield tenant


def pytest_configure(config: pytest.Config) -> None:
    """Hypothesis' caches go to a temporary directory, not .hypothesis/ in the working tree;
    set before the test module builds its cases at collection. (Its example database is off:
    a live API does not answer a replay the same way.)"""
    global _HYPOTHESIS_HOME
    _HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="predq-hypothesis-")
    set_hypothesis_home_dir(_HYPOTHESIS_HOME)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _HYPOTHESIS_HOME:
        shutil.rmtree(_HYPOTHESIS_HOME, ignore_errors=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SENT:
        counts = ", ".join(f"{phase}: {n}" for phase, n in sorted(SENT.items()))
        terminalreporter.write_line(f"schemathesis: {sum(SENT.values())} requests ({counts})")
