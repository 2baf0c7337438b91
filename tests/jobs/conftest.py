"""The job tests that need a whole stack use the fault tests' private stacks."""

from tests.faults.conftest import stack  # noqa: F401 - the fixture, shared
