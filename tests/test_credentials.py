"""Unit tests of the accounts file."""

import os

import pytest

from greenchat.credentials import Credentials
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
    ("alice pw\njustone\n", 2), ("alice pw extra\n", 1), ("a b\n\n# c\nx y z\n", 4),
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
