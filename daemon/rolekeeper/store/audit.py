"""The append-only audit log: who changed what, and when."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from rolekeeper.store.models import AuditEntry


def record_audit(
    session: Session, actor: str, action: str, target: str, detail: Mapping[str, Any]
) -> None:
    session.add(AuditEntry(actor=actor, action=action, target=target, detail=dict(detail)))
