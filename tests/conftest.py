"""
Fixtures shared by the tests.
"""

import os
from typing import Iterator

import pytest

from tests.support.prosody import Prosody, prosody_available


@pytest.fixture(scope="session")
def prosody() -> Iterator[Prosody]:
    """
    A private Prosody for the whole test session. Without Prosody the
    integration tests are skipped, or fail if C{CI} is set.
    """
    if not prosody_available():
        if os.environ.get("CI"):
            pytest.fail("prosody is not installed, and CI is set: the integration tests must run")
        pytest.skip("prosody is not installed (scripts/setup installs it)")
    with Prosody() as server:
        yield server
