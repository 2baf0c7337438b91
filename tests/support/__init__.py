"""Helpers the tests share: processes, tenants, models. Fixtures stay in conftest.py."""
