"""Read new mail from each mailbox folder since its stored cursor, run the rules, store results.

The cursor (UIDVALIDITY:last UID) advances in the same transaction as the incidents, arrivals
and learned numbers of the messages it covers: after a crash, a dropped connection or a
restart the next pass starts where the last committed one ended, and unique keys make a
repeated message count once. A folder seen for the first time, or whose UIDVALIDITY changed,
is read back `watch.backfill_days` and what that finds is recorded, never acted on.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from rolekeeper.backends.base import MailSource
from rolekeeper.clock import Clock, SystemClock
from rolekeeper.config import Settings
from rolekeeper.detect.addresses import domain_of
from rolekeeper.detect.batchparse import ReadBody, ReadHeaders
from rolekeeper.detect.directory import Directory
from rolekeeper.detect.facts import MessageFacts
from rolekeeper.detect.message import HEADER_FIELDS, add_body
from rolekeeper.detect.phones import phones_in
from rolekeeper.detect.rules import evaluate
from rolekeeper.detect.rules.base import Finding
from rolekeeper.directory.snapshot import load_directory
from rolekeeper.domain import JobStatus
from rolekeeper.errors import MailboxAccessError
from rolekeeper.log import get_logger
from rolekeeper.parsepool import INLINE, ParsePool, Parser, Pending
from rolekeeper.quietwatch import record_quiet_clients
from rolekeeper.store.db import table_of, transaction
from rolekeeper.store.models import (
    Candidate,
    ClientArrival,
    DueJob,
    Incident,
    LearnedNumber,
    Person,
    Role,
    ScanCursor,
)
from rolekeeper.store.models import (
    UnreadableMessage as UnreadableRow,
)
from rolekeeper.store.upsert import insert_ignore

log = get_logger(__name__)
DIRECTORY_TTL = 30.0  # seconds an IDLE-triggered scan may reuse the directory
LOOKAHEAD = 2  # batches whose header fields are fetched before their turn
PLAN_JOB = "actions.plan"  # rolekeeper.actions.PLAN; named here to keep imports one-way


@dataclass
class ScanReport:
    mailbox: str
    folder: str
    mode: str = "live"  # live | backfill | resync | replay | missing | failed
    messages: int = 0
    bodies: int = 0
    incidents: int = 0
    unreadable: int = 0
    error: str = ""  # why a failed mailbox could not be read

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class _Batch:
    incidents: list[dict[str, Any]] = field(default_factory=list)
    arrivals: list[dict[str, Any]] = field(default_factory=list)
    numbers: list[dict[str, Any]] = field(default_factory=list)
    unreadable: list[dict[str, Any]] = field(default_factory=list)
    candidates: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Where:
    mailbox: str
    folder: str
    uidvalidity: int


@dataclass
class _InFlight:
    """One batch between its body fetch and its commit."""

    uids: list[int]
    facts: dict[int, MessageFacts] = field(default_factory=dict)
    bodies: Pending[ReadBody] | None = None
    batch: _Batch = field(default_factory=_Batch)


class InOrder:
    """Runs calls one after another in a thread; after a failure none of the later ones
    runs (a later batch's cursor must not move past a batch that was not stored)."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scan-commit")
        self._last: Future[None] | None = None

    def submit(self, call: Callable[[], None]) -> None:
        before = self._last

        def run() -> None:
            if before is not None:
                before.result()  # re-raises an earlier failure instead of running
            call()

        self._last = self._executor.submit(run)

    def wait(self) -> None:
        try:
            if self._last is not None:
                self._last.result()
        finally:
            self._executor.shutdown(wait=True)


def parse_cursor(value: str | None) -> tuple[int, int] | None:
    if not value:
        return None
    validity, _, last = value.partition(":")
    return int(validity), int(last)


class Scanner:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        source: MailSource,
        clock: Clock | None = None,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.source = source
        self.clock = clock or SystemClock()
        # One folder scan at a time: IDLE threads and the poller share the connection pool,
        # which may close one connection to open another. A scan of one folder is short, so
        # an IDLE-triggered scan waits at most for the folder in hand.
        self._scan_lock = threading.Lock()
        self._locks_guard = threading.Lock()
        self._directory: tuple[float, Directory] | None = None
        self._pool: ParsePool | None = None

    def idle_targets(self) -> list[tuple[str, str]]:
        """The folders worth IDLE: the journal, then role mailboxes' INBOX."""
        with self.sessions() as session:
            roles = list(session.scalars(select(Role.address).order_by(Role.address)))
        journal = self.settings.watch.journal_mailbox
        ordered = ([journal] if journal else []) + roles
        return [(m, "INBOX") for m in ordered][: self.settings.watch.idle_folders]

    def scan_one(self, mailbox: str, folder: str) -> ScanReport:
        """Scan one folder now (IDLE said it has new mail), with a recent directory."""
        return self.scan(mailbox, folder, self._recent_directory())

    def _recent_directory(self) -> Directory:
        # Loading the directory of a large firm takes longer than a scan of one message.
        with self._locks_guard:
            cached = self._directory
            if cached is not None and time.monotonic() - cached[0] < DIRECTORY_TTL:
                return cached[1]
        with self.sessions() as session:
            directory = load_directory(session, self.settings)
        with self._locks_guard:
            self._directory = (time.monotonic(), directory)
        return directory

    def mailboxes(self) -> list[str]:
        """Every role and named mailbox of the directory, the journal and the extras."""
        with self.sessions() as session:
            found = list(session.scalars(select(Role.address).order_by(Role.address)))
            found += session.scalars(
                select(Person.named_address).where(Person.active).order_by(Person.named_address)
            )
        watch = self.settings.watch
        found += list(watch.extra_mailboxes)
        if watch.journal_mailbox:
            found.append(watch.journal_mailbox)
        return list(dict.fromkeys(found))

    def scan_all(self, *, as_of: datetime | None = None) -> list[ScanReport]:
        """One pass over every watched folder. With `as_of`, a replay: the mail received in
        the history window before that date, judged with that date's directory, recorded
        and never acted on (cursors stay where they are), then rule 6 as of that date."""
        with self.sessions() as session:
            directory = load_directory(session, self.settings, as_of=as_of)
        if as_of is None:
            with self._locks_guard:
                self._directory = (time.monotonic(), directory)
        reports = []
        for mailbox in self.mailboxes():
            for folder in self.settings.watch.folders:
                try:
                    reports.append(self._scan_retrying(mailbox, folder, directory, as_of))
                except MailboxAccessError as exc:
                    # No password for this mailbox, or its login refused: the others go on.
                    log.error("mailbox skipped", mailbox=mailbox, error=str(exc))
                    reports.append(ScanReport(mailbox, "", mode="failed", error=str(exc)))
                    break
                except BrokenProcessPool:
                    # A parse worker died (killed, out of memory): start afresh next time.
                    log.warning(
                        "a parse worker died; the folder is read again next pass",
                        mailbox=mailbox,
                        folder=folder,
                    )
                    self._pool = None
                except self.source.transient_errors as exc:
                    # One mailbox failing (login refused, connection lost) must not starve
                    # the others; the next pass resumes it from its stored cursor.
                    log.warning("scan failed", mailbox=mailbox, folder=folder, error=str(exc))
                    self.source.drop(mailbox)
                    reports.append(ScanReport(mailbox, folder, mode="failed", error=str(exc)))
                    break  # the mailbox's other folders wait for the next pass too
        if as_of is not None:
            record_quiet_clients(self.sessions, self.settings, as_of, live=False)
        return reports

    def _scan_retrying(
        self, mailbox: str, folder: str, directory: Directory, as_of: datetime | None
    ) -> ScanReport:
        """A pooled connection the server dropped (restart, idle timeout) fails at its next
        command: read the folder again at once on a new connection, from the cursor."""
        try:
            return self.scan(mailbox, folder, directory, as_of=as_of)
        except self.source.transient_errors as exc:
            log.info("reconnecting", mailbox=mailbox, folder=folder, error=str(exc))
            self.source.drop(mailbox)
        return self.scan(mailbox, folder, directory, as_of=as_of)

    def scan(
        self, mailbox: str, folder: str, directory: Directory, *, as_of: datetime | None = None
    ) -> ScanReport:
        with self._scan_lock:
            return self._scan(mailbox, folder, directory, as_of)

    def _scan(
        self, mailbox: str, folder: str, directory: Directory, as_of: datetime | None
    ) -> ScanReport:
        report = ScanReport(mailbox, folder)
        state = self.source.folder_state(mailbox, folder)
        if state is None:
            report.mode = "missing"
            return report
        key = f"{self.source.name}:{mailbox}"
        with self.sessions() as session:
            stored = session.scalar(
                select(ScanCursor.cursor).where(
                    ScanCursor.source == key, ScanCursor.folder == folder
                )
            )
        cursor = parse_cursor(stored)
        window = self.settings.watch.backfill_days
        replay = as_of is not None
        since: date | None = None
        before: date | None = None
        if as_of is not None:
            report.mode, first = "replay", 1
            before = as_of.date() + timedelta(days=1)
            since = (as_of - timedelta(days=window)).date() if window is not None else None
        elif cursor is None or cursor[0] != state.uidvalidity:
            report.mode, first = ("backfill", 1) if cursor is None else ("resync", 1)
            if cursor is not None:
                log.warning(
                    "UIDVALIDITY changed: reading the folder again", mailbox=mailbox, folder=folder
                )
            if window is not None:
                since = (self.clock.now() - timedelta(days=window)).date()
        else:
            first = cursor[1] + 1
        if first >= state.uidnext and report.mode == "live":
            return report
        uids = self.source.uids_since(mailbox, folder, first, since, before)
        live = report.mode == "live"
        size = self.settings.watch.batch_size
        batches = [uids[start : start + size] for start in range(0, len(uids), size)]
        parser = self._parser_for(len(uids))
        where = _Where(mailbox, folder, state.uidvalidity)
        # A pipeline over batches: the next batch's header fields are fetched while the
        # parser reads this one's, and a batch is committed while the parser reads the next
        # one's bodies. Commits keep the batches' order, so the cursor only moves forward.
        commits = InOrder() if parser is not INLINE else None
        try:
            self._pipeline(key, where, batches, directory, parser, live, replay, report, commits)
        except BaseException:
            if commits is not None:
                with contextlib.suppress(Exception):
                    commits.wait()  # what was stored stays stored; the scan still fails
            raise
        if commits is not None:
            commits.wait()  # raises the first failure; nothing after it was committed
        if not replay and (not uids or uids[-1] < state.uidnext - 1):
            # The folder's last UID when the scan began: mail a backfill left out (older than
            # its window, though its UID is higher) is never taken for new mail later.
            self._commit(
                key, folder, state.uidvalidity, [state.uidnext - 1], _Batch(), False, report
            )
        return report

    def _pipeline(
        self,
        key: str,
        where: _Where,
        batches: list[list[int]],
        directory: Directory,
        parser: Parser,
        live: bool,
        replay: bool,
        report: ScanReport,
        commits: InOrder | None,
    ) -> None:
        """Header fields of the next batches are fetched while the parser reads these; a
        long read commits in a thread of its own, in order, while the next batches are
        fetched (SQLite works without the interpreter lock); a short one commits at once."""
        ahead: deque[Pending[ReadHeaders]] = deque()
        previous: _InFlight | None = None
        finish = functools.partial(
            self._finish,
            key,
            where,
            directory=directory,
            live=live,
            replay=replay,
            report=report,
            commits=commits,
        )
        for index, batch_uids in enumerate(batches):
            while len(ahead) < LOOKAHEAD and index + len(ahead) < len(batches):
                ahead.append(self._fetch_headers(where, batches[index + len(ahead)], parser))
            flight = self._fetch_bodies(where, batch_uids, ahead.popleft(), directory, parser)
            if previous is not None:
                finish(previous)
            previous = flight
        if previous is not None:
            finish(previous)

    def _parser_for(self, messages: int) -> Parser:
        """Worker processes for a long read; a few messages are parsed at once, here."""
        if messages <= self.settings.watch.batch_size:
            return INLINE
        return self.start_workers() or INLINE

    def start_workers(self) -> ParsePool | None:
        """Start the parse workers (`watch.parse_workers`) now rather than at the first long
        read (the first long read does it otherwise; they are kept). None when configured off."""
        workers = self.settings.watch.parse_workers
        if workers == 0:
            return None
        if self._pool is None:
            self._pool = ParsePool(workers)
        return self._pool

    def close(self) -> None:
        """Stop the parse worker, if one was started."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def _fetch_headers(
        self, where: _Where, uids: Sequence[int], parser: Parser
    ) -> Pending[ReadHeaders]:
        fetched = self.source.fetch_headers(where.mailbox, where.folder, uids, HEADER_FIELDS)
        return parser.headers([(f.uid, f.data) for f in fetched])

    def _fetch_bodies(
        self,
        where: _Where,
        uids: Sequence[int],
        headers: Pending[ReadHeaders],
        directory: Directory,
        parser: Parser,
    ) -> _InFlight:
        flight = _InFlight(list(uids))
        for parsed in headers.result():
            if parsed.facts is None:
                self._unreadable(flight.batch, where, parsed.uid, parsed.error or "")
            elif parsed.facts.envelope_to and where.mailbox != self.settings.watch.journal_mailbox:
                # X-Envelope-To means something only as the journal's own record.
                flight.facts[parsed.uid] = parsed.facts._replace(envelope_to=())
            else:
                flight.facts[parsed.uid] = parsed.facts
        wanted = [uid for uid, facts in flight.facts.items() if _needs_body(facts, directory)]
        fetched = self.source.fetch_bodies(
            where.mailbox, where.folder, wanted, self.settings.watch.body_limit_bytes
        )
        flight.bodies = parser.bodies([(f.uid, f.data) for f in fetched])
        return flight

    def _finish(
        self,
        key: str,
        where: _Where,
        flight: _InFlight,
        *,
        directory: Directory,
        live: bool,
        replay: bool,
        report: ScanReport,
        commits: InOrder | None,
    ) -> None:
        batch = flight.batch
        assert flight.bodies is not None
        for read in flight.bodies.result():
            if read.body is None:
                # Recorded; the header-only rules still judge the message.
                self._unreadable(batch, where, read.uid, read.error or "")
            else:
                flight.facts[read.uid] = add_body(flight.facts[read.uid], read.body)
                report.bodies += 1
        now = self.clock.now()
        source = f"{self.source.name}:{where.mailbox}/{where.folder}"
        for facts in flight.facts.values():
            report.messages += 1
            for finding in evaluate(facts, directory):
                batch.incidents.append(_incident_row(finding, facts, live, source, now))
            self._learn(facts, directory, where.mailbox, batch, now)
        args = (key, where.folder, where.uidvalidity, flight.uids, batch, replay, report)
        if commits is None:
            self._commit(*args)
        else:
            commits.submit(functools.partial(self._commit, *args))

    def _unreadable(self, batch: _Batch, where: _Where, uid: int, reason: str) -> None:
        batch.unreadable.append(
            {
                "source": f"{self.source.name}:{where.mailbox}",
                "folder": where.folder,
                "uidvalidity": where.uidvalidity,
                "uid": uid,
                "reason": reason[:2000],
                "seen_at": self.clock.now(),
            }
        )

    def _learn(
        self,
        facts: MessageFacts,
        directory: Directory,
        mailbox: str,
        batch: _Batch,
        now: datetime,
    ) -> None:
        sender = facts.sender
        if sender is None or facts.automated or facts.calendar_reply:
            return
        client = directory.client_of(sender)
        if client is not None:
            if any(a in directory.roles for a in facts.recipients):
                batch.arrivals.append(
                    {
                        "client_id": client.id,
                        "message_key": facts.message_key,
                        "arrived_at": facts.date or now,
                    }
                )
            for number, _ in phones_in(facts.author_text or "", directory.region):
                batch.numbers.append({"client_id": client.id, "number": number, "first_seen": now})
            return
        if directory.is_firm(sender) or directory.is_personal(sender):
            return
        domain = domain_of(sender)
        if domain in self.settings.detect.ignore_domains:
            return
        if mailbox not in directory.roles and directory.employee(mailbox) is None:
            return  # only correspondents of role and named mailboxes are candidates
        entry = batch.candidates.setdefault(
            sender, {"address": sender, "domain": domain, "mailbox": mailbox, "count": 0}
        )
        entry["count"] += 1

    def _commit(
        self,
        key: str,
        folder: str,
        uidvalidity: int,
        uids: Sequence[int],
        batch: _Batch,
        replay: bool,
        report: ScanReport,
    ) -> None:
        with transaction(self.sessions) as session:
            new = insert_ignore(session, table_of(Incident), batch.incidents)
            report.incidents += new
            if new and any(row["live"] for row in batch.incidents):
                _plan_now(session, self.clock.now())
            insert_ignore(session, table_of(ClientArrival), batch.arrivals)
            insert_ignore(session, table_of(LearnedNumber), batch.numbers)
            report.unreadable += insert_ignore(session, table_of(UnreadableRow), batch.unreadable)
            _record_candidates(session, batch.candidates.values(), self.clock.now())
            if replay or not uids:
                return
            value = f"{uidvalidity}:{max(uids)}"
            row = session.scalars(
                select(ScanCursor).where(ScanCursor.source == key, ScanCursor.folder == folder)
            ).one_or_none()
            if row is None:
                session.add(
                    ScanCursor(source=key, folder=folder, cursor=value, scanned_at=self.clock.now())
                )
            else:
                row.cursor, row.scanned_at = value, self.clock.now()


def _plan_now(session: Session, now: datetime) -> None:
    """Live incidents: bring the action planner forward so alerts go out at once."""
    session.execute(
        update(DueJob)
        .where(DueJob.kind == PLAN_JOB, DueJob.status == JobStatus.PENDING, DueJob.due_at > now)
        .values(due_at=now)
    )


def _needs_body(facts: MessageFacts, directory: Directory) -> bool:
    """Bodies only where a rule needs them: firm mail to clients or to personal addresses
    (rules 4 and 5), and client mail (to learn the client's own numbers)."""
    sender = facts.sender
    if sender is None or facts.automated:
        return False
    if directory.is_firm(sender):
        return any(
            directory.client_of(a) is not None or directory.is_personal(a)
            for a in facts.all_addressees
        )
    return directory.client_of(sender) is not None


def _incident_row(
    finding: Finding, facts: MessageFacts, live: bool, source: str, now: datetime
) -> dict[str, Any]:
    return {
        "rule": finding.rule,
        "message_key": facts.message_key[:255],
        "person_id": finding.employee.id if finding.employee else None,
        "person_key": finding.employee.id if finding.employee else 0,
        "client_id": finding.client.id if finding.client else None,
        "segment": finding.client.segment if finding.client else None,
        "evidence": finding.evidence,
        "client_address": finding.client_address,
        "detected_at": now,
        "status": "open",
        "live": live,
        "source": source[:400],
        "message_date": facts.date,
    }


def _record_candidates(session: Session, found: Iterable[dict[str, Any]], now: datetime) -> None:
    for entry in found:
        row = session.scalars(
            select(Candidate).where(Candidate.address == entry["address"])
        ).one_or_none()
        if row is None:
            role_id = session.scalar(select(Role.id).where(Role.address == entry["mailbox"]))
            person_id = session.scalar(
                select(Person.id).where(Person.named_address == entry["mailbox"])
            )
            session.add(
                Candidate(
                    address=entry["address"],
                    domain=entry["domain"],
                    role_id=role_id,
                    person_id=person_id,
                    messages=entry["count"],
                    first_seen=now,
                    last_seen=now,
                )
            )
        else:
            row.messages += entry["count"]
            row.last_seen = now
