"""Hashed passwords (issue 5, accounts part): the hash module, greenchat-admin,
and hashed logins on a live server that never stall the hub."""

import os
import subprocess
import sys

import gevent
import pytest

from greenchat import admin, passwords, texts
from greenchat.credentials import Credentials
from greenchat.errors import CredentialsError

from support import Agent, HubTicker, ServerFactory, admin_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_hash_and_verify():
    secret = passwords.hash_password("correct horse")
    assert passwords.is_hashed(secret) and " " not in secret
    assert passwords.verify(secret, "correct horse")
    assert not passwords.verify(secret, "correct horsE")
    assert passwords.hash_password("same") != passwords.hash_password("same")   # salted
    assert passwords.verify("plain", "plain") and not passwords.verify("plain", "plai")
    for damaged in ("scrypt$", "scrypt$x$y$z$a$b", secret[:-4]):
        assert not passwords.verify(damaged, "correct horse")


@pytest.fixture
def creds(tmp_path):
    path = tmp_path / "credentials.txt"
    path.write_text("# team\nhans falcon*solo\n\nyoda wise@!man\n")
    return str(path)


def test_admin_adduser_passwd_deluser_list_upgrade(creds, monkeypatch, capsys):
    assert admin_run(creds, "adduser", "leia", "--password-stdin",
                     password="has spaces & more", monkeypatch=monkeypatch) == 0
    loaded = Credentials.load(creds)
    assert loaded.is_hashed("leia") and loaded.check("leia", "has spaces & more")
    assert admin_run(creds, "adduser", "leia", "--password-stdin", password="x",
                     monkeypatch=monkeypatch) == 1
    assert admin_run(creds, "passwd", "hans", "--password-stdin", password="new-one",
                     monkeypatch=monkeypatch) == 0
    assert Credentials.load(creds).check("hans", "new-one")
    assert admin_run(creds, "deluser", "yoda") == 0
    assert "yoda" not in Credentials.load(creds)
    assert admin_run(creds, "deluser", "yoda") == 1
    capsys.readouterr()
    assert admin_run(creds, "list") == 0
    assert capsys.readouterr().out.split("\n")[:2] == ["hans\thashed", "leia\thashed"]
    with open(creds) as f:
        assert f.read().startswith("# team\n")          # comments kept


def test_admin_upgrade_hashes_plain_entries_in_place(creds):
    assert admin_run(creds, "upgrade") == 0
    loaded = Credentials.load(creds)
    assert loaded.is_hashed("hans") and loaded.is_hashed("yoda")
    assert loaded.check("hans", "falcon*solo") and loaded.check("yoda", "wise@!man")
    with open(creds) as f:
        text = f.read()
    assert "falcon*solo" not in text and text.startswith("# team\n")


def test_admin_refuses_a_malformed_file_and_bad_names(tmp_path, creds, monkeypatch):
    broken = tmp_path / "broken.txt"
    broken.write_text("one two three four\n")
    with pytest.raises(CredentialsError):
        admin.read_lines(str(broken))
    assert admin_run(str(broken), "upgrade") == 1
    assert broken.read_text() == "one two three four\n"
    assert admin_run(creds, "adduser", "#x", "--password-stdin", password="p",
                     monkeypatch=monkeypatch) == 1
    assert admin_run(creds, "adduser", "empty", "--password-stdin", password="",
                     monkeypatch=monkeypatch) == 1


def test_admin_script_runs_as_a_process(creds):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "bin", "greenchat-admin"),
                          "--credentials", creds, "adduser", "luke", "--password-stdin"],
                         input="jedi\n", capture_output=True, text=True, timeout=30)
    assert (out.returncode, out.stdout.strip()) == (0, "added luke")
    assert Credentials.load(creds).check("luke", "jedi")


def test_hashed_logins_keep_the_rules_and_never_stall_the_hub(tmp_path):
    factory = ServerFactory(tmp_path)
    hashed = {u: passwords.hash_password("pw") for u in ("alice", "bob", "victim")}
    server = factory(list(hashed), passwords=hashed, block_duration=30)
    ticker = HubTicker()
    try:
        alice = Agent("alice", server.address)
        assert alice.login()["text"] == texts.WELCOME
        assert Agent("bob", server.address).login("nope")["text"] == texts.INVALID_PASSWORD
        # Ten wrong passwords at once, each a 40 ms hash: exactly the texts.
        attempts = [gevent.spawn(Agent("victim", server.address).login, "wrong")
                    for _ in range(10)]
        gevent.joinall(attempts, timeout=30, raise_error=True)
        got = sorted(g.value["text"] for g in attempts)
        assert got == sorted([texts.INVALID_PASSWORD] * 2 + [texts.ACCOUNT_NOW_BLOCKED] +
                             [texts.ACCOUNT_BLOCKED] * 7)
        assert Agent("victim", server.address).login("pw")["text"] == texts.ACCOUNT_BLOCKED
    finally:
        longest = ticker.stop()
        factory.stop_all()
    assert longest < 0.05, f"hub stalled {longest * 1000:.0f} ms"
