"""Destination URLs and credentials: the forms accepted, and bad input refused with the fix."""

from __future__ import annotations

import pytest

from autotx_lib.errors import DestinationSettingsError
from autotx_lib.transfer.destinations import LocalDestination, open_destination, parse_unc

pytest.importorskip("smbprotocol", reason='SMB URLs need smbprotocol: pip install "autotx_lib[smb]"')

ENV = {"SMB_PW": "s3cret"}
CREDS = {"password_env": "SMB_PW"}


def test_local_forms(tmp_path):
    for url in (str(tmp_path), tmp_path, f"file://{tmp_path}"):
        dest = open_destination(url)
        assert isinstance(dest, LocalDestination) and dest.root == tmp_path


def test_smb_url_and_unc_path_name_the_same_place():
    dest = open_destination("smb://alice@files.example.org:1445/micro/in%20coming/lsm",
                            CREDS, environ=ENV)
    assert (dest.server, dest.share, dest.folder, dest.port, dest.username) == \
        ("files.example.org", "micro", "in coming/lsm", 1445, "alice")
    assert "s3cret" not in repr(dest) + dest.url
    assert parse_unc(r"\\files\micro\in coming\lsm") == "smb://files/micro/in coming/lsm"
    unc = open_destination(r"\\files\micro\lsm", {**CREDS, "username": r"LAB\alice"},
                           environ=ENV)
    assert (unc.server, unc.share, unc.folder, unc.username) == ("files", "micro", "lsm",
                                                                 r"LAB\alice")
    domain = open_destination("smb://LAB;bob@files/micro", CREDS, environ=ENV)
    assert domain.username == r"LAB\bob" and domain.folder == ""


@pytest.mark.parametrize(("url", "expected"), [
    ("ftp://server/share", "unknown scheme 'ftp'"),
    ("smb://alice@server", "names no share"),
    ("smb://alice@server/", "names no share"),
    ("smb://server/share", "names no user"),
    ("smb://alice@/share", "names no server"),
    (r"\\server", "not a UNC path with a share"),
    ("file://otherhost/data", "file:///path"),
])
def test_bad_urls_say_what_to_write(url, expected):
    with pytest.raises(DestinationSettingsError, match=expected) as info:
        open_destination(url, CREDS, environ=ENV)
    assert "\n" not in str(info.value)


def test_a_password_in_the_url_is_refused_and_not_repeated():
    with pytest.raises(DestinationSettingsError, match="never put the password") as info:
        open_destination("smb://alice:hunter2@server/share", CREDS, environ=ENV)
    assert "hunter2" not in str(info.value)
    with pytest.raises(DestinationSettingsError, match="never written in the configuration"):
        open_destination("smb://alice@server/share", {"password": "hunter2"})


def test_missing_credentials_are_refused(tmp_path):
    with pytest.raises(DestinationSettingsError, match="needs a password"):
        open_destination("smb://alice@server/share", {}, environ={})
    with pytest.raises(DestinationSettingsError, match="SMB_PW .*not set"):
        open_destination("smb://alice@server/share", CREDS, environ={})
    with pytest.raises(DestinationSettingsError, match="cannot read the password file"):
        open_destination("smb://alice@server/share",
                         {"password_file": str(tmp_path / "none")}, environ={})


def test_password_file_must_be_private(tmp_path):
    secret = tmp_path / "smb.pw"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    with pytest.raises(DestinationSettingsError, match=f"chmod 600 {secret}") as info:
        open_destination("smb://alice@server/share", {"password_file": str(secret)},
                         environ={})
    assert "s3cret" not in str(info.value)
    secret.chmod(0o600)
    dest = open_destination("smb://alice@server/share", {"password_file": str(secret)},
                            environ={})
    assert dest._password == "s3cret"  # the newline is not part of it
