"""Fixtures shared by the test modules."""

import pytest

from support import ServerFactory


@pytest.fixture
def make_server(tmp_path):
    """make_server(users, **config) starts a server in this process on a free
    port; every one started is stopped at teardown."""
    factory = ServerFactory(tmp_path)
    yield factory
    factory.stop_all()
