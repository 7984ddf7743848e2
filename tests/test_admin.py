"""greenchat-admin against the holes of issue 11: concurrent edits of the
accounts file, account ids, user names, and file modes."""

import os
import re
import stat
import subprocess
import sys
import time

import pytest

from greenchat import admin, config, passwords
from greenchat.credentials import Credentials

from support import admin_run

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


def test_adduser_writes_a_fresh_id_that_passwd_and_upgrade_keep(tmp_path, monkeypatch, capsys):
    creds = tmp_path / "credentials.txt"
    creds.write_text("# team\nhans falcon id-of-hans\nyoda wise\n")
    assert admin_run(creds, "adduser", "leia", "--password-stdin", password="pw",
               monkeypatch=monkeypatch) == 0
    first = Credentials.load(str(creds)).account_id("leia")
    assert re.fullmatch(r"[0-9a-f]{16}", first)
    assert admin_run(creds, "passwd", "leia", "--password-stdin", password="new",
               monkeypatch=monkeypatch) == 0
    assert admin_run(creds, "passwd", "hans", "--password-stdin", password="new",
               monkeypatch=monkeypatch) == 0
    assert admin_run(creds, "passwd", "yoda", "--password-stdin", password="new",
               monkeypatch=monkeypatch) == 0
    # A user with an id exists: no second entry.
    assert admin_run(creds, "adduser", "hans", "--password-stdin", password="x",
               monkeypatch=monkeypatch) == 1
    loaded = Credentials.load(str(creds))
    assert loaded.check("leia", "new") and loaded.check("hans", "new")
    assert (loaded.account_id("leia"), loaded.account_id("hans"), loaded.account_id("yoda")) \
        == (first, "id-of-hans", None)

    creds.write_text("hans falcon id-of-hans\nyoda wise\n")
    assert admin_run(creds, "upgrade") == 0
    lines = creds.read_text().splitlines()
    assert lines[0].startswith("hans scrypt$") and lines[0].endswith(" id-of-hans")
    assert lines[1].startswith("yoda scrypt$") and len(lines[1].split()) == 2
    capsys.readouterr()
    assert admin_run(creds, "list") == 0
    assert capsys.readouterr().out == "hans\thashed\nyoda\thashed\n"


def test_a_re_added_name_is_a_different_account(tmp_path, monkeypatch):
    creds = tmp_path / "credentials.txt"
    assert admin_run(creds, "adduser", "leia", "--password-stdin", password="pw",
               monkeypatch=monkeypatch) == 0
    before = Credentials.load(str(creds))
    assert admin_run(creds, "deluser", "leia") == 0
    assert admin_run(creds, "adduser", "leia", "--password-stdin", password="pw",
               monkeypatch=monkeypatch) == 0
    after = Credentials.load(str(creds))
    assert after.account_id("leia") != before.account_id("leia")
    assert before.changes(after).replaced == {"leia"}
    # Deleting a user with an id leaves the others' lines alone.
    creds.write_text(f"a {passwords.hash_password('x')} ida\nb pw idb\n")
    assert admin_run(creds, "deluser", "a") == 0
    assert creds.read_text() == "b pw idb\n"


@pytest.mark.parametrize("name", [
    "a\x1b[2Jb", "zero\u200bwidth", "rtl\u202e", "tab\tname", "nb\u00a0sp", "line\u2028sep",
    "del\x7f", "c1\x9b", "para\u2029sep", "bad\udcffbyte", "", "#hash",
])
def test_adduser_refuses_invisible_and_control_characters(tmp_path, monkeypatch, capsys, name):
    creds = tmp_path / "credentials.txt"
    creds.write_text("hans pw\n")
    assert admin_run(creds, "adduser", name, "--password-stdin", password="pw",
               monkeypatch=monkeypatch) == 1
    err = capsys.readouterr().err
    assert err == f"greenchat-admin: not a valid user name: {name!r}\n"
    assert err[:-1].isprintable()                   # nothing raw reaches the terminal
    assert creds.read_text() == "hans pw\n"


def test_adduser_accepts_other_unicode_names(tmp_path, monkeypatch):
    creds = tmp_path / "credentials.txt"
    for name in ("Zoë", "渡辺", "o'brien-2"):
        assert admin_run(creds, "adduser", name, "--password-stdin", password="pw",
                   monkeypatch=monkeypatch) == 0
    assert Credentials.load(str(creds)).usernames == {"Zoë", "渡辺", "o'brien-2"}


@pytest.fixture
def umask():
    """umask(value) sets the process umask for this test; restored after."""
    saved = os.umask(0o022)
    yield os.umask
    os.umask(saved)


def mode(path):
    return os.stat(path).st_mode & 0o777


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o277], ids=["000", "022", "277"])
def test_every_rewrite_leaves_the_file_0600(tmp_path, monkeypatch, umask, mask):
    umask(mask)
    creds = tmp_path / "credentials.txt"
    assert admin_run(creds, "adduser", "leia", "--password-stdin", password="pw",
               monkeypatch=monkeypatch) == 0
    assert mode(creds) == 0o600                     # a new file
    for argv, password in ((["adduser", "luke", "--password-stdin"], "pw"),
                           (["passwd", "leia", "--password-stdin"], "new"),
                           (["deluser", "luke"], None),
                           (["upgrade"], None)):
        os.chmod(creds, 0o666)
        assert admin_run(creds, *argv, password=password, monkeypatch=monkeypatch) == 0
        assert mode(creds) == 0o600, argv
    # upgrade with nothing to hash still fixes the mode.
    os.chmod(creds, 0o644)
    assert admin_run(creds, "upgrade") == 0
    assert mode(creds) == 0o600
    assert Credentials.load(str(creds)).check("leia", "new")


def test_a_rewrite_fsyncs_the_directory(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.fstat(fd).st_mode)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    assert admin_run(tmp_path / "credentials.txt", "adduser", "leia", "--password-stdin",
               password="pw", monkeypatch=monkeypatch) == 0
    assert any(stat.S_ISDIR(m) for m in synced) and any(stat.S_ISREG(m) for m in synced)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file away")
def test_a_rewrite_by_root_keeps_the_owner(tmp_path, monkeypatch):
    # A server running as its own user must still read the file an admin
    # edited with sudo, now that the file is 0600.
    creds = tmp_path / "credentials.txt"
    creds.write_text("leia pw\n")
    os.chown(creds, 65534, 65534)
    assert admin_run(creds, "passwd", "leia", "--password-stdin", password="new",
               monkeypatch=monkeypatch) == 0
    st = os.stat(creds)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (65534, 65534, 0o600)


@pytest.mark.parametrize("mask", [0o000, 0o077], ids=["000", "077"])
def test_mkcert_modes_do_not_depend_on_the_umask(tmp_path, umask, mask):
    umask(mask)
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    admin.mkcert(str(cert), str(key), ["localhost"], 30)
    assert (mode(cert), mode(key)) == (0o644, 0o600)


@pytest.mark.parametrize("which", ["cert", "key"])
def test_mkcert_never_writes_through_a_symlink(tmp_path, which):
    paths = {"cert": tmp_path / "c.pem", "key": tmp_path / "k.pem"}
    dangling = tmp_path / "elsewhere" / "target.pem"
    dangling.parent.mkdir()
    paths[which].symlink_to(dangling)
    with pytest.raises(admin.AdminError, match="exists; not overwriting it"):
        admin.mkcert(str(paths["cert"]), str(paths["key"]), ["localhost"], 30)
    assert not dangling.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["elsewhere", paths[which].name])               # nothing written beside it either
    existing = tmp_path / "existing.pem"
    existing.write_text("precious\n")
    paths[which].unlink()
    paths[which].symlink_to(existing)
    assert admin.main(["mkcert", "--cert", str(paths["cert"]), "--key", str(paths["key"])]) == 1
    assert existing.read_text() == "precious\n"


def test_write_pair_refuses_existing_paths_and_symlinks_itself(tmp_path):
    # The check that matters is the open, not mkcert's friendlier look first.
    from greenchat import certs
    cert_pem, key_pem = certs.make_pair("localhost")
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    key.symlink_to(tmp_path / "target.pem")
    with pytest.raises(FileExistsError):
        certs.write_pair(cert_pem, key_pem, str(cert), str(key))
    assert not (tmp_path / "target.pem").exists() and not cert.exists()
    key.unlink()
    certs.write_pair(cert_pem, key_pem, str(cert), str(key))
    assert key.read_bytes() == key_pem
    with pytest.raises(FileExistsError):
        certs.write_pair(cert_pem, key_pem, str(cert), str(tmp_path / "k2.pem"))
    assert not (tmp_path / "k2.pem").exists()


def test_credentials_option_is_the_servers():
    """One default for the accounts file, whichever program reads it."""
    admin_option, = (a for a in admin.parser()._actions if a.dest == "credentials")
    server_option, = (a for a in config.server_parser()._actions if a.dest == "credentials")
    for attribute in ("option_strings", "default", "metavar", "help"):
        assert getattr(admin_option, attribute) == getattr(server_option, attribute)
    assert admin.parser().parse_args(["list"]).credentials == "credentials.txt"
    assert config.ServerConfig().credentials == "credentials.txt"
