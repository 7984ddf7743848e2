"""Unit tests of the accounts file."""

import logging
import os

import pytest

from greenchat import certs, passwords
from greenchat.cli import build_server
from greenchat.config import ServerConfig
from greenchat.credentials import Credentials, file_warnings
from greenchat.errors import CredentialsError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(tmp_path, text):
    path = tmp_path / "credentials.txt"
    path.write_text(text)
    return str(path)


def test_comments_blank_lines_and_whitespace(tmp_path):
    creds = Credentials.load(write(tmp_path, "# accounts\n\nalice  s3cret\n\tbob pw \n  # x\n"))
    assert creds.usernames == {"alice", "bob"}
    assert creds.check("alice", "s3cret")
    assert not creds.check("alice", "S3cret")
    assert not creds.check("alice", "")
    assert not creds.check("nobody", "s3cret")
    assert "bob" in creds and "nobody" not in creds


@pytest.mark.parametrize("text, line", [
    ("alice pw\njustone\n", 2), ("alice pw id extra\n", 1), ("a b\n\n# c\nw x y z\n", 4),
])
def test_malformed_line_is_reported_with_its_number(tmp_path, text, line):
    path = write(tmp_path, text)
    with pytest.raises(CredentialsError) as info:
        Credentials.load(path)
    assert f"{path}:{line}:" in str(info.value)


def test_duplicate_user(tmp_path):
    with pytest.raises(CredentialsError, match="duplicate"):
        Credentials.load(write(tmp_path, "alice a\nalice b\n"))


def test_missing_file(tmp_path):
    with pytest.raises(CredentialsError, match="cannot read"):
        Credentials.load(str(tmp_path / "nope.txt"))


def test_shipped_sample_file_loads():
    creds = Credentials.load(os.path.join(ROOT, "credentials.txt"))
    assert len(creds) >= 5
    assert creds.check("hans", "falcon*solo")


def test_optional_account_id(tmp_path):
    creds = Credentials.load(write(tmp_path, "alice pw 0123456789abcdef\nbob pw\n"
                                             f"carol pw {'A_z-9' * 12}abcd\n"))
    assert creds.usernames == {"alice", "bob", "carol"}
    assert creds.account_id("alice") == "0123456789abcdef"
    assert creds.account_id("bob") is None
    assert creds.account_id("carol") == "A_z-9" * 12 + "abcd"       # 64 characters
    assert creds.account_id("nobody") is None
    assert creds.check("alice", "pw") and creds.check("bob", "pw")


@pytest.mark.parametrize("text, line", [
    ("alice pw id\nbob pw bad/id\n", 2), ("alice pw " + "x" * 65 + "\n", 1),
    ("alice pw id\u00e9\n", 1), ("# c\nalice pw id more\n", 2), ("alice pw id\nalice pw2\n", 2),
])
def test_bad_account_ids_and_field_counts_name_the_line(tmp_path, text, line):
    path = write(tmp_path, text)
    with pytest.raises(CredentialsError) as info:
        Credentials.load(path)
    assert f"{path}:{line}:" in str(info.value)


def test_changes_between_two_loads(tmp_path):
    old = Credentials.load(write(tmp_path, "\n".join([
        "kept pw k1", "gone pw g1", "leia pw id-old", "pwd old p1", "plain pw",
        "gains pw", "loses pw l1", "same-plain pw", ""])))
    (tmp_path / "new").mkdir()
    new = Credentials.load(write(tmp_path / "new", "\n".join([
        "kept pw k1", "leia pw id-new", "pwd new p1", "plain changed", "gains pw g2",
        "loses pw", "same-plain pw", "fresh pw f1", ""])))
    changes = old.changes(new)
    assert changes.added == {"fresh"}
    assert changes.removed == {"gone"}
    assert changes.replaced == {"leia"}
    assert changes.password_changed == {"pwd", "plain"}
    assert all(isinstance(s, frozenset) for s in
               (changes.added, changes.removed, changes.replaced, changes.password_changed))
    # A replaced account whose secret also changed counts as replaced only.
    (tmp_path / "third").mkdir()
    third = Credentials.load(write(tmp_path / "third", "kept other k2\n"))
    assert old.changes(third).replaced == {"kept"}
    assert old.changes(third).password_changed == frozenset()
    nothing = old.changes(old)
    assert not (nothing.added or nothing.removed or nothing.replaced or nothing.password_changed)


def test_file_warnings(tmp_path):
    hashed = passwords.hash_password("pw")
    path = write(tmp_path, f"alice {hashed} id1\nbob {hashed}\n")
    os.chmod(path, 0o600)
    assert file_warnings(path, Credentials.load(path)) == []
    for loose in (0o644, 0o640, 0o602, 0o660):
        os.chmod(path, loose)
        (warning,) = file_warnings(path, Credentials.load(path))
        assert f"mode {loose:04o}" in warning and "group or others" in warning
    os.chmod(path, 0o600)
    path = write(tmp_path, f"alice {hashed}\nbob pw\ncarol pw\n")
    (warning,) = file_warnings(path, Credentials.load(path))
    assert "2 plain-text password" in warning and "greenchat-admin upgrade" in warning
    path = write(tmp_path, "# nobody yet\n")
    (warning,) = file_warnings(path, Credentials.load(path))
    assert "no account" in warning


def test_build_server_logs_the_start_up_warnings(tmp_path, caplog):
    creds = tmp_path / "credentials.txt"
    creds.write_text("alice pw\nbob pw\n")
    os.chmod(creds, 0o644)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    certs.write_pair(*certs.make_pair("localhost", days=3), str(cert), str(key))
    config = ServerConfig(port=0, block_duration=1, timeout=60, host="127.0.0.1",
                          credentials=str(creds), data_dir=str(tmp_path / "data"),
                          tls_cert=str(cert), tls_key=str(key))
    with caplog.at_level(logging.WARNING, logger="greenchat"):
        server = build_server(config)
    server.start()
    server.stop(timeout=5)
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and r.name.startswith("greenchat")]
    assert any("mode 0644" in w for w in warnings), warnings
    assert any("2 plain-text password" in w for w in warnings), warnings
    assert any(str(cert) in w and "expires" in w for w in warnings), warnings
