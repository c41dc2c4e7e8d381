"""Benchmark the client CSV import against a plain bulk insert, on SQLite and PostgreSQL.

Run from the repository root:

    .venv/bin/python bench/import.py [--clients 50000] [--contacts 100000] [--skip-postgres]

It generates a realistic CRM export (UTF-8 with BOM, `;` delimited, Cyrillic and Latin
names, phone numbers in mixed national and international forms) with a fixed random seed,
then for each database:

* times ``import_clients`` on a fresh store, in one transaction (read, parse, validate,
  write, commit), and again on the same file (an idempotent re-import: nothing created);
* times a plain bulk insert of exactly the same rows, already parsed in memory, into a
  second fresh store with the same schema (``executemany`` in one transaction): the raw
  database cost the importer is compared with.

PostgreSQL is used at 127.0.0.1:5432 as user ``postgres``; two databases named
``rk_bench_<pid>_*`` are created and dropped again. If the server is unreachable its
section holds ``{"error": ...}``.

It prints one JSON document to stdout: row counts, per-database timings, the ratio of
import to baseline, whether the SQLite import meets the 10 s target, and the
machine. The exit code is 1 if the SQLite run fails, or if any store ends up with other
than the expected numbers of clients and contacts, or a re-import creates anything.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import sessionmaker

from rolekeeper.config import CLIENT_FIELDS, Settings, settings_from_mapping
from rolekeeper.directory.importer import ImportReport, import_clients
from rolekeeper.store.db import transaction
from rolekeeper.store.models import Client, ClientDomain, Contact, Role
from rolekeeper.store.open import open_store

SEED = 20240501
TARGET_IMPORT_S = 10.0
ROLE_COUNT = 20
PG_HOST = "postgresql://postgres@127.0.0.1:5432"
HEADER = CLIENT_FIELDS  # the canonical client columns, so no mapping is needed

# --- generated data ---------------------------------------------------------------------


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_TRANSLIT = dict(
    zip(
        "абвгдеёжзийклмнопрстуфхцчшщъыьэюя",
        _words("a b v g d e e zh z i y k l m n o p r s t u f kh ts ch sh shch - y - e yu ya"),
        strict=True,
    )
)
RU_FIRST = _words(
    "Александр Алексей Андрей Анна Антон Борис Вадим Валентина Василий Виктория Владимир "
    "Галина Дмитрий Евгений Екатерина Елена Иван Игорь Ирина Кирилл Ксения Людмила Максим "
    "Марина Мария Михаил Наталья Никита Николай Олег Ольга Павел Пётр Роман Светлана Сергей "
    "Татьяна Юлия Юрий Ярослав"
)
RU_LAST = _words(
    "Иванов Смирнов Кузнецов Попов Васильев Петров Соколов Михайлов Новиков Фёдоров "
    "Морозов Волков Алексеев Лебедев Семёнов Егоров Павлов Козлов Степанов Николаев Орлов "
    "Андреев Макаров Никитин Захаров Зайцев Соловьёв Борисов Яковлев Григорьев Романов "
    "Воробьёв Сергеев Кузьмин Фролов Александров Дмитриев Королёв Гусев Киселёв"
)
_RU_FEMININE = frozenset(
    _words(
        "Анна Валентина Виктория Галина Екатерина Елена Ирина Ксения Людмила Марина Мария "
        "Наталья Ольга Светлана Татьяна Юлия"
    )
)
EN_FIRST = _words(
    "James Mary John Patricia Robert Jennifer Michael Linda William Elizabeth David Susan "
    "Richard Jessica Thomas Sarah Charles Karen Daniel Nancy Oliver Emma Henry Sophie"
)
EN_LAST = _words(
    "Smith Johnson Williams Brown Jones Miller Davis Wilson Taylor Clark Walker Wright "
    "Hughes Evans Roberts Turner Hall Green Baker Cooper Hill Ward Morris Bell"
)
RU_FORMS = ("ООО", "АО", "ПАО", "ЗАО", "ИП", "ООО ТД", "ГК")
RU_WORDS = _words(
    "Ромашка Северный Ветер Альфа Вектор Гранит Сибирь Техно Строй Инвест Урал Восток "
    "Меридиан Прогресс Нева Волга Лидер Импульс Кристалл Профи Старт Форвард Арсенал "
    "Гарант Полюс Магистраль Эталон Ресурс Союз Сфера Фаворит Орион Монолит Континент"
)
EN_FORMS = ("LLC", "Ltd", "GmbH", "Inc.", "plc", "B.V.", "S.A.")
EN_WORDS = _words(
    "Acme Northern Blue River Summit Apex Global Pioneer Vertex Harbor Silver Oak Atlas "
    "Crown Delta Eagle Falcon Granite Horizon Liberty Maple Nova Orbit Pacific Quantum "
    "Sterling Titan Union Vista Zenith"
)
EN_TRADES = ("Logistics", "Trading", "Systems", "Holdings", "Partners", "Foods", "Energy")
SEGMENTS = (
    # (label written by the CRM, canonical value, weight)
    ("vip", "vip", 3),
    ("VIP", "vip", 2),
    ("ВИП", "vip", 1),
    ("key", "key", 6),
    ("Key", "key", 2),
    ("ключевой", "key", 2),
    ("regular", "regular", 30),
    ("Regular", "regular", 10),
    ("обычный", "regular", 10),
    ("minor", "minor", 24),
    ("мелкий", "minor", 10),
)
RU_AREAS = ("495", "499", "812", "343", "383", "846", "861")
TLDS = (".ru", ".ru", ".ru", ".com", ".net", ".su", ".org")


@dataclass(frozen=True, slots=True)
class GenContact:
    cells: tuple[str, str, str, str, str]  # contact, email, phone, mobile, language
    name: str
    email: str | None
    phone: str | None
    is_mobile: bool
    language: str


@dataclass(frozen=True, slots=True)
class GenClient:
    cells: tuple[str, str, str, str, str]  # client_id, client, domains, segment, role
    crm_id: str
    name: str
    domains: tuple[str, ...]
    segment: str
    role: str | None
    contacts: tuple[GenContact, ...]


def translit(text: str) -> str:
    return "".join(_TRANSLIT.get(ch, ch) for ch in text.lower()).replace("-", "")


def contact_counts(rng: random.Random, clients: int, contacts: int) -> list[int]:
    """1 to 3 contacts per client, exactly `contacts` in all."""
    counts = [1] * clients
    open_ = list(range(clients))
    for _ in range(contacts - clients):
        pick = rng.randrange(len(open_))
        index = open_[pick]
        counts[index] += 1
        if counts[index] == 3:
            open_[pick] = open_[-1]
            open_.pop()
    return counts


def ru_phone(rng: random.Random, mobile: bool) -> tuple[str, str]:
    """(as written in the export, E.164) for a Russian number."""
    area = f"9{rng.randrange(100):02d}" if mobile else rng.choice(RU_AREAS)
    a, b, c = f"{rng.randrange(1000):03d}", f"{rng.randrange(100):02d}", f"{rng.randrange(100):02d}"
    written = rng.choice(
        (
            f"+7 {area} {a}-{b}-{c}",
            f"8 ({area}) {a}-{b}-{c}",
            f"+7{area}{a}{b}{c}",
            f"8{area}{a}{b}{c}",
            f"+7 ({area}) {a} {b} {c}",
            f"8-{area}-{a}-{b}-{c}",
            f"{area} {a}{b}{c}",
        )
    )
    return written, f"+7{area}{a}{b}{c}"


def uk_phone(rng: random.Random, mobile: bool) -> tuple[str, str]:
    if mobile:
        tail = f"{rng.randrange(1000):03d}"
        return rng.choice((f"+44 7700 900{tail}", f"+447700900{tail}")), f"+447700900{tail}"
    tail = f"{rng.randrange(10000):04d}"
    return rng.choice((f"+44 20 7946 {tail}", f"+44 (0)20 7946 {tail}")), f"+44207946{tail}"


def make_client(rng: random.Random, index: int, roles: Sequence[str], n: int) -> GenClient:
    cyrillic = rng.random() < 0.65
    if cyrillic:
        w1, w2 = rng.sample(RU_WORDS, 2)
        name = rng.choice(
            (f"{rng.choice(RU_FORMS)} «{w1} {w2}»", f'{rng.choice(RU_FORMS)} "{w1}"', f"{w1}-{w2}")
        )
        slug = f"{translit(w1)}-{translit(w2)}"
    else:
        w1, w2 = rng.sample(EN_WORDS, 2)
        name = f"{w1} {rng.choice((w2, rng.choice(EN_TRADES)))} {rng.choice(EN_FORMS)}"
        slug = f"{w1}-{w2}".lower()
    domain = f"{slug}-{index}{rng.choice(TLDS)}"
    domains = [domain]
    written_domains = [domain.upper() if rng.random() < 0.05 else domain]
    if cyrillic and rng.random() < 0.1:
        idn = f"{w1.lower()}-{index}.рф"
        domains.append(idn.encode("idna").decode("ascii"))
        written_domains.append(idn)
    label, segment = rng.choices(
        [(s[0], s[1]) for s in SEGMENTS], weights=[s[2] for s in SEGMENTS]
    )[0]
    role = None if rng.random() < 0.05 else rng.choice(roles)
    crm_id = f"CRM-{index:07d}"
    contacts: list[GenContact] = []
    emails: set[str] = set()
    phones: set[str] = set()
    for _ in range(n):
        russian = cyrillic or rng.random() < 0.2
        if russian:
            first, last = rng.choice(RU_FIRST), rng.choice(RU_LAST)
            if first in _RU_FEMININE:
                last += "а"
            person = f"{last} {first}" if rng.random() < 0.3 else f"{first} {last}"
            local = f"{translit(first)}.{translit(last)}"
        else:
            first, last = rng.choice(EN_FIRST), rng.choice(EN_LAST)
            person = f"{first} {last}"
            local = f"{first}.{last}".lower()
        email: str | None = None
        written_email = ""
        if rng.random() < 0.95:
            candidate, k = f"{local}@{domain}", 2
            while candidate in emails:
                candidate, k = f"{local}{k}@{domain}", k + 1
            emails.add(candidate)
            email = candidate
            written_email = candidate.title() if rng.random() < 0.1 else candidate
        phone: str | None = None
        written_phone = ""
        mobile = rng.random() < 0.5
        if email is None or rng.random() < 0.9:
            while True:
                make = ru_phone if russian or rng.random() < 0.5 else uk_phone
                written_phone, phone = make(rng, mobile)
                if phone not in phones:
                    phones.add(phone)
                    break
        language = "ru" if russian and rng.random() < 0.9 else "en"
        contacts.append(
            GenContact(
                cells=(person, written_email, written_phone, "yes" if mobile else "no", language),
                name=person,
                email=email,
                phone=phone,
                is_mobile=mobile,
                language=language,
            )
        )
    return GenClient(
        cells=(crm_id, name, ", ".join(written_domains), label, role or ""),
        crm_id=crm_id,
        name=name,
        domains=tuple(domains),
        segment=segment,
        role=role,
        contacts=tuple(contacts),
    )


def generate(clients: int, contacts: int) -> tuple[list[str], list[GenClient]]:
    rng = random.Random(SEED)
    roles = [f"account-manager-{i:02d}" for i in range(1, ROLE_COUNT + 1)]
    counts = contact_counts(rng, clients, contacts)
    return roles, [make_client(rng, i + 1, roles, n) for i, n in enumerate(counts)]


def write_csv(path: Path, clients: Sequence[GenClient]) -> int:
    """The Excel dialect: UTF-8 with BOM, `;` between cells, CRLF. Returns the data rows."""
    rows = 0
    with path.open("w", encoding="utf-8-sig", newline="") as out:
        writer = csv.writer(out, delimiter=";")
        writer.writerow(HEADER)
        for client in clients:
            for contact in client.contacts:
                writer.writerow((*client.cells, *contact.cells))
                rows += 1
    return rows


# --- the importer -----------------------------------------------------------------------


def settings_for(url: str) -> Settings:
    return settings_from_mapping(
        {"database": {"url": url}, "organisation": {"default_region": "RU"}}
    )


def add_roles(factory: sessionmaker[Any], roles: Sequence[str]) -> dict[str, int]:
    with transaction(factory) as session:
        session.add_all(
            Role(key=key, name=f"Менеджер {key[-2:]}", address=f"{key}@firm.example")
            for key in roles
        )
    with factory() as session:
        return {key: role_id for key, role_id in session.execute(select(Role.key, Role.id))}


def counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            model.__tablename__: int(
                connection.scalar(select(func.count()).select_from(model)) or 0
            )
            for model in (Client, ClientDomain, Contact)
        }


def timed_import(
    factory: sessionmaker[Any], path: Path, settings: Settings
) -> tuple[float, ImportReport]:
    start = time.perf_counter()
    with transaction(factory) as session:
        report = import_clients(session, path, settings, "bench")
    return time.perf_counter() - start, report


def run_importer(url: str, csv_path: Path, roles: Sequence[str]) -> dict[str, Any]:
    settings = settings_for(url)
    store = open_store(settings)
    try:
        add_roles(store.sessions, roles)
        import_s, first = timed_import(store.sessions, csv_path, settings)
        after_import = counts(store.engine)
        reimport_s, second = timed_import(store.sessions, csv_path, settings)
        after_reimport = counts(store.engine)
    finally:
        store.close()
    return {
        "import_s": round(import_s, 3),
        "reimport_s": round(reimport_s, 3),
        "import_created": first.created,
        "reimport_created": second.created,
        "reimport_updated": second.updated,
        "reimport_unchanged": second.unchanged,
        "counts": after_import,
        "counts_after_reimport": after_reimport,
    }


# --- the baseline -----------------------------------------------------------------------


def baseline_rows(
    clients: Sequence[GenClient], role_ids: dict[str, int], now: object
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    client_rows, domain_rows, contact_rows = [], [], []
    for cid, client in enumerate(clients, start=1):
        role_id = role_ids[client.role] if client.role else None
        client_rows.append((cid, client.crm_id, client.name, client.segment, role_id, now, now))
        domain_rows.extend((cid, domain) for domain in client.domains)
        contact_rows.extend(
            (cid, c.name, c.email, c.phone, c.is_mobile, c.language) for c in client.contacts
        )
    return client_rows, domain_rows, contact_rows


INSERT_CLIENTS = (
    "INSERT INTO clients (id, crm_id, name, segment, role_id, created_at, updated_at) "
    "VALUES ({0}, {0}, {0}, {0}, {0}, {0}, {0})"
)
INSERT_DOMAINS = "INSERT INTO client_domains (client_id, domain) VALUES ({0}, {0})"
INSERT_CONTACTS = (
    "INSERT INTO contacts (client_id, name, email, phone, is_mobile, language) "
    "VALUES ({0}, {0}, {0}, {0}, {0}, {0})"
)


def prepare_baseline_store(url: str, roles: Sequence[str]) -> dict[str, int]:
    store = open_store(settings_for(url))
    try:
        return add_roles(store.sessions, roles)
    finally:
        store.close()


def sqlite_baseline(db: Path, clients: Sequence[GenClient], roles: Sequence[str]) -> dict[str, Any]:
    role_ids = prepare_baseline_store(f"sqlite:///{db}", roles)
    # SQLAlchemy's SQLite DateTime storage format.
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    client_rows, domain_rows, contact_rows = baseline_rows(clients, role_ids, now)
    connection = sqlite3.connect(db, isolation_level=None)
    try:
        for pragma in (
            "busy_timeout = 30000",
            "journal_mode = WAL",
            "synchronous = FULL",
            "foreign_keys = ON",
        ):
            connection.execute(f"PRAGMA {pragma}")
        start = time.perf_counter()
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany(INSERT_CLIENTS.format("?"), client_rows)
        connection.executemany(INSERT_DOMAINS.format("?"), domain_rows)
        connection.executemany(INSERT_CONTACTS.format("?"), contact_rows)
        connection.execute("COMMIT")
        elapsed = time.perf_counter() - start
        got = {
            table: connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("clients", "client_domains", "contacts")
        }
    finally:
        connection.close()
    return {"baseline_bulk_insert_s": round(elapsed, 3), "baseline_counts": got}


def postgres_baseline(
    dbname: str, clients: Sequence[GenClient], roles: Sequence[str]
) -> dict[str, Any]:
    import psycopg

    role_ids = prepare_baseline_store(f"{PG_HOST}/{dbname}", roles)
    client_rows, domain_rows, contact_rows = baseline_rows(clients, role_ids, datetime.now(UTC))
    with psycopg.connect(f"{PG_HOST}/{dbname}") as connection:
        start = time.perf_counter()
        with connection.transaction(), connection.cursor() as cursor:
            cursor.executemany(INSERT_CLIENTS.format("%s"), client_rows)
            cursor.executemany(INSERT_DOMAINS.format("%s"), domain_rows)
            cursor.executemany(INSERT_CONTACTS.format("%s"), contact_rows)
        elapsed = time.perf_counter() - start
        got = {}
        for table in ("clients", "client_domains", "contacts"):
            row = connection.execute(f"SELECT count(*) FROM {table}").fetchone()
            got[table] = row[0] if row else 0
    return {"baseline_bulk_insert_s": round(elapsed, 3), "baseline_counts": got}


# --- runs -------------------------------------------------------------------------------


def summarise(result: dict[str, Any], target: bool) -> dict[str, Any]:
    """The 10 s target is the issue's figure for SQLite; PostgreSQL is reported beside it."""
    base = result["baseline_bulk_insert_s"]
    result["ratio_import_to_baseline"] = round(result["import_s"] / base, 1) if base else None
    if target:
        result["target_import_s"] = TARGET_IMPORT_S
        result["meets_target"] = result["import_s"] < TARGET_IMPORT_S
    return result


def run_sqlite(
    tmp: Path, csv_path: Path, clients: Sequence[GenClient], roles: Sequence[str]
) -> dict[str, Any]:
    result = run_importer(f"sqlite:///{tmp / 'import.db'}", csv_path, roles)
    result |= sqlite_baseline(tmp / "baseline.db", clients, roles)
    result["baseline_method"] = "sqlite3 executemany, one transaction, WAL, synchronous=FULL"
    result["sqlite_version"] = sqlite3.sqlite_version
    return summarise(result, target=True)


@dataclass
class _PgDatabases:
    admin: Any
    names: list[str]

    def create(self, name: str) -> str:
        from psycopg import sql

        self.admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.names.append(name)
        return name

    def drop_all(self) -> Iterator[str]:
        from psycopg import sql

        for name in self.names:
            try:
                self.admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
            except Exception as exc:  # noqa: BLE001 - report, keep dropping the others
                yield f"could not drop {name}: {exc}"


def run_postgres(
    csv_path: Path, clients: Sequence[GenClient], roles: Sequence[str]
) -> dict[str, Any]:
    try:
        import psycopg

        admin = psycopg.connect(f"{PG_HOST}/postgres", autocommit=True, connect_timeout=5)
    except Exception as exc:  # noqa: BLE001 - any failure to reach the server is reported
        return {"error": f"PostgreSQL unreachable at {PG_HOST}: {exc}"}
    databases = _PgDatabases(admin, [])
    result: dict[str, Any]
    try:
        version = admin.execute("SHOW server_version").fetchone()
        imported = databases.create(f"rk_bench_{os.getpid()}_import")
        result = run_importer(f"{PG_HOST}/{imported}", csv_path, roles)
        baseline = databases.create(f"rk_bench_{os.getpid()}_baseline")
        result |= postgres_baseline(baseline, clients, roles)
        result["baseline_method"] = "psycopg executemany, one transaction"
        result["server_version"] = version[0] if version else None
        result = summarise(result, target=False)
    except Exception as exc:  # noqa: BLE001 - PostgreSQL trouble must not hide SQLite numbers
        result = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        problems = list(databases.drop_all())
        admin.close()
    if problems:
        result["cleanup_errors"] = problems
    return result


def check(result: dict[str, Any], clients: int, contacts: int) -> list[str]:
    if "error" in result:
        return []
    problems = []
    for key in ("counts", "counts_after_reimport", "baseline_counts"):
        got = result[key]
        if (got["clients"], got["contacts"]) != (clients, contacts):
            problems.append(f"{key}: {got['clients']} clients, {got['contacts']} contacts")
    if result["reimport_created"] != 0:
        problems.append(f"re-import created {result['reimport_created']} clients")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=50_000)
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args(argv)
    if not 0 < args.clients <= args.contacts <= 3 * args.clients:
        parser.error("need clients <= contacts <= 3 * clients (1 to 3 contacts per client)")

    roles, clients = generate(args.clients, args.contacts)
    output: dict[str, Any] = {"clients": args.clients, "contacts": args.contacts}
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="rk-bench-") as tmpdir:
        tmp = Path(tmpdir)
        csv_path = tmp / "clients.csv"
        output["rows"] = write_csv(csv_path, clients)
        output["csv_bytes"] = csv_path.stat().st_size
        try:
            output["sqlite"] = run_sqlite(tmp, csv_path, clients, roles)
        except Exception as exc:  # noqa: BLE001 - printed in the JSON, then exit 1
            output["sqlite"] = {"error": f"{type(exc).__name__}: {exc}"}
            failures.append("sqlite: failed")
        failures += [f"sqlite: {p}" for p in check(output["sqlite"], args.clients, args.contacts)]
        if args.skip_postgres:
            output["postgresql"] = {"skipped": True}
        else:
            output["postgresql"] = run_postgres(csv_path, clients, roles)
            failures += [
                f"postgresql: {p}" for p in check(output["postgresql"], args.clients, args.contacts)
            ]
    output["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "sqlalchemy": sqlalchemy.__version__,
    }
    if failures:
        output["failures"] = failures
    json.dump(output, sys.stdout, ensure_ascii=False, indent=2)
    sys.stdout.write("\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
