"""greenchat-admin against the holes of issue 11: concurrent edits of the
accounts file, account ids, user names, and file modes."""

import os
import subprocess
import sys
import time

from greenchat.credentials import Credentials

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADMIN = os.path.join(ROOT, "bin", "greenchat-admin")


def test_concurrent_addusers_all_land(tmp_path):
    creds = str(tmp_path / "credentials.txt")
    procs = [subprocess.Popen([sys.executable, ADMIN, "--credentials", creds,
                               "adduser", f"user{i}", "--password-stdin"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for i in range(10)]
    # Let every process start (and, unlocked, read the file) before any has
    # a password: the interleaving that lost accounts.
    time.sleep(1.0)
    results = [p.communicate(f"pw{i}\n", timeout=60) for i, p in enumerate(procs)]
    assert [p.returncode for p in procs] == [0] * 10, results
    loaded = Credentials.load(creds)
    assert loaded.usernames == {f"user{i}" for i in range(10)}
    assert all(loaded.check(f"user{i}", f"pw{i}") for i in range(10))
    assert os.stat(creds + ".lock").st_mode & 0o777 == 0o600
