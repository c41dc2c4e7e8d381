"""TLS is verified by default, for IMAP and ManageSieve alike: a private Dovecot serving a
certificate from a private CA is refused without `ca_file` and accepted with it."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from rolekeeper.backends.imap import ImapSource
from rolekeeper.backends.sieve import SieveError, SieveManager
from rolekeeper.config import ImapSettings
from rolekeeper.lab.dovecot import HOST, MASTER_USER, DovecotServer, dovecot_binary
from rolekeeper.lab.smtp import SmtpSink
from tests.conftest import require

USER = "tls-user@acme.example"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private CA and a certificate for 127.0.0.1 signed by it."""
    where = tmp_path_factory.mktemp("pki")
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=rolekeeper test CA",
        cwd=where,
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        f"/CN={HOST}",
        cwd=where,
    )
    (where / "san.cnf").write_text(f"subjectAltName=IP:{HOST}\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.cnf",
        cwd=where,
    )
    return where


@pytest.fixture(scope="module")
def tls_dovecot(pki: Path) -> Iterator[DovecotServer]:
    require(dovecot_binary() is not None, "Dovecot is not installed")
    tls = f"ssl = required\nssl_cert = <{pki / 'server.pem'}\nssl_key = <{pki / 'server.key'}\n"
    # Plain-text logins only inside TLS, as a real server would have it.
    tls += "disable_plaintext_auth = yes\n"
    with SmtpSink() as smtp, DovecotServer(smtp, extra_config=tls) as server:
        server.add_users({USER: "pw"})
        yield server


def settings_for(server: DovecotServer, tmp_path: Path, **tls: object) -> ImapSettings:
    (tmp_path / "master.pw").write_text(server.master_password)
    return ImapSettings(
        host=HOST,
        port=server.imap_port,
        sieve_port=server.sieve_port,
        security="starttls",
        username=MASTER_USER,
        password_file=tmp_path / "master.pw",
        **tls,  # type: ignore[arg-type]
    )


def test_a_private_ca_is_refused_by_default(tls_dovecot: DovecotServer, tmp_path: Path) -> None:
    cfg = settings_for(tls_dovecot, tmp_path)
    assert cfg.verify_tls
    source = ImapSource(cfg)
    with pytest.raises(ssl.SSLCertVerificationError):
        source.folder_state(USER, "INBOX")
    source.close()
    with pytest.raises((ssl.SSLError, SieveError)):
        SieveManager(cfg).active_scripts(USER)


def test_the_configured_ca_is_trusted_for_imap_and_sieve(
    tls_dovecot: DovecotServer, pki: Path, tmp_path: Path
) -> None:
    cfg = settings_for(tls_dovecot, tmp_path, ca_file=pki / "ca.pem")
    source = ImapSource(cfg)
    state = source.folder_state(USER, "INBOX")
    source.close()
    assert state is not None and state.uidnext >= 1
    assert SieveManager(cfg).active_scripts(USER) == (None, [])


def test_verification_switched_off_accepts_any_certificate(
    tls_dovecot: DovecotServer, tmp_path: Path
) -> None:
    cfg = settings_for(tls_dovecot, tmp_path, verify_tls=False)
    source = ImapSource(cfg)
    assert source.folder_state(USER, "INBOX") is not None
    source.close()
    assert SieveManager(cfg).active_scripts(USER) == (None, [])
