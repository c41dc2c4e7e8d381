"""Departures from HR: CSV or JSON files dropped in `handover.drop_folder`.

A file is taken whole or not at all: every row is checked, then all its departures are
stored in one transaction and the file moves to `processed/`; a file with any bad row moves
to `rejected/` beside a `.error.txt` naming each bad line, and nothing of it is stored.
Files whose names start with "." or end in ".tmp" are still being written and are left.

CSV columns (header row): person, successor, effective (ISO 8601; empty means now).
JSON: a list of objects with the same keys.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from rolekeeper.clock import utcnow
from rolekeeper.duework import JobContext, JobKind, every_poll
from rolekeeper.errors import RolekeeperError
from rolekeeper.log import get_logger
from rolekeeper.store.db import transaction
from rolekeeper.workflows.departure import create_transition, plan_departure

log = get_logger(__name__)
ACTOR = "hr-drop"


def _rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(where, row) pairs; where names the line (CSV) or the item (JSON)."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".json":
        data = json.loads(text)
        if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
            raise ValueError("expected a JSON list of objects")
        return [(f"item {n}", item) for n, item in enumerate(data, 1)]
    return [(f"line {n}", row) for n, row in enumerate(csv.DictReader(io.StringIO(text)), 2)]


def _when(value: Any) -> datetime:
    if value in (None, "", "now"):
        return utcnow()
    parsed = datetime.fromisoformat(str(value))
    if parsed.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone")
    return parsed


def import_file(session: Session, path: Path) -> list[int]:
    """Store every departure of the file, or raise naming every bad row."""
    problems, created = [], []
    try:
        rows = _rows(path)
    except (ValueError, UnicodeDecodeError, csv.Error) as exc:
        raise RolekeeperError(f"{path.name}: {exc}") from None
    for where, row in rows:
        try:
            person = str(row.get("person") or "").strip()
            successor = str(row.get("successor") or "").strip()
            if not person or not successor:
                raise ValueError("expected person and successor")
            leaver, plans = plan_departure(session, person, successor, {})
            transition = create_transition(
                session, "departure", leaver, plans, _when(row.get("effective")), ACTOR
            )
            session.flush()
            created.append(transition.id)
        except (ValueError, RolekeeperError) as exc:
            problems.append(f"{path.name}: {where}: {exc}")
    if problems:
        raise RolekeeperError("\n".join(problems))
    return created


def take_drops(sessions: sessionmaker[Session], folder: Path) -> dict[str, str]:
    """Import every finished file in the folder; returns file name → outcome."""
    outcomes: dict[str, str] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith(".") or path.name.endswith(".tmp"):
            continue
        if path.suffix.lower() not in (".csv", ".json"):
            continue
        stamp = utcnow().strftime("%Y%m%dT%H%M%S")
        try:
            with transaction(sessions) as session:
                ids = import_file(session, path)
        except RolekeeperError as exc:
            rejected = folder / "rejected"
            rejected.mkdir(exist_ok=True)
            (rejected / f"{stamp}-{path.name}.error.txt").write_text(str(exc) + "\n")
            path.rename(rejected / f"{stamp}-{path.name}")
            outcomes[path.name] = "rejected"
            log.warning("HR drop file rejected", file=path.name, problems=str(exc))
            continue
        processed = folder / "processed"
        processed.mkdir(exist_ok=True)
        path.rename(processed / f"{stamp}-{path.name}")
        outcomes[path.name] = f"transitions {ids}"
        log.info("HR drop file taken", file=path.name, transitions=ids)
    return outcomes


def _job(ctx: JobContext) -> None:
    folder = ctx.settings.handover.drop_folder
    if folder is not None and folder.is_dir():
        take_drops(ctx.sessions, folder)


HR_DROP = JobKind("handover.hr_drop", _job, every=every_poll)
