"""Fixtures shared by the test modules."""

import os
import signal

import pytest

from support import SERVER_SCRIPT, FakeServer, Proc, ServerFactory, listening_port


@pytest.fixture(autouse=True, scope="session")
def private_data_home(tmp_path_factory):
    """The whole suite, and every client process it starts, keeps its
    history files in a temporary directory, never the user's own."""
    saved = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("xdg-data"))
    yield
    if saved is None:
        del os.environ["XDG_DATA_HOME"]
    else:
        os.environ["XDG_DATA_HOME"] = saved


@pytest.fixture
def make_server(tmp_path):
    """make_server(users, **config) starts a server in this process on a free
    port; every one started is stopped at teardown."""
    factory = ServerFactory(tmp_path)
    yield factory
    factory.stop_all()


@pytest.fixture
def fake_server():
    """fake_server(**steps) starts a fake server for the real client
    (support.FakeServer) and returns its address; stopped at teardown."""
    factory = FakeServer()
    yield factory
    factory.stop_all()


@pytest.fixture
def server_process(tmp_path):
    """bin/greenchat-server as a process (accounts hans and yoda), its stderr
    piped, its web client on any free port; `port` once it listens. SIGTERM
    at teardown."""
    creds = tmp_path / "credentials.txt"
    creds.write_text("hans falcon*solo\nyoda wise@!man\n")
    proc = Proc([SERVER_SCRIPT, "0", "5", "30", "--host", "127.0.0.1", "--credentials", str(creds),
                 "--data", str(tmp_path / "data"), "--http-port", "0"])
    proc.port = listening_port(proc)
    yield proc
    if proc.p.poll() is None:
        proc.p.send_signal(signal.SIGTERM)
    proc.finish()
