"""Keeps the benchmark's comparison server (bench/threaded_server.py) working."""

import os
import signal

from bench.common import write_credentials

from support import ROOT, Agent, Proc, listening_port


def test_threaded_server_speaks_the_protocol(tmp_path):
    creds = tmp_path / "credentials.txt"
    write_credentials(creds, ["u1", "u2"])
    proc = Proc([os.path.join(ROOT, "bench", "threaded_server.py"), "--port", "0",
                 "--credentials", str(creds)])
    try:
        address = ("127.0.0.1", listening_port(proc))
        u1, u2 = Agent("u1", address), Agent("u2", address)
        for agent in (u1, u2):
            assert agent.login(timeout=5)["status"] == "ok"
        u1.command("message u2 hi there", timeout=5)
        assert u2.wait_for(lambda f: f["type"] == "message") == \
            {"type": "message", "from": "u1", "text": "hi there"}
        u2.command("broadcast all", timeout=5)
        assert u1.wait_for(lambda f: f["type"] == "message")["text"] == "all"
        assert u1.command("whoelse", timeout=5)[1]["lines"] == ["u2"]
    finally:
        proc.p.send_signal(signal.SIGTERM)
        assert proc.finish(5) == 0
