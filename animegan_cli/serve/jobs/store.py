"""The job store: jobs and their files in SQLite (WAL mode), uploads and results on disk.

Under ``--data-dir``: ``jobs.sqlite3`` and a folder per job holding its uploads
(``upload-N``) and results (``result-N.EXT``), each written with ``atomic_write``. The
database is the truth: a job exists once its row is committed (its uploads were written
and synced before), a file is done once its row says so (its result was renamed into place
before). What a crash can leave behind is put right by ``resume``: a file left ``running``
is done if its result is on disk (it is never styled twice), else queued again; a job
folder without a row is removed. Nothing is created on disk before the first job.

One connection, behind one lock: SQLite serialises writers anyway, and the lock also
orders a result's write against a cancel that removes the job's folder.
"""

from __future__ import annotations

import contextlib
import mimetypes
import os
import secrets
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from animegan_cli.core.atomic import atomic_write

DB_NAME = "jobs.sqlite3"
# A file's statuses; a job's state is told from its files' (JobView.state).
QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
STATUSES = (QUEUED, RUNNING, DONE, FAILED, CANCELLED)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, created REAL NOT NULL, finished REAL,
    cancelled INTEGER NOT NULL DEFAULT 0, fields TEXT NOT NULL, scope TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    job TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE, idx INTEGER NOT NULL,
    name TEXT NOT NULL, status TEXT NOT NULL, error TEXT, upload_bytes INTEGER NOT NULL,
    result_bytes INTEGER NOT NULL DEFAULT 0, extension TEXT, runs INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job, idx));
CREATE INDEX IF NOT EXISTS files_status ON files(status);
"""


class StoreFull(Exception):
    """The job would take the store over its disk budget (--jobs-disk-mb)."""


def default_data_dir() -> Path:
    """$XDG_DATA_HOME/animegan/jobs, or ~/.local/share/animegan/jobs."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "animegan" / "jobs"


@dataclass
class NewFile:
    """One accepted upload of a new job: its bytes, or why it failed at once."""

    name: str
    data: bytes = b""
    error: str | None = None


@dataclass
class FileRow:
    """A file of a job as the store has it."""

    index: int
    name: str
    status: str
    error: str | None
    extension: str | None
    runs: int


@dataclass
class JobView:
    """A job as the store has it: its owner, times and its files' statuses counted."""

    id: str
    owner: str
    created: float
    finished: float | None
    cancelled: bool
    fields: str
    scope: str
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def state(self) -> str:
        """queued (nothing started), running, done (some result), failed (none), cancelled."""
        if self.cancelled:
            return CANCELLED
        if self.counts.get(QUEUED, 0) + self.counts.get(RUNNING, 0):
            started = sum(self.counts.get(s, 0) for s in (RUNNING, DONE, FAILED))
            return RUNNING if started else QUEUED
        return DONE if self.counts.get(DONE, 0) else FAILED


@dataclass
class Claim:
    """A file the runner took to style: where it is and the settings its job asked for."""

    job: str
    index: int
    fields: str
    scope: str


class JobStore:
    """Jobs and files under ``root``; every method is safe from any thread."""

    def __init__(self, root: Path, keep_results_s: float, disk_bytes: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.root = root
        self.keep_results_s = keep_results_s
        self.disk_bytes = disk_bytes
        self.clock = clock
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None

    @contextlib.contextmanager
    def _conn(self, create: bool = True) -> Iterator[sqlite3.Connection | None]:
        """The connection, under the lock (opened, and the folder made, on first use)."""
        with self._lock:
            if self._db is None and (create or (self.root / DB_NAME).exists()):
                self.root.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.root / DB_NAME, check_same_thread=False,
                                     isolation_level=None)  # explicit BEGIN ... COMMIT
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")  # WAL: a commit survives kill -9
                db.execute("PRAGMA foreign_keys=ON")
                db.executescript(_SCHEMA)
                self._db = db
            yield self._db

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._conn() as db:
            assert db is not None
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _write(self, path: Path, data: bytes) -> None:
        atomic_write(path, lambda handle: handle.write(data), root=self.root)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # --- paths ---------------------------------------------------------------------------
    def _upload_path(self, job: str, index: int) -> Path:
        return self.root / job / f"upload-{index}"

    def _result_path(self, job: str, index: int, extension: str) -> Path:
        return self.root / job / f"result-{index}{extension}"

    def result_path(self, job: str, row: FileRow) -> Path | None:
        """Where a done file's result is (None for a file not done)."""
        if row.status != DONE or row.extension is None:
            return None
        return self._result_path(job, row.index, row.extension)

    # --- jobs ----------------------------------------------------------------------------
    def create(self, owner: str, fields: str, scope: str, files: list[NewFile]) -> str:
        """A new job: uploads written and synced, then its rows committed; StoreFull if the
        uploads would take the store over its disk budget."""
        job = secrets.token_hex(16)
        size = sum(len(f.data) for f in files)
        with self._lock:
            used = self.used_bytes()
            if used + size > self.disk_bytes:
                raise StoreFull(f"the job store is full ({used / 2**20:.1f} MB "
                                f"used of --jobs-disk-mb {self.disk_bytes / 2**20:g}); "
                                "try again once older jobs expire or are deleted")
            self.root.mkdir(parents=True, exist_ok=True)
            try:
                for index, new in enumerate(files):
                    if new.error is None:
                        self._write(self._upload_path(job, index), new.data)
                with self._transaction() as db:
                    db.execute("INSERT INTO jobs (id, owner, created, fields, scope) "
                               "VALUES (?, ?, ?, ?, ?)", (job, owner, self.clock(), fields, scope))
                    db.executemany(
                        "INSERT INTO files (job, idx, name, status, error, upload_bytes) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        [(job, i, f.name, QUEUED if f.error is None else FAILED, f.error,
                          len(f.data)) for i, f in enumerate(files)])
            except BaseException:
                shutil.rmtree(self.root / job, ignore_errors=True)
                raise
            self._settle(job)
        return job

    def job(self, job: str, owner: str) -> JobView | None:
        """A job of ``owner``; None if there is none (another owner's, or expired: removed)."""
        self.expire()
        with self._conn(create=False) as db:
            if db is None:
                return None
            row = db.execute("SELECT id, owner, created, finished, cancelled, fields, scope "
                             "FROM jobs WHERE id = ? AND owner = ?", (job, owner)).fetchone()
            if row is None:
                return None
            view = JobView(row[0], row[1], row[2], row[3], bool(row[4]), row[5], row[6])
            view.counts = dict(db.execute(
                "SELECT status, COUNT(*) FROM files WHERE job = ? GROUP BY status", (job,)))
        return view

    def files(self, job: str) -> list[FileRow]:
        """A job's files, in upload order."""
        with self._conn() as db:
            assert db is not None
            rows = db.execute("SELECT idx, name, status, error, extension, runs FROM files "
                              "WHERE job = ? ORDER BY idx", (job,)).fetchall()
        return [FileRow(*row) for row in rows]

    def active_jobs(self, owner: str) -> int:
        """Jobs of ``owner`` with files still to style."""
        with self._conn(create=False) as db:
            if db is None:
                return 0
            return db.execute(
                "SELECT COUNT(DISTINCT j.id) FROM jobs j JOIN files f ON f.job = j.id "
                "WHERE j.owner = ? AND NOT j.cancelled AND f.status IN (?, ?)",
                (owner, QUEUED, RUNNING)).fetchone()[0]

    def job_counts(self) -> dict[str, int]:
        """Jobs queued (nothing started) and running, for /metrics."""
        with self._conn(create=False) as db:
            if db is None:
                return {QUEUED: 0, RUNNING: 0}
            rows = db.execute(
                "SELECT SUM(f.status = ?) + SUM(f.status = ?), SUM(f.status IN (?, ?, ?)) "
                "FROM jobs j JOIN files f ON f.job = j.id WHERE NOT j.cancelled GROUP BY j.id",
                (QUEUED, RUNNING, RUNNING, DONE, FAILED)).fetchall()
        pending = [(left, started) for left, started in rows if left]
        running = sum(1 for _, started in pending if started)
        return {QUEUED: len(pending) - running, RUNNING: running}

    def used_bytes(self) -> int:
        """Bytes of uploads not yet styled and of results kept."""
        with self._conn(create=False) as db:
            if db is None:
                return 0
            return db.execute(
                "SELECT COALESCE(SUM(CASE WHEN status IN (?, ?) THEN upload_bytes ELSE 0 END "
                "+ result_bytes), 0) FROM files", (QUEUED, RUNNING)).fetchone()[0]

    def cancel(self, job: str) -> None:
        """Cancel a job and remove its uploads and results (its row stays until it expires)."""
        with self._transaction() as db:
            db.execute("UPDATE jobs SET cancelled = 1, finished = ? WHERE id = ?",
                       (self.clock(), job))
            db.execute("UPDATE files SET status = ? WHERE job = ? AND status IN (?, ?)",
                       (CANCELLED, job, QUEUED, RUNNING))
            db.execute("UPDATE files SET result_bytes = 0 WHERE job = ?", (job,))
            shutil.rmtree(self.root / job, ignore_errors=True)

    def expire(self) -> int:
        """Remove the jobs finished more than --keep-results ago; how many there were."""
        with self._conn(create=False) as db:
            if db is None:
                return 0
            old = [row[0] for row in db.execute(
                "SELECT id FROM jobs WHERE finished IS NOT NULL AND finished < ?",
                (self.clock() - self.keep_results_s,))]
            for job in old:
                with self._transaction() as tx:
                    tx.execute("DELETE FROM jobs WHERE id = ?", (job,))
                shutil.rmtree(self.root / job, ignore_errors=True)
        return len(old)

    # --- the runner's side ---------------------------------------------------------------
    def claim(self) -> Claim | None:
        """The next queued file (oldest job first), marked running; None if none."""
        with self._conn(create=False) as db:
            if db is None:
                return None
            with self._transaction() as tx:
                row = tx.execute(
                    "SELECT f.job, f.idx, j.fields, j.scope FROM files f JOIN jobs j ON "
                    "f.job = j.id WHERE f.status = ? AND NOT j.cancelled "
                    "ORDER BY j.created, f.job, f.idx LIMIT 1", (QUEUED,)).fetchone()
                if row is None:
                    return None
                tx.execute("UPDATE files SET status = ? WHERE job = ? AND idx = ?",
                           (RUNNING, row[0], row[1]))
        return Claim(*row)

    def read_upload(self, claim: Claim) -> bytes:
        return self._upload_path(claim.job, claim.index).read_bytes()

    def count_run(self, claim: Claim) -> bool:
        """The file goes to the model now (a record of every run, for the operator and
        tests); False, and nothing counted, if its job was cancelled meanwhile."""
        with self._transaction() as db:
            return db.execute("UPDATE files SET runs = runs + 1 WHERE job = ? AND idx = ? "
                              "AND status = ?", (claim.job, claim.index, RUNNING)).rowcount > 0

    def finish(self, claim: Claim, result: bytes, extension: str) -> bool:
        """Write a result, then mark it done; False (nothing written) if the job was
        cancelled meanwhile."""
        with self._lock:
            if not self._still_running(claim):
                return False
            self._write(self._result_path(claim.job, claim.index, extension), result)
            self._mark_done(claim.job, claim.index, extension, len(result))
            self._settle(claim.job)
        return True

    def fail(self, claim: Claim, reason: str) -> None:
        """The file cannot be styled: its error, for GET /jobs/{id} and results.json."""
        with self._lock:
            if not self._still_running(claim):
                return
            with self._transaction() as db:
                db.execute("UPDATE files SET status = ?, error = ? WHERE job = ? AND idx = ?",
                           (FAILED, reason, claim.job, claim.index))
            self._upload_path(claim.job, claim.index).unlink(missing_ok=True)
            self._settle(claim.job)

    def _still_running(self, claim: Claim) -> bool:
        with self._conn() as db:
            assert db is not None
            row = db.execute("SELECT status FROM files WHERE job = ? AND idx = ?",
                             (claim.job, claim.index)).fetchone()
        return row is not None and row[0] == RUNNING

    def _mark_done(self, job: str, index: int, extension: str, size: int) -> None:
        with self._transaction() as db:
            db.execute("UPDATE files SET status = ?, extension = ?, result_bytes = ? "
                       "WHERE job = ? AND idx = ?", (DONE, extension, size, job, index))
        self._upload_path(job, index).unlink(missing_ok=True)  # no longer needed

    def _settle(self, job: str) -> None:
        """Record when the job's last file ended: its results are kept from then."""
        with self._transaction() as db:
            db.execute("UPDATE jobs SET finished = ? WHERE id = ? AND finished IS NULL AND "
                       "NOT EXISTS (SELECT 1 FROM files WHERE job = ? AND status IN (?, ?))",
                       (self.clock(), job, job, QUEUED, RUNNING))

    def resume(self) -> int:
        """After a stop or a crash: files left running are done (result on disk) or queued
        again; job folders without a row (a crash while accepting) are removed. Returns
        how many files go back to the queue."""
        with self._conn(create=False) as db:
            if db is None:
                return 0
            left = db.execute("SELECT job, idx FROM files WHERE status = ?",
                              (RUNNING,)).fetchall()
            requeued = 0
            for job, index in left:
                found = sorted((self.root / job).glob(f"result-{index}.*"))
                if found:
                    self._mark_done(job, index, found[0].suffix, found[0].stat().st_size)
                    self._settle(job)
                    continue
                with self._transaction() as tx:
                    tx.execute("UPDATE files SET status = ? WHERE job = ? AND idx = ?",
                               (QUEUED, job, index))
                requeued += 1
            known = {row[0] for row in db.execute("SELECT id FROM jobs")}
        for folder in self.root.iterdir():
            if folder.is_dir() and folder.name not in known:
                shutil.rmtree(folder, ignore_errors=True)
        return requeued


def media_type(extension: str) -> str:
    """A result's content type from its extension (.png, .jpg, .webp)."""
    return mimetypes.guess_type("x" + extension)[0] or "application/octet-stream"
