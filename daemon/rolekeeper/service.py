"""The long-running process: config → store → scheduler, signals and systemd notification.

SIGTERM/SIGINT: finish the job in hand, start no other, exit 0. SIGHUP: reload the config;
a config that does not validate is refused and the running one kept.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler

from rolekeeper import __version__
from rolekeeper.backends.imap import ImapSource
from rolekeeper.clock import utcnow
from rolekeeper.config import Settings, load_settings
from rolekeeper.duework import DueWorkRunner, bring_forward
from rolekeeper.errors import ConfigError
from rolekeeper.idle import IdleWatcher
from rolekeeper.jobkinds import job_kinds
from rolekeeper.log import configure_logging, get_logger
from rolekeeper.scheduler import (
    DUE_WORK_JOB,
    MAIL_SCAN_JOB,
    add_every,
    build_scheduler,
    set_every,
    wake,
)
from rolekeeper.sdnotify import Notifier
from rolekeeper.store.db import safe_url, transaction
from rolekeeper.store.open import Store, open_store, sync_main_lines
from rolekeeper.watch import Scanner
from rolekeeper.workflows.job import TRANSITIONS

log = get_logger(__name__)

# What a reload can change without a restart; the rest is logged as needing one.
_RESTART_ONLY = ("database",)


class Service:
    def __init__(self, config_path: str | Path | None, settings: Settings) -> None:
        self.config_path = config_path
        self.settings = settings
        self.notifier = Notifier.from_env()
        self._wake = threading.Event()
        self._stop = False
        self._reload = False
        self.scanner: Scanner | None = None
        self.scheduler: BackgroundScheduler | None = None

    def _on_stop(self, signum: int, _frame: FrameType | None) -> None:
        self._stop = True
        self._wake.set()

    def _on_hup(self, _signum: int, _frame: FrameType | None) -> None:
        self._reload = True
        self._wake.set()

    def run(self) -> int:
        configure_logging(self.settings.logging)
        log.info(
            "starting",
            version=__version__,
            config=[str(f) for f in self.settings.source_files],
            database=safe_url(self.settings.database),
        )
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        store = open_store(self.settings)
        runner = DueWorkRunner(store.sessions, self.settings, job_kinds())
        runner.recover()
        runner.seed_recurring()
        with transaction(store.sessions) as session:
            # Transitions that fell due while the daemon was down run now, not a poll later.
            bring_forward(session, TRANSITIONS.name, utcnow())
        scheduler = self.scheduler = build_scheduler()
        add_every(scheduler, DUE_WORK_JOB, runner.run_due, self.settings.scheduler.poll_seconds)
        self.scanner = self._scanner(store)
        idle: IdleWatcher | None = None
        if self.scanner is not None:
            add_every(scheduler, MAIL_SCAN_JOB, self._scan, self.settings.watch.poll_seconds)
            assert isinstance(self.scanner.source, ImapSource)
            idle = IdleWatcher(self.scanner.source, self.scanner.idle_targets(), self._scan_folder)
        scheduler.start()
        if idle is not None:
            idle.start()
        self.notifier.ready(
            f"running; checking due work every {self.settings.scheduler.poll_seconds:g}s"
        )
        log.info("ready", watchdog_interval=self.notifier.watchdog_interval)
        try:
            self._loop(scheduler, runner, store)
        finally:
            self.notifier.stopping()
            log.info("stopping: letting the current job finish")
            runner.request_stop()
            if idle is not None:
                idle.stop()
            scheduler.shutdown(wait=True)
            if self.scanner is not None:
                self.scanner.close()
                self.scanner.source.close()
            store.close()
            log.info("stopped")
        return 0

    def _scanner(self, store: Store) -> Scanner | None:
        if self.settings.imap is None:
            log.info("no [imap] section: mail is not watched")
            return None
        return Scanner(store.sessions, self.settings, ImapSource(self.settings.imap))

    def _scan(self) -> None:
        assert self.scanner is not None
        try:
            reports = self.scanner.scan_all()
        except Exception as exc:  # noqa: BLE001 - the next pass resumes from the cursors
            log.error("mail scan failed", error=f"{type(exc).__name__}: {exc}")
            return
        found = sum(r.incidents for r in reports)
        read = sum(r.messages for r in reports)
        if found and self.scheduler is not None:
            wake(self.scheduler, DUE_WORK_JOB)  # alerts go out now, not at the next poll
        if read:
            log.info("mail scanned", messages=read, incidents=found, folders=len(reports))

    def _scan_folder(self, mailbox: str, folder: str) -> None:
        assert self.scanner is not None
        try:
            report = self.scanner.scan_one(mailbox, folder)
        except Exception as exc:  # noqa: BLE001 - the poller and the cursor catch up
            log.error("scan failed", mailbox=mailbox, folder=folder, error=str(exc))
            return
        if report.incidents and self.scheduler is not None:
            wake(self.scheduler, DUE_WORK_JOB)

    def _loop(self, scheduler: BackgroundScheduler, runner: DueWorkRunner, store: Store) -> None:
        interval = self.notifier.watchdog_interval
        while not self._stop:
            self._wake.wait(timeout=interval if interval else 3600)
            self._wake.clear()
            if self._stop:
                break
            if self._reload:
                self._reload = False
                self._reload_config(scheduler, runner, store)
            if interval and scheduler.running:
                self.notifier.watchdog()

    def _reload_config(
        self, scheduler: BackgroundScheduler, runner: DueWorkRunner, store: Store
    ) -> None:
        self.notifier.reloading()
        try:
            new = load_settings(self.config_path)
        except ConfigError as exc:
            log.error("reload refused: keeping the running config", problems=exc.problems)
            self.notifier.ready("running; last reload refused (see log)")
            return
        for section in _RESTART_ONLY:
            if getattr(new, section) != getattr(self.settings, section):
                log.warning("config change needs a restart to apply", section=section)
                new = new.model_copy(update={section: getattr(self.settings, section)})
        self.settings = new
        configure_logging(new.logging)
        runner.settings = new
        if self.scanner is not None:
            self.scanner.settings = new
            set_every(scheduler, MAIL_SCAN_JOB, new.watch.poll_seconds)
        sync_main_lines(store, new)
        set_every(scheduler, DUE_WORK_JOB, new.scheduler.poll_seconds)
        log.info(
            "config reloaded",
            poll_seconds=new.scheduler.poll_seconds,
            log_level=new.logging.level,
        )
        self.notifier.ready("running; config reloaded")
