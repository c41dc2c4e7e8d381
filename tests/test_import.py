"""CSV import: dialects, encodings, mapping, duplicates, and all-or-nothing on bad rows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from rolekeeper.config import Settings, settings_from_mapping
from rolekeeper.directory import queries
from rolekeeper.directory.importer import (
    ImportReport,
    import_clients,
    import_people,
    import_roles,
)
from rolekeeper.errors import ImportFileError
from rolekeeper.store.db import transaction
from rolekeeper.store.models import (
    AuditEntry,
    Client,
    ClientDomain,
    Contact,
    Person,
    PersonalAddress,
    Role,
    RoleHolder,
)
from rolekeeper.store.open import Store, open_store
from tests.conftest import sqlite_mapping

PEOPLE = """\
name,email,personal_emails,personal_phones,work_phone,supervisor
Анна Волкова,anna.volkova@acme.example,,,+7 495 120-45-10,
Ivan Petrov,Ivan.Petrov@ACME.example,"ivan@mail.ru, vanya@yandex.ru",8 (903) 111-22-33,+74951204521,anna.volkova@acme.example
Мария Кузнецова,maria@acme.example,masha@bk.ru,,,anna.volkova@acme.example
"""
ROLES = """\
role,name,address,number,holder
manager1,Менеджер 1,manager1@acme.example,+7 495 120-45-01,ivan.petrov@acme.example
manager2,Менеджер 2,manager2@acme.example,+7 495 120-45-02,maria@acme.example
"""


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def run_import(store: Store, settings: Settings, kind: str, path: Path, **kw: bool) -> ImportReport:
    with transaction(store.sessions) as session:
        if kind == "people":
            return import_people(session, path, settings, "test")
        if kind == "roles":
            return import_roles(session, path, settings, "test", **kw)
        return import_clients(session, path, settings, "test")


def count(store: Store, model: type) -> int:
    with store.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


@pytest.fixture
def org(sqlite_store: Store, sqlite_settings: Settings, tmp_path: Path) -> Store:
    run_import(sqlite_store, sqlite_settings, "people", write(tmp_path / "p.csv", PEOPLE))
    run_import(sqlite_store, sqlite_settings, "roles", write(tmp_path / "r.csv", ROLES))
    return sqlite_store


def test_people_import_normalises_and_is_idempotent(
    sqlite_store: Store, sqlite_settings: Settings, tmp_path: Path
) -> None:
    path = write(tmp_path / "people.csv", PEOPLE)
    report = run_import(sqlite_store, sqlite_settings, "people", path)
    assert (report.created, report.updated, report.unchanged) == (3, 0, 0)
    with sqlite_store.sessions() as session:
        ivan = session.scalars(
            select(Person).where(Person.named_address == "ivan.petrov@acme.example")
        ).one()
        assert ivan.work_phone == "+74951204521"
        assert ivan.supervisor is not None and ivan.supervisor.name == "Анна Волкова"
        personal = set(
            session.scalars(
                select(PersonalAddress.address).where(PersonalAddress.person_id == ivan.id)
            )
        )
        assert personal == {"ivan@mail.ru", "vanya@yandex.ru"}
    again = run_import(sqlite_store, sqlite_settings, "people", path)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 3)
    assert count(sqlite_store, PersonalAddress) == 3


def test_excel_dialect_bom_semicolon_quotes_and_cyrillic(
    sqlite_store: Store, sqlite_settings: Settings, tmp_path: Path
) -> None:
    text = (
        "name;email;personal_emails;supervisor\r\n"
        '"Петров; Иван ""Ваня""";ivan@acme.example;"a@mail.ru;\r\nb@mail.ru";\r\n'
        "Ёлкина Анна;anna@acme.example;;ivan@acme.example\r\n"
    )
    path = write(tmp_path / "people.csv", "\ufeff" + text)
    report = run_import(sqlite_store, sqlite_settings, "people", path)
    assert report.created == 2
    with sqlite_store.sessions() as session:
        names = set(session.scalars(select(Person.name)))
    assert names == {'Петров; Иван "Ваня"', "Ёлкина Анна"}
    assert count(sqlite_store, PersonalAddress) == 2


def test_bad_row_names_its_line_and_nothing_is_imported(
    sqlite_store: Store, sqlite_settings: Settings, tmp_path: Path
) -> None:
    text = PEOPLE + "Broken,not-an-address,,,,\n" + "Late,late@acme.example,,,,\n"
    path = write(tmp_path / "people.csv", text)
    with pytest.raises(ImportFileError) as caught:
        run_import(sqlite_store, sqlite_settings, "people", path)
    assert caught.value.problems == [
        "line 5: email: 'not-an-address' is not an e-mail address",
        "nothing from this file was imported",
    ]
    assert count(sqlite_store, Person) == 0
    assert count(sqlite_store, AuditEntry) == 0


def test_multiline_quoted_cell_keeps_line_numbers_right(
    sqlite_store: Store, sqlite_settings: Settings, tmp_path: Path
) -> None:
    text = 'name,email\n"Two\nlines",a@acme.example\nBad,@\n'
    with pytest.raises(ImportFileError) as caught:
        run_import(sqlite_store, sqlite_settings, "people", write(tmp_path / "p.csv", text))
    assert caught.value.problems[0] == "line 4: email: '@' is not an e-mail address"


def test_duplicate_keys_are_refused(
    sqlite_store: Store, sqlite_settings: Settings, tmp_path: Path
) -> None:
    text = "name,email\nA,a@acme.example\nB,b@acme.example\nA again,A@acme.example\n"
    with pytest.raises(ImportFileError) as caught:
        run_import(sqlite_store, sqlite_settings, "people", write(tmp_path / "p.csv", text))
    assert caught.value.problems[0] == "line 4: duplicate email 'a@acme.example' (first on line 2)"
    assert count(sqlite_store, Person) == 0


def test_unknown_supervisor_and_self_supervision(
    sqlite_store: Store, sqlite_settings: Settings, tmp_path: Path
) -> None:
    text = "name,email,supervisor\nA,a@acme.example,boss@acme.example\nB,b@acme.example,b@acme.example\n"
    with pytest.raises(ImportFileError) as caught:
        run_import(sqlite_store, sqlite_settings, "people", write(tmp_path / "p.csv", text))
    assert caught.value.problems[:2] == [
        "line 2: supervisor boss@acme.example is not a known person",
        "line 3: a person cannot be their own supervisor",
    ]


def test_not_utf8_is_refused_with_its_line(
    sqlite_store: Store, sqlite_settings: Settings, tmp_path: Path
) -> None:
    path = write(
        tmp_path / "p.csv", "name,email\nA,a@acme.example\nИван,i@acme.example\n", "cp1251"
    )
    with pytest.raises(ImportFileError) as caught:
        run_import(sqlite_store, sqlite_settings, "people", path)
    assert caught.value.problems == ["line 3: not UTF-8 text (save the export as 'CSV UTF-8')"]


def test_missing_column_is_named(
    sqlite_store: Store, sqlite_settings: Settings, tmp_path: Path
) -> None:
    path = write(tmp_path / "p.csv", "ФИО;Почта\nA;a@acme.example\n")
    with pytest.raises(ImportFileError) as caught:
        run_import(sqlite_store, sqlite_settings, "people", path)
    assert caught.value.problems == [
        "line 1: missing column(s): name, email; the header has: ФИО, Почта"
    ]


def test_column_mapping_from_config(tmp_path: Path) -> None:
    settings = settings_from_mapping(
        sqlite_mapping(
            tmp_path / "rk.db",
            **{"import": {"people": {"columns": {"name": "ФИО", "email": "Почта"}}}},
        )
    )
    store = open_store(settings)
    try:
        path = write(tmp_path / "p.csv", "ФИО;Почта;Лишняя колонка\nАнна;anna@acme.example;x\n")
        assert run_import(store, settings, "people", path).created == 1
    finally:
        store.close()


def test_empty_file_and_blank_lines(
    sqlite_store: Store, sqlite_settings: Settings, tmp_path: Path
) -> None:
    with pytest.raises(ImportFileError) as caught:
        run_import(sqlite_store, sqlite_settings, "people", write(tmp_path / "e.csv", ""))
    assert caught.value.problems == ["the file is empty"]
    path = write(tmp_path / "b.csv", "name,email\n\nA,a@acme.example\n,\n\n")
    assert run_import(sqlite_store, sqlite_settings, "people", path).created == 1


def test_roles_bind_holders_and_refuse_silent_handover(
    org: Store, sqlite_settings: Settings, tmp_path: Path
) -> None:
    with org.sessions() as session:
        roles = {r["role"]: r for r in queries.list_roles(session)}
    assert roles["manager1"]["holder"] == "ivan.petrov@acme.example"
    assert roles["manager1"]["number"] == "+74951204501"
    moved = ROLES.replace("+7 495 120-45-01,ivan.petrov", "+7 495 120-45-01,maria")
    path = write(tmp_path / "moved.csv", moved)
    with pytest.raises(ImportFileError) as caught:
        run_import(org, sqlite_settings, "roles", path)
    assert caught.value.problems[0].startswith(
        "line 2: manager1 is held by ivan.petrov@acme.example; a change of holder is a handover"
    )
    report = run_import(org, sqlite_settings, "roles", path, reassign=True)
    assert report.warnings == [
        "manager1: holder changed from ivan.petrov@acme.example to maria@acme.example by "
        "import; no notices were sent"
    ]
    with org.sessions() as session:
        history = session.execute(
            select(Person.named_address, RoleHolder.ended_at)
            .join(Person, Person.id == RoleHolder.person_id)
            .join(Role, Role.id == RoleHolder.role_id)
            .where(Role.key == "manager1")
            .order_by(RoleHolder.id)
        ).all()
    assert [h[0] for h in history] == ["ivan.petrov@acme.example", "maria@acme.example"]
    assert history[0][1] is not None and history[1][1] is None


def test_role_cannot_reuse_a_person_address_or_unknown_holder(
    org: Store, sqlite_settings: Settings, tmp_path: Path
) -> None:
    text = (
        "role,address,holder\n"
        "x1,maria@acme.example,\n"
        "x2,x2@acme.example,ghost@acme.example\n"
        "manager9,manager1@acme.example,\n"
    )
    with pytest.raises(ImportFileError) as caught:
        run_import(org, sqlite_settings, "roles", write(tmp_path / "r.csv", text))
    assert caught.value.problems[:3] == [
        "line 2: maria@acme.example is a person's named address, not a role's",
        "line 3: holder ghost@acme.example is not a known person",
        "line 4: manager1@acme.example belongs to role manager1",
    ]


CLIENTS = """\
client_id;client;domains;segment;role;contact;email;phone;mobile;language
C1;ООО «Ромашка»;romashka.example;VIP;manager1;Ольга Иванова;olga@romashka.example;+7 495 111-22-33;нет;ru
C1;ООО «Ромашка»;;VIP;manager1;Пётр Сидоров;petr@romashka.example;+7 916 000-11-22;да;
C2;Nordic Timber AB;nordic.example, nordic-timber.example;key;manager2;Lars Weber;lars@nordic.example;;;en
C3;Без контактов;;Мелкий;;;;;;
"""


def test_clients_group_rows_and_map_segments(
    org: Store, sqlite_settings: Settings, tmp_path: Path
) -> None:
    path = write(tmp_path / "c.csv", CLIENTS)
    report = run_import(org, sqlite_settings, "clients", path)
    assert (report.rows, report.records, report.created) == (4, 3, 3)
    with org.sessions() as session:
        clients = {c["client_id"]: c for c in queries.list_clients(session)}
        petr = session.scalars(
            select(Contact).where(Contact.email == "petr@romashka.example")
        ).one()
        assert petr.is_mobile and petr.phone == "+79160001122" and petr.language == "en"
        vip = queries.list_clients(session, segment="vip")
        by_role = queries.list_clients(session, role="manager2")
    assert clients["C1"]["segment"] == "vip" and clients["C1"]["contacts"] == 2
    assert clients["C3"]["segment"] == "minor" and clients["C3"]["role"] is None
    assert [c["client_id"] for c in vip] == ["C1"]
    assert [c["client_id"] for c in by_role] == ["C2"]
    assert count(org, ClientDomain) == 3
    again = run_import(org, sqlite_settings, "clients", path)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 3)


def test_contact_dropped_from_export_is_kept_as_removed(
    org: Store, sqlite_settings: Settings, tmp_path: Path
) -> None:
    run_import(org, sqlite_settings, "clients", write(tmp_path / "c.csv", CLIENTS))
    fewer = "\n".join(line for line in CLIENTS.splitlines() if "petr@" not in line) + "\n"
    report = run_import(org, sqlite_settings, "clients", write(tmp_path / "c2.csv", fewer))
    assert (report.updated, report.removed) == (1, 1)
    with org.sessions() as session:
        petr = session.scalars(
            select(Contact).where(Contact.email == "petr@romashka.example")
        ).one()
        assert petr.removed_at is not None
        assert {c["client_id"]: c["contacts"] for c in queries.list_clients(session)}["C1"] == 1
    back = run_import(org, sqlite_settings, "clients", write(tmp_path / "c3.csv", CLIENTS))
    assert back.updated == 1


def test_client_rows_that_disagree_are_refused(
    org: Store, sqlite_settings: Settings, tmp_path: Path
) -> None:
    text = CLIENTS.replace("C1;ООО «Ромашка»;;VIP", "C1;ООО «Ромашка»;;key")
    text += "C9;Dup;;key;manager1;X;lars@nordic.example;;;\nC9;Dup;;key;manager1;Y;LARS@nordic.example;;;\n"
    text += "C10;Bad;;platinum;nobody;;;;;\n"
    with pytest.raises(ImportFileError) as caught:
        run_import(org, sqlite_settings, "clients", write(tmp_path / "c.csv", text))
    assert caught.value.problems[:3] == [
        "line 3: segment 'key' differs from 'vip' given for client C1 on line 2",
        "line 7: duplicate contact lars@nordic.example of client C9 (first on line 6)",
        "line 8: segment 'platinum' is not one of vip, key, regular, minor (map your CRM's "
        "words in [import.clients] segment_values)",
    ]
    assert count(org, Client) == 0


def test_unknown_role_is_refused(org: Store, sqlite_settings: Settings, tmp_path: Path) -> None:
    text = "client_id,client,segment,role\nC1,A,key,manager7\n"
    with pytest.raises(ImportFileError) as caught:
        run_import(org, sqlite_settings, "clients", write(tmp_path / "c.csv", text))
    assert caught.value.problems[0] == "line 2: role 'manager7' is not a known role"


def test_cli_import_reports_and_exits_nonzero(tmp_path: Path) -> None:
    config = tmp_path / "rk.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/rk.db"\n')
    bad = write(tmp_path / "p.csv", "name,email\nA,a@acme.example\nB,b@\n")
    cmd = [sys.executable, "-m", "rolekeeper", "--config", str(config), "import", "people"]
    result = subprocess.run([*cmd, str(bad)], capture_output=True, text=True, check=False)
    assert result.returncode == 3
    assert f"{bad}: line 3: email: 'b@' is not an e-mail address" in result.stderr
    assert "Traceback" not in result.stderr
    good = write(tmp_path / "p2.csv", PEOPLE)
    result = subprocess.run([*cmd, str(good), "--json"], capture_output=True, text=True, check=True)
    assert '"created": 3' in result.stdout


def test_bad_phone_numbers_name_every_line(
    org: Store, sqlite_settings: Settings, tmp_path: Path
) -> None:
    text = (
        "client_id,client,segment,contact,phone\n"
        "C1,A,key,X,+7 495 111-22-33\n"
        "C1,A,key,Y,12\n"
        "C2,B,key,Z,12\n"
        "C3,C,key,W,call me\n"
    )
    with pytest.raises(ImportFileError) as caught:
        run_import(org, sqlite_settings, "clients", write(tmp_path / "c.csv", text))
    assert caught.value.problems == [
        "line 3: phone: '12' is not a possible phone number for region RU",
        "line 4: phone: '12' is not a possible phone number for region RU",
        "line 5: phone: 'call me' is not a phone number",
        "nothing from this file was imported",
    ]


def test_many_numbers_are_checked_on_every_core(
    org: Store, sqlite_settings: Settings, tmp_path: Path
) -> None:
    from rolekeeper.directory import phones

    lines = ["client_id,client,segment,contact,phone"]
    lines += [
        f"C{n},Client {n},regular,P{n},+7 495 {n // 10000:03d}-{n % 10000:04d}"
        for n in range(phones.PARALLEL_MIN)
    ]
    lines.append("C-bad,Bad,regular,Q,+7 12")
    path = write(tmp_path / "c.csv", "\n".join(lines) + "\n")
    with pytest.raises(ImportFileError) as caught:
        run_import(org, sqlite_settings, "clients", path)
    assert caught.value.problems[0] == (
        f"line {phones.PARALLEL_MIN + 2}: phone: '+7 12' is not a possible phone number for region RU"
    )
    good = write(tmp_path / "c2.csv", "\n".join(lines[:-1]) + "\n")
    assert run_import(org, sqlite_settings, "clients", good).created == phones.PARALLEL_MIN
    with org.sessions() as session:
        numbers = set(session.scalars(select(Contact.phone)))
    assert "+74950000001" in numbers and len(numbers) == phones.PARALLEL_MIN


def test_import_on_sqlite_and_postgresql(any_settings: Settings, tmp_path: Path) -> None:
    store = open_store(any_settings)
    try:
        run_import(store, any_settings, "people", write(tmp_path / "p.csv", PEOPLE))
        run_import(store, any_settings, "roles", write(tmp_path / "r.csv", ROLES))
        report = run_import(store, any_settings, "clients", write(tmp_path / "c.csv", CLIENTS))
        assert (report.created, report.records) == (3, 3)
        again = run_import(store, any_settings, "clients", write(tmp_path / "c.csv", CLIENTS))
        assert (again.created, again.updated, again.unchanged) == (0, 0, 3)
        with store.sessions() as session:
            rows = session.execute(
                select(
                    Client.crm_id,
                    Client.segment,
                    Client.created_at,
                    Contact.phone,
                    Contact.is_mobile,
                    Contact.language,
                )
                .join(Contact, Contact.client_id == Client.id)
                .order_by(Contact.email)
            ).all()
        assert [(r[0], r[1], r[3], r[4], r[5]) for r in rows] == [
            ("C2", "key", None, False, "en"),
            ("C1", "vip", "+74951112233", False, "ru"),
            ("C1", "vip", "+79160001122", True, "en"),
        ]
        assert all(r[2] is not None for r in rows)
    finally:
        store.close()
