from __future__ import annotations

import shutil

import pytest


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool ships with Debian's prometheus package, which `make setup` installs."""
    found = shutil.which("promtool")
    assert found, "promtool not found: run `make prometheus` (apt-get install prometheus)"
    return found
