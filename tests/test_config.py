"""Every class of config error gives one clear line naming file and key; never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rolekeeper.config import load_settings
from rolekeeper.errors import ConfigError


def write_config(directory: Path, text: str) -> Path:
    path = directory / "rolekeeper.toml"
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    return caught.value.problems


def test_minimal_config_loads_with_defaults(tmp_path: Path) -> None:
    path = write_config(tmp_path, f'[database]\nurl = "sqlite:///{tmp_path}/x.db"\n')
    settings = load_settings(path)
    assert settings.scheduler.poll_seconds == 30
    assert settings.logging.level == "info"
    assert settings.source_files == (path,)


def test_missing_file(tmp_path: Path) -> None:
    assert problems(tmp_path / "nope.toml") == [
        f"{tmp_path}/nope.toml: config file not found (set --config or $ROLEKEEPER_CONFIG)"
    ]


def test_toml_syntax_error_names_line(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[logging]\nlevel = info\n")
    [line] = problems(path)
    assert line.startswith(f"{path}: not valid TOML: ")
    assert "line 2" in line


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[organisation]\ndomain = ["acme.example"]\n')
    [line] = problems(path)
    assert line.startswith(f"{path}: organisation.domain: unknown key; did you mean 'domains'?")
    assert "known here: corporate_numbers, default_region, domains" in line


def test_unknown_section(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[sheduler]\npoll_seconds = 5\n")
    [line] = problems(path)
    assert line.startswith(f"{path}: sheduler: unknown key; did you mean 'scheduler'?")


def test_wrong_type(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[scheduler]\npoll_seconds = "fast"\n')
    assert problems(path) == [
        f"{path}: scheduler.poll_seconds: input should be a valid number, unable to parse "
        "string as a number (got 'fast')"
    ]


def test_value_not_among_choices(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[logging]\nlevel = "loud"\n')
    assert problems(path) == [
        f"{path}: logging.level: input should be 'debug', 'info', 'warning' or 'error' (got 'loud')"
    ]


def test_value_out_of_range(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[scheduler]\nmax_attempts = 0\n")
    assert problems(path) == [
        f"{path}: scheduler.max_attempts: Input should be greater than or equal to 1"
    ]


def test_domain_validation(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[organisation]\ndomains = ["not a domain"]\n')
    assert problems(path) == [f"{path}: organisation.domains: 'not a domain' is not a domain"]


def test_phone_and_region_validation(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[organisation]\ndefault_region = "XX"\n')
    assert problems(path) == [
        f"{path}: organisation.default_region: 'XX' is not a two-letter region code "
        "phonenumbers knows"
    ]
    path = write_config(tmp_path, '[organisation]\nmain_lines = ["call us"]\n')
    assert problems(path) == [f"{path}: organisation: main_lines: 'call us' is not a phone number"]


def test_required_key_missing(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[imap]\nhost = "mail.acme.example"\n')
    assert problems(path) == [f"{path}: imap.username: required key is missing"]


def test_several_problems_are_all_reported(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, '[logging]\nlevel = "loud"\n[scheduler]\npoll_seconds = -1\nfoo = 1\n'
    )
    assert len(problems(path)) == 3


def test_inline_secret_refused(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[smtp]\nhost = "smtp.acme.example"\npassword = "hunter2"\n')
    [line] = problems(path)
    assert line == (
        f"{path}: smtp.password: secrets are not accepted in the config text; use "
        "password_file = PATH or password_credential = NAME (systemd LoadCredential)"
    )
    assert "hunter2" not in line


def test_inline_token_refused(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[twilio]\naccount_sid = "AC00"\nauth_token = "abc"\n')
    [line] = problems(path)
    assert "twilio.auth_token: secrets are not accepted" in line
    assert "auth_token_file = PATH or auth_token_credential = NAME" in line


def test_secret_file_missing(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        f'[smtp]\nhost = "smtp.acme.example"\npassword_file = "{tmp_path}/missing"\n',
    )
    assert problems(path) == [f"{path}: smtp: secret file {tmp_path}/missing does not exist"]


def test_secret_file_empty(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    path = write_config(tmp_path, f'[smtp]\nhost = "h"\npassword_file = "{tmp_path}/empty"\n')
    assert problems(path) == [f"{path}: smtp: secret file {tmp_path}/empty is empty"]


def test_secret_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    path = write_config(
        tmp_path, f'[smtp]\nhost = "h"\nusername = "rk"\npassword_file = "{tmp_path}/pw"\n'
    )
    smtp = load_settings(path).smtp
    assert smtp is not None and smtp.password is not None
    assert smtp.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(smtp)


def test_systemd_credential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "imap-password").write_text("from-systemd")
    path = write_config(
        tmp_path,
        '[imap]\nhost = "h"\nusername = "admin*master"\npassword_credential = "imap-password"\n',
    )
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    [line] = problems(path)
    assert "needs systemd's $CREDENTIALS_DIRECTORY" in line
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    imap = load_settings(path).imap
    assert imap is not None and imap.password is not None
    assert imap.password.get_secret_value() == "from-systemd"


def test_file_and_credential_together_refused(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("x")
    path = write_config(
        tmp_path,
        f'[smtp]\nhost = "h"\npassword_file = "{tmp_path}/pw"\npassword_credential = "c"\n',
    )
    assert problems(path) == [
        f"{path}: smtp: give either password_file or password_credential, not both"
    ]


def test_database_url_with_password_refused(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[database]\nurl = "postgresql://rk:secret@db/rk"\n')
    [line] = problems(path)
    assert line.endswith(
        "database.url: the URL carries a password; put it in password_file or password_credential"
    )
    path = write_config(tmp_path, '[database]\nurl = "mysql://db/rk"\n')
    assert problems(path)[0].endswith(
        "database.url: only sqlite:/// and postgresql:// URLs are supported"
    )


def test_conf_d_overrides_and_errors_name_their_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[logging]\nlevel = "info"\n[scheduler]\npoll_seconds = 5\n')
    confd = tmp_path / "conf.d"
    confd.mkdir()
    (confd / "10-debug.toml").write_text('[logging]\nlevel = "debug"\n')
    (confd / "20-format.toml").write_text('[logging]\nformat = "json"\n')
    settings = load_settings(path)
    assert settings.logging.level == "debug"
    assert settings.logging.format == "json"
    assert settings.scheduler.poll_seconds == 5
    assert settings.source_files == (path, confd / "10-debug.toml", confd / "20-format.toml")
    (confd / "30-bad.toml").write_text("[scheduler]\npoll_seconds = 0\n")
    assert problems(path) == [
        f"{confd}/30-bad.toml: scheduler.poll_seconds: Input should be greater than or equal to 0.2"
    ]


def test_env_variable_names_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path, '[logging]\nlevel = "warning"\n')
    monkeypatch.setenv("ROLEKEEPER_CONFIG", str(path))
    assert load_settings().logging.level == "warning"


@pytest.mark.parametrize(
    "text",
    ["[logging]\nlevel = info\n", '[logging]\nlevel = "loud"\n', '[smtp]\npassword = "x"\n'],
)
def test_cli_exits_2_without_traceback(tmp_path: Path, text: str) -> None:
    path = write_config(tmp_path, text)
    result = subprocess.run(
        [sys.executable, "-m", "rolekeeper", "--config", str(path), "check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"config error: {path}: ")
    assert result.stdout == ""


def test_password_without_username_refused(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("x")
    path = write_config(tmp_path, f'[smtp]\nhost = "h"\npassword_file = "{tmp_path}/pw"\n')
    assert problems(path) == [f"{path}: smtp: a password is given but no username to log in with"]


def test_twilio_token_sources(tmp_path: Path) -> None:
    (tmp_path / "tok").write_text("t")
    sid = "AC" + "0" * 32
    path = write_config(
        tmp_path,
        f'[twilio]\naccount_sid = "{sid}"\nauth_token_file = "{tmp_path}/tok"\n'
        'auth_token_credential = "twilio-auth-token"\n',
    )
    assert problems(path) == [
        f"{path}: twilio: give either auth_token_file or auth_token_credential, not both"
    ]
    path = write_config(tmp_path, '[twilio]\naccount_sid = "AC12"\n')
    assert problems(path) == [
        f"{path}: twilio.account_sid: expected an Account SID: AC followed by 32 hex digits"
    ]


def _twilio(tmp_path: Path, extra: str) -> Path:
    (tmp_path / "tok").write_text("t")
    return write_config(
        tmp_path,
        f'[twilio]\naccount_sid = "AC{"0" * 32}"\nauth_token_file = "{tmp_path}/tok"\n{extra}',
    )


def test_fallback_on_twilio_serverless(tmp_path: Path) -> None:
    path = _twilio(tmp_path, '[twilio.fallback]\npublish = "serverless"\ndomain_suffix = "fb"\n')
    fallback = load_settings(path).twilio.fallback  # type: ignore[union-attr]
    assert (fallback.service_name, fallback.environment) == ("rolekeeper-fallback", "production")
    assert (fallback.domain_suffix, fallback.visibility) == ("fb", "protected")

    path = _twilio(tmp_path, '[twilio.fallback]\npublish = "ftp"\n')
    assert problems(path) == [
        f"{path}: twilio.fallback.publish: input should be 'file' or 'serverless' (got 'ftp')"
    ]
    path = _twilio(
        tmp_path, '[twilio.fallback]\npublish = "serverless"\nurl = "https://x.example"\n'
    )
    assert problems(path) == [
        f'{path}: twilio.fallback: url is only for publish = "file"; with "serverless" the '
        "URL is the Environment's domain on Twilio (remove url)"
    ]
    path = _twilio(tmp_path, '[twilio.fallback]\nservice_name = "no spaces please"\n')
    (line,) = problems(path)
    assert line.startswith(f"{path}: twilio.fallback.service_name: String should match pattern")
    path = _twilio(tmp_path, '[twilio.fallback]\nvisibility = "private"\n')
    (line,) = problems(path)
    assert line.startswith(f"{path}: twilio.fallback.visibility: input should be")
    path = _twilio(tmp_path, '[twilio.api_hosts]\n"example.com" = "http://127.0.0.1:1"\n')
    assert problems(path) == [
        f"{path}: twilio.api_hosts: 'example.com' is not a Twilio host (*.twilio.com)"
    ]


def test_a_bad_fallback_setting_exits_2(tmp_path: Path) -> None:
    path = _twilio(tmp_path, '[twilio.fallback]\npublish = "serverless"\nenvironment = ""\n')
    result = subprocess.run(
        [sys.executable, "-m", "rolekeeper", "--config", str(path), "check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"config error: {path}: twilio.fallback.environment: ")


def test_segment_values_are_case_insensitive(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, '[import.clients.segment_values]\n"Стратегический" = "VIP"\n"X" = "gold"\n'
    )
    assert problems(path) == [
        f"{path}: import.clients.segment_values: 'X' maps to 'gold'; segments are: key, "
        "minor, regular, vip"
    ]
    path = write_config(tmp_path, '[import.clients.segment_values]\n"Стратегический" = "VIP"\n')
    assert load_settings(path).import_.clients.segment_values == {"стратегический": "vip"}


def test_exchange_needs_https(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("x")
    path = write_config(
        tmp_path,
        '[exchange]\nservice_endpoint = "http://mail.acme.example/EWS/Exchange.asmx"\n'
        f'username = "svc@acme.example"\npassword_file = "{tmp_path}/pw"\n',
    )
    assert problems(path) == [
        f"{path}: exchange.service_endpoint: expected the EWS URL, e.g. "
        "https://mail.example.com/EWS/Exchange.asmx"
    ]


def _imap(directory: Path, extra: str) -> Path:
    return write_config(
        directory, f'[imap]\nhost = "mail.acme.example"\nusername = "rolekeeper"\n{extra}'
    )


def test_per_mailbox_logins_need_their_passwords_directory(tmp_path: Path) -> None:
    path = _imap(tmp_path, 'master_user_separator = ""\n')
    result = subprocess.run(
        [sys.executable, "-m", "rolekeeper", "--config", str(path), "check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr == (
        f'config error: {path}: imap: master_user_separator = "" (a login per mailbox) needs '
        "credentials_dir or credentials_credential: where each mailbox's password file is\n"
    )
    path = _imap(tmp_path, f'master_user_separator = ""\ncredentials_dir = "{tmp_path}/none"\n')
    assert problems(path) == [f"{path}: imap: credentials_dir {tmp_path}/none is not a directory"]
    path = _imap(tmp_path, f'credentials_dir = "{tmp_path}"\n')  # a master user as well
    result = subprocess.run(
        [sys.executable, "-m", "rolekeeper", "--config", str(path), "check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert (
        "warning: imap.credentials_dir is not used: mailboxes are opened with the master user"
        in result.stderr
    )


def test_per_mailbox_passwords_from_a_systemd_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rolekeeper.errors import MailboxAccessError

    path = _imap(
        tmp_path, 'master_user_separator = ""\ncredentials_credential = "imap-passwords"\n'
    )
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    [line] = problems(path)
    assert "needs systemd's $CREDENTIALS_DIRECTORY" in line
    # LoadCredential=imap-passwords:/etc/rolekeeper/imap-passwords names each file ID_FILE.
    (tmp_path / "imap-passwords_ivan.petrov@acme.example").write_text("s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    imap = load_settings(path).imap
    assert imap is not None
    assert imap.mailbox_password("Ivan.Petrov@acme.example").get_secret_value() == "s3cret"
    with pytest.raises(MailboxAccessError) as caught:
        imap.mailbox_password("anna@acme.example")
    assert str(caught.value) == (
        f"anna@acme.example: no IMAP password: secret file "
        f"{tmp_path}/imap-passwords_anna@acme.example does not exist"
    )
    with pytest.raises(MailboxAccessError, match="cannot name a password file"):
        imap.mailbox_password("../imap-passwords_ivan.petrov@acme.example")
