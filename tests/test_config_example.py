"""config/rolekeeper.toml: loads as shipped, shows every option, and every shown value is valid.

Comment conventions in the example (what these tests rely on):
- ``# key = value`` and ``# [table]`` are options/tables shown commented out;
- ``## or: key = value`` is an alternative to the option above it (a ``*_credential`` for a
  ``*_file``, a PostgreSQL URL for the SQLite one), never uncommented together with it;
- every other comment line is prose and never looks like the two forms above.
"""

from __future__ import annotations

import json
import re
import shutil
import tomllib
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from rolekeeper.config import (
    CLIENT_FIELDS,
    PEOPLE_FIELDS,
    ROLE_FIELDS,
    Settings,
    load_settings,
)

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "config" / "rolekeeper.toml"
UNIT = REPO / "systemd" / "rolekeeper.service"

# A commented-out option or table header (the transformation the brief defines).
COMMENTED_OPTION = re.compile(r"^#\s?(\[|[a-z_]+\s*=)")
# "## or: key = value": an alternative, shown as prose.
ALTERNATIVE = re.compile(r"^##\s*or:\s*(?=[a-z_]+\s*=)")
# A table header, commented out or not.
HEADER = re.compile(r"^(?:#\s?)?\[([a-z_.-]+)\]\s*$")
# A key assignment: live, commented out, or an alternative.
KEY = re.compile(r"^(?:#\s?|##\s*or:\s*)?([a-z_][a-z0-9_]*)\s*=")
# A path-valued option; rewritten to a real file in tmp_path.
FILE_OPTION = re.compile(r'^([a-z_]+_file)\s*=\s*"[^"]*"\s*$')
CREDENTIAL_OPTION = re.compile(r'^([a-z_]+_credential)\s*=\s*"([^"]*)"\s*$')

# Shown with an example value although the default (empty) differs.
# Lists whose default is empty: the example shows a sample entry instead.
EXAMPLE_NOT_DEFAULT = {
    ("organisation", "main_lines"),
    ("organisation", "corporate_numbers"),
    ("detect", "freemail_domains"),
    ("detect", "exempt_people"),
    ("detect", "ignore_domains"),
    ("watch", "journal_mailbox"),
    ("watch", "extra_mailboxes"),
    ("actions", "from_address"),
    ("twilio", "public_url"),
    ("twilio", "messaging_service_sid"),
    ("twilio", "team_line"),
    ("twilio", "numbers", "area_code"),
    ("twilio", "numbers", "adopt"),
    ("twilio", "webhooks", "access_number"),
    ("twilio", "fallback", "url"),
    ("twilio", "fallback", "domain_suffix"),
    ("twilio", "api_hosts"),
    ("provisioning", "supervisors"),
    ("provisioning", "keep_identifiers"),
    ("handover", "rotation_every_months"),
    ("handover", "rotation_groups"),
}
IMPORT_FIELDS = {"people": PEOPLE_FIELDS, "roles": ROLE_FIELDS, "clients": CLIENT_FIELDS}


# --- the model tree ----------------------------------------------------------------------


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model inside ``Model`` or ``Model | None``; None for plain values."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _nested_model(arg)
            if found is not None:
                return found
    return None


def _options(
    model: type[BaseModel], prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], type[BaseModel] | None]]:
    """(dotted path, sub-model or None for a value) for every config key, depth first."""
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        path = (*prefix, field.alias or name)
        sub = _nested_model(field.annotation)
        yield path, sub
        if sub is not None:
            yield from _options(sub, path)


OPTIONS = list(_options(Settings))
TABLES = [path for path, sub in OPTIONS if sub is not None]
VALUES = [path for path, sub in OPTIONS if sub is None]


def _model_at(path: tuple[str, ...]) -> type[BaseModel] | None:
    if not path:
        return Settings
    found = dict(OPTIONS).get(path)
    if found is None and len(path) > 1:
        # A table under a mapping of models, like [actions.rules.client-to-named].
        parent = _model_at(path[:-2])
        field = parent.model_fields.get(path[-2]) if parent else None
        args = typing.get_args(field.annotation) if field else ()
        if len(args) == 2 and isinstance(args[1], type) and issubclass(args[1], BaseModel):
            found = args[1]
    return found


def _field(path: tuple[str, ...]) -> Any:
    model = _model_at(path[:-1])
    assert model is not None
    return next(f for n, f in model.model_fields.items() if path[-1] in (n, f.alias))


# --- reading the example -----------------------------------------------------------------


def _example_text() -> str:
    return EXAMPLE.read_text(encoding="utf-8")


def _keys_by_table(text: str) -> dict[tuple[str, ...], set[str]]:
    """Every key shown (live, commented out or as an alternative), under its table."""
    table: tuple[str, ...] = ()
    keys: dict[tuple[str, ...], set[str]] = {table: set()}
    for line in text.splitlines():
        if match := HEADER.match(line):
            table = tuple(match[1].split("."))
            keys.setdefault(table, set())
        elif match := KEY.match(line):
            keys[table].add(match[1])
    return keys


def _uncommented(text: str, *, alternatives: bool = False) -> str:
    """Every commented-out option and header made live; prose stays prose.

    With ``alternatives``, the ``## or:`` lines are made live instead of the options they
    replace (the same key, or the ``*_file`` of a ``*_credential``).
    """
    rows: list[tuple[tuple[str, ...], str | None, bool, str]] = []
    table: tuple[str, ...] = ()
    for line in text.splitlines():
        is_alternative = False
        if alternatives and ALTERNATIVE.match(line):
            line, is_alternative = ALTERNATIVE.sub("", line), True
        elif COMMENTED_OPTION.match(line):
            line = re.sub(r"^#\s?", "", line)
        if match := HEADER.match(line):
            table = tuple(match[1].split("."))
        key_match = KEY.match(line) if not line.startswith("#") else None
        rows.append((table, key_match[1] if key_match else None, is_alternative, line))
    replaced = {(t, _stem(k)) for t, k, alt, _ in rows if alt and k}
    kept = [line for t, k, alt, line in rows if alt or k is None or (t, _stem(k)) not in replaced]
    return "\n".join(kept) + "\n"


def _stem(key: str) -> str:
    return key.removesuffix("_file").removesuffix("_credential")


def _with_real_files(text: str, where: Path) -> str:
    """Point every ``*_file`` option at a file in ``where`` holding a recognisable value."""
    where.mkdir(exist_ok=True)
    table: tuple[str, ...] = ()
    out = []
    for line in text.splitlines():
        if match := HEADER.match(line):
            table = tuple(match[1].split("."))
        elif match := FILE_OPTION.match(line):
            path = where / f"{'.'.join(table)}.{match[1]}"
            # A PIN is digits (a caller types it); every other secret is any text.
            secret = "4711" if match[1] == "pin_file" else f"secret-{'.'.join(table)}"
            path.write_text(f"{secret}\n", encoding="utf-8")
            line = f"{match[1]} = {json.dumps(str(path))}"
        out.append(line)
    return "\n".join(out) + "\n"


def _write_config(directory: Path, text: str) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / "rolekeeper.toml"
    path.write_text(text, encoding="utf-8")
    return path


# --- 1. the example as shipped -----------------------------------------------------------


def test_example_loads_as_shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    config = tmp_path / "rolekeeper.toml"
    shutil.copyfile(EXAMPLE, config)
    settings = load_settings(config)
    assert settings.source_files == (config,)
    # The optional backends need secrets, so they are all off in the example.
    assert (settings.imap, settings.smtp, settings.exchange, settings.twilio) == (None,) * 4
    assert settings.database.url == "sqlite:////var/lib/rolekeeper/rolekeeper.db"


# --- 2. completeness ---------------------------------------------------------------------


def test_model_walk_sees_the_tree() -> None:
    """Guard the walk itself: nested tables, the alias and exclusions are handled."""
    assert ("import", "clients", "segment_values") in VALUES
    assert ("imap", "password_credential") in VALUES
    assert ("twilio", "auth_token_file") in VALUES
    assert ("import", "people") in TABLES
    assert ("imap", "password") not in VALUES
    assert ("twilio", "auth_token") not in VALUES
    assert ("source_files",) not in VALUES
    assert not any(path[0] == "import_" for path in VALUES)


@pytest.mark.parametrize("path", TABLES, ids=".".join)
def test_every_table_is_shown(path: tuple[str, ...]) -> None:
    shown = _keys_by_table(_example_text())
    assert any(table[: len(path)] == path for table in shown), (
        f"config/rolekeeper.toml has no [{'.'.join(path)}] (or # [{'.'.join(path)}]) table"
    )


@pytest.mark.parametrize("path", VALUES, ids=".".join)
def test_every_option_is_shown(path: tuple[str, ...]) -> None:
    shown = _keys_by_table(_example_text())
    table, key = path[:-1], path[-1]
    # A mapping option may be shown as its own table, like [import.clients.columns].
    as_tables = any(t[: len(path)] == path for t in shown)
    assert key in shown.get(table, set()) or as_tables, (
        f"config/rolekeeper.toml does not show {'.'.join(path)}: add '# {key} = ...' "
        f"with a comment under [{'.'.join(table)}]"
    )


def test_every_shown_option_exists() -> None:
    """No stale or misspelt keys, including the ``## or:`` alternatives."""
    for table, keys in _keys_by_table(_example_text()).items():
        if table[:1] == ("import",) and table[-1:] == ("columns",):
            assert keys <= set(IMPORT_FIELDS[table[1]]), table
            continue
        model = _model_at(table)
        assert model is not None, f"[{'.'.join(table)}] is not a table rolekeeper knows"
        known = {f.alias or n for n, f in model.model_fields.items() if not f.exclude}
        assert keys <= known, f"[{'.'.join(table)}]: unknown keys {sorted(keys - known)}"


@pytest.mark.parametrize("kind", sorted(IMPORT_FIELDS))
def test_column_examples_name_every_field(kind: str) -> None:
    shown = _keys_by_table(_example_text()).get(("import", kind, "columns"), set())
    assert shown == set(IMPORT_FIELDS[kind])


def test_credential_names_match_the_systemd_unit() -> None:
    unit = UNIT.read_text(encoding="utf-8")
    loaded = set(re.findall(r"^LoadCredential=([^:\s]+):", unit, re.MULTILINE))
    # A directory source must exist at start (fatal otherwise): the unit shows it for a
    # drop-in, to be enabled only where the config names it.
    loaded |= set(re.findall(r"^#LoadCredential=([^:\s]+):/", unit, re.MULTILINE))
    text = _uncommented(_example_text(), alternatives=True)
    named = {m[2] for line in text.splitlines() if (m := CREDENTIAL_OPTION.match(line))}
    assert named == loaded
    assert "/etc/credstore/rolekeeper.NAME" in _example_text()


# --- 3. every shown value is valid -------------------------------------------------------


def test_uncommenting_only_touches_options() -> None:
    text = _example_text()
    live = _uncommented(text)
    assert live != text
    for line in live.splitlines():
        if line.startswith("#"):
            assert not COMMENTED_OPTION.match(line)
    assert "## or:" in live  # the alternatives stay prose
    tomllib.loads(live)


def test_every_option_uncommented_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    text = _with_real_files(_uncommented(_example_text()), tmp_path / "secrets")
    settings = load_settings(_write_config(tmp_path / "etc", text))
    for backend in (settings.imap, settings.smtp, settings.exchange):
        assert backend is not None and backend.password is not None
    assert settings.twilio is not None and settings.twilio.auth_token is not None
    assert settings.database.password is not None
    assert settings.database.password.get_secret_value() == "secret-database"
    assert settings.import_.clients.columns["client_id"] == "ID клиента"
    assert settings.import_.clients.segment_values["золото"] == "vip"


def test_every_alternative_uncommented_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = _with_real_files(_uncommented(_example_text(), alternatives=True), tmp_path / "files")
    creds = tmp_path / "credentials"
    creds.mkdir()
    for line in text.splitlines():
        if match := CREDENTIAL_OPTION.match(line):
            secret = "4711" if match[2].endswith("-pin") else f"secret-{match[2]}"
            (creds / match[2]).write_text(f"{secret}\n", encoding="utf-8")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    settings = load_settings(_write_config(tmp_path / "etc", text))
    assert settings.database.url.startswith("postgresql://")
    assert settings.imap is not None and settings.imap.password is not None
    assert settings.imap.password.get_secret_value() == "secret-imap-password"
    assert settings.twilio is not None and settings.twilio.auth_token is not None
    assert settings.twilio.auth_token.get_secret_value() == "secret-twilio-auth-token"


def test_commented_values_are_the_defaults() -> None:
    """A commented-out option shows its real default, unless it is only an example."""
    shipped = tomllib.loads(_example_text())
    live = tomllib.loads(_uncommented(_example_text()))
    checked = 0
    for path in VALUES:
        if path in EXAMPLE_NOT_DEFAULT or _lookup(shipped, path) is not None:
            continue
        shown = _lookup(live, path)
        default = _field(path).default
        if shown is None or default is None or default is PydanticUndefined:
            continue  # required, unset by default, or computed (instance_id)
        expected = list(default) if isinstance(default, tuple) else default
        assert shown == expected, f"{'.'.join(path)}: example shows {shown!r}, default {default!r}"
        checked += 1
    assert checked > 30


def _lookup(data: dict[str, Any], path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data
