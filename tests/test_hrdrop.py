"""Departures dropped by HR as files: taken whole or not at all."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from rolekeeper.commands.demo import DEMO_CONFIG
from rolekeeper.config import load_settings
from rolekeeper.store.models import Person, Transition
from rolekeeper.store.open import Store, open_store
from rolekeeper.workflows.hrdrop import take_drops
from tests.conftest import import_sample_org


def test_good_files_are_taken_and_bad_ones_rejected_whole(tmp_path: Path) -> None:
    config = tmp_path / "rolekeeper.toml"
    config.write_text(DEMO_CONFIG.format(db=tmp_path / "rk.db"), encoding="utf-8")
    settings = load_settings(config)
    store = open_store(settings)
    try:
        import_sample_org(settings, store)
        check_drops(tmp_path, store)
    finally:
        store.close()


def check_drops(tmp_path: Path, sqlite_store: Store) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "a-good.csv").write_text(
        "person,successor,effective\n"
        "ivan.petrov@acme.example,maria.kuznetsova@acme.example,2026-12-01T09:00+03:00\n"
    )
    # Line 2 is fine on its own; line 3 names nobody: the file is refused as a whole.
    (drop / "b-bad.csv").write_text(
        "person,successor,effective\n"
        "elena.sokolova@acme.example,maria.kuznetsova@acme.example,\n"
        "nobody@acme.example,maria.kuznetsova@acme.example,\n"
    )
    (drop / "c-bad.json").write_text(json.dumps({"person": "not a list"}))
    (drop / "d-partial.csv.tmp").write_text("person,successor\n")
    outcomes = take_drops(sqlite_store.sessions, drop)
    assert outcomes == {
        "a-good.csv": "transitions [1]",
        "b-bad.csv": "rejected",
        "c-bad.json": "rejected",
    }
    with sqlite_store.sessions() as session:
        (transition,) = session.scalars(select(Transition)).all()
        leaver = session.get_one(Person, transition.person_id)
    assert leaver.named_address == "ivan.petrov@acme.example"
    assert transition.effective_at.isoformat().startswith("2026-12-01T06:00")
    errors = "".join(p.read_text() for p in (drop / "rejected").glob("*.error.txt"))
    assert "b-bad.csv: line 3: no person 'nobody@acme.example'" in errors
    assert "line 2" not in errors
    assert "c-bad.json: expected a JSON list of objects" in errors
    assert [p.name for p in drop.iterdir() if p.is_file()] == ["d-partial.csv.tmp"]
    assert len(list((drop / "processed").iterdir())) == 1
