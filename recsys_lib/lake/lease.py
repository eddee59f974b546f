"""Writer leases: one writing job per table at a time, recorded with the lake.

A lease is a small JSON file, ``<lake root>/_leases/<table>.json``, naming its holder
(what is writing, host, pid, a random token) and when it expires. A job takes the
leases of every table it writes (:meth:`LeaseStore.acquire`, tables in name order, so
two jobs never wait on each other in a cycle), a thread renews them every third of
the time to live, and the job releases them when done. Every data commit checks the
lease of its table (:meth:`LeaseStore.check_commit`): a commit by anyone but the
holder is refused, naming the holder. Optimistic concurrency on the version a job
read stays the last line of defence (:meth:`Lake.append`'s ``read_version``).

A lease is free when it is released, expired, or held by a process on this host that
no longer runs (a SIGKILLed job: its successor need not wait for the expiry).

Taking a lease is a compare-and-set. On a local or mounted file system it runs under
``flock`` on ``<table>.lock``. Object stores have no lock: there the writer puts its
lease, waits ``settle`` seconds and reads it back; it holds the lease only if its own
token is still there (safe as long as no writer takes longer than ``settle`` between
reading a free lease and putting its own).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from pyarrow import fs as pafs

from recsys_lib.lake.errors import LakeError
from recsys_lib.lake.files import filesystem_for

log = logging.getLogger(__name__)

LEASE_DIR = "_leases"


class LeaseHeld(LakeError):
    """Another job holds the lease of a table this job wants to write; the message names it."""


class LeaseLost(LakeError):
    """The job's lease expired or was taken over before a commit; nothing was committed."""


@dataclass(frozen=True)
class Holder:
    """Who holds a table's lease, and until when (epoch seconds)."""

    owner: str
    host: str
    pid: int
    #: The process's start time (clock ticks since boot; -1 where unknown): a reused pid is not the holder.
    process_start: int
    token: str
    acquired_at: float
    expires_at: float

    def describe(self) -> str:
        """``owner (pid N on host, since T, expires T')`` for error messages."""
        return (f"'{self.owner}' (pid {self.pid} on {self.host}, since {_iso(self.acquired_at)}, "
                f"lease expires {_iso(self.expires_at)})")

    def stale(self, now: float) -> bool:
        """True when the lease is expired, or its process on this host has ended."""
        if now >= self.expires_at:
            return True
        if self.host != socket.gethostname() or self.process_start < 0:
            return False
        running = _process_start(self.pid)
        return running >= 0 and running != self.process_start


class LeaseStore:
    """The leases of one lake root.

    Args:
        root: The lake root (local path or URI).
        ttl: Seconds a lease lives without renewal.
        settle: Object stores only: seconds between putting a lease and reading it back.
        clock: Epoch seconds (tests move it).

    """

    def __init__(self, root: str, *, ttl: float = 60.0, settle: float = 1.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.fs, path = filesystem_for(f"{root.rstrip('/')}/{LEASE_DIR}")
        self.folder = path
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        self.ttl = ttl
        self.settle = settle
        self.clock = clock
        self._held: dict[str, str] = {}  # table -> token, for the leases this process holds
        self._held_lock = threading.Lock()

    # -- reading ---------------------------------------------------------------
    def holder(self, table: str) -> Holder | None:
        """The table's current lease (None if there never was one, or it was released)."""
        try:
            with self.fs.open_input_stream(self._path(table)) as stream:
                text = stream.read().decode("utf-8")
        except FileNotFoundError:
            return None
        if not text.strip():
            return None
        try:
            return Holder(**json.loads(text))
        except (ValueError, TypeError) as exc:  # a lease file is written whole (rename or object put)
            raise LakeError(f"lease file {self._path(table)} is not a lease ({exc}); delete it if no job "
                            "is writing that table") from exc

    def check_commit(self, table: str) -> None:
        """Refuse a commit to ``table`` unless this process holds its lease or nobody does.

        Raises:
            LeaseHeld: Another job holds a live lease on ``table``.
            LeaseLost: This process held it, but it expired or another job took it over.

        """
        with self._held_lock:
            mine = self._held.get(table)
        current = self.holder(table)
        now = self.clock()
        if mine is not None:
            if current is None or current.token != mine:
                taker = "nobody" if current is None else current.describe()
                raise LeaseLost(f"the lease on table '{table}' was lost (now held by {taker}); "
                                "nothing was committed")
            if now >= current.expires_at:
                raise LeaseLost(f"the lease on table '{table}' expired at {_iso(current.expires_at)} before this "
                                "commit (the job stalled longer than lake.lease_ttl); nothing was committed")
            return
        if current is not None and not current.stale(now):
            raise LeaseHeld(f"table '{table}' is being written by {current.describe()}; this commit was refused. "
                            "Wait for that job, or stop it")

    # -- taking and giving back ------------------------------------------------
    def acquire(self, tables: Sequence[str], owner: str, *, wait: float) -> Lease:
        """Take the leases of ``tables`` for ``owner``, waiting up to ``wait`` seconds for a holder to finish.

        Raises:
            LeaseHeld: A table was still leased to another job after ``wait`` seconds.

        """
        lease = Lease(self, sorted(set(tables)), owner)
        deadline = time.monotonic() + wait
        told: set[str] = set()
        try:
            for table in lease.tables:
                while True:
                    blocker = self._take(table, lease)
                    if blocker is None:
                        break
                    if time.monotonic() >= deadline:
                        raise LeaseHeld(f"{owner}: the lease on '{table}' is held by {blocker.describe()}; "
                                        f"gave up after waiting {wait:g}s (lake.lease_wait). Wait for that "
                                        "job to finish, or stop it, then run this again")
                    if table not in told:
                        told.add(table)
                        log.warning("%s: waiting for the lease on '%s', held by %s", owner, table, blocker.describe())
                    time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        except BaseException:
            lease.release()
            raise
        lease.start_renewing()
        return lease

    def _take(self, table: str, lease: Lease) -> Holder | None:
        """Take (or renew) ``table``'s lease for ``lease``; the blocking holder if someone else has it."""
        now = self.clock()
        mine = Holder(owner=lease.owner, host=socket.gethostname(), pid=os.getpid(),
                      process_start=_process_start(os.getpid()), token=lease.token, acquired_at=now,
                      expires_at=now + self.ttl)
        with self._locked(table):
            current = self.holder(table)
            if current is not None and current.token != lease.token and not current.stale(now):
                return current
            if current is not None and current.token == lease.token:
                mine = replace(mine, acquired_at=current.acquired_at)
            elif current is not None and now < current.expires_at:
                log.warning("%s: taking over table '%s' from %s, whose process has ended", lease.owner, table,
                            current.describe())
            self._write(table, mine)
        if not self.local:
            time.sleep(self.settle)
            current = self.holder(table)
            if current is None or current.token != lease.token:
                return current or mine
        with self._held_lock:
            self._held[table] = lease.token
        return None

    def _give_back(self, table: str, token: str) -> None:
        with self._held_lock:
            if self._held.get(table) == token:
                del self._held[table]
        with self._locked(table):
            current = self.holder(table)
            if current is not None and current.token == token:
                self.fs.delete_file(self._path(table))

    # -- storage ---------------------------------------------------------------
    def _path(self, table: str) -> str:
        return f"{self.folder}/{table}.json"

    def _write(self, table: str, holder: Holder) -> None:
        data = json.dumps(asdict(holder), sort_keys=True).encode("utf-8")
        if self.local:  # whole or not at all: write aside, then rename
            Path(self.folder).mkdir(parents=True, exist_ok=True)
            tmp = Path(self.folder) / f".{table}.{uuid.uuid4().hex}.tmp"
            tmp.write_bytes(data)
            tmp.replace(self._path(table))
            return
        with self.fs.open_output_stream(self._path(table)) as stream:  # an object put is atomic
            stream.write(data)

    @contextlib.contextmanager
    def _locked(self, table: str) -> Iterator[None]:
        if not self.local:
            yield
            return
        Path(self.folder).mkdir(parents=True, exist_ok=True)
        with open(Path(self.folder) / f"{table}.lock", "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


class Lease:
    """The leases one job holds; renewed in the background until :meth:`release`."""

    def __init__(self, store: LeaseStore, tables: list[str], owner: str) -> None:
        self.store = store
        self.tables = tables
        self.owner = owner
        self.token = uuid.uuid4().hex
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start_renewing(self) -> None:
        """Renew every ``ttl / 3`` seconds in a daemon thread."""
        self._thread = threading.Thread(target=self._renew_loop, name=f"lease-{self.owner}", daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.store.ttl / 3):
            for table in self.tables:
                try:
                    blocker = self.store._take(table, self)
                except OSError as exc:  # the next renewal tries again; a commit checks the lease itself
                    log.warning("%s: renewing the lease on '%s' failed: %s", self.owner, table, exc)
                    continue
                if blocker is not None:
                    self.lost = f"table '{table}' was taken over by {blocker.describe()}"
                    log.error("%s: lease lost: %s", self.owner, self.lost)

    def release(self) -> None:
        """Stop renewing and give every lease back (idempotent)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        for table in self.tables:
            try:
                self.store._give_back(table, self.token)
            except OSError as exc:  # it expires by itself after lake.lease_ttl
                log.warning("%s: releasing the lease on '%s' failed (it expires by itself): %s",
                            self.owner, table, exc)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


def _process_start(pid: int) -> int:
    """The process's start time in clock ticks since boot: 0 if it does not run, -1 where unknown (no /proc)."""
    if not Path("/proc/self/stat").exists():
        return -1
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return 0
    except OSError:
        return -1
    return int(stat.rsplit(")", 1)[1].split()[19])


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
