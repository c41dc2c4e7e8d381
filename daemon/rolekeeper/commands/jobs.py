"""`rolekeeper jobs list|retry`: the parking lot of due work that kept failing."""

from __future__ import annotations

import argparse
from typing import Any

from sqlalchemy import select

from rolekeeper.clock import as_utc, utcnow
from rolekeeper.commands.common import actor, add_json_flag, emit_rows, store_of
from rolekeeper.duework import retry_parked
from rolekeeper.errors import NotFoundError
from rolekeeper.store.audit import record_audit
from rolekeeper.store.db import transaction
from rolekeeper.store.models import DueJob


def register(sub: Any) -> None:
    jobs = sub.add_parser("jobs", help="scheduled work and the parking lot").add_subparsers(
        dest="action", required=True
    )
    p = jobs.add_parser("list", help="list jobs that are not done")
    p.add_argument("--all", action="store_true", help="include finished jobs")
    add_json_flag(p)
    p.set_defaults(func=_list)
    p = jobs.add_parser("retry", help="put a parked job back in the queue")
    p.add_argument("id", type=int)
    p.set_defaults(func=_retry)


def _list(args: argparse.Namespace) -> int:
    with store_of(args) as store, store.sessions() as session:
        query = select(DueJob).order_by(DueJob.due_at, DueJob.id)
        if not args.all:
            query = query.where(DueJob.status != "done")
        rows = [
            {
                "id": j.id,
                "kind": j.kind,
                "key": j.key,
                "due_at": as_utc(j.due_at).isoformat(),
                "status": j.status,
                "attempts": j.attempts,
                "last_error": j.last_error,
            }
            for j in session.scalars(query)
        ]
    return emit_rows(
        args,
        rows,
        [
            ("id", "ID"),
            ("kind", "KIND"),
            ("key", "KEY"),
            ("due_at", "DUE"),
            ("status", "STATUS"),
            ("attempts", "TRIES"),
            ("last_error", "LAST ERROR"),
        ],
    )


def _retry(args: argparse.Namespace) -> int:
    with store_of(args) as store, transaction(store.sessions) as session:
        if not retry_parked(session, args.id, utcnow()):
            raise NotFoundError(f"job {args.id} is not parked")
        record_audit(session, actor(), "job.retry", str(args.id), {})
    print(f"job {args.id} queued again")
    return 0
