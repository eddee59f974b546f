"""The embedded online store: one SQLite file in WAL mode (no server; the default).

Readers never block the writer and see one committed snapshot per statement.
Every read of feature rows is a single statement that looks up the active
generation itself, so a generation switch is atomic for readers. Each thread
gets its own connection.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from operator import itemgetter
from pathlib import Path
from typing import Any

from recsys_lib.online.base import Layer, OnlineStore, OnlineStoreError, StoredRow, StoreUnavailable, Write

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v);
CREATE TABLE IF NOT EXISTS generations(gen INTEGER PRIMARY KEY, created REAL NOT NULL, replaced REAL);
CREATE TABLE IF NOT EXISTS applied(gen INTEGER NOT NULL, tbl TEXT NOT NULL, version INTEGER NOT NULL,
                                   PRIMARY KEY(gen, tbl)) WITHOUT ROWID;
-- one B-tree keyed by (gen, tbl, key): with 16 KiB pages this loads faster than a rowid table plus
-- a unique index (273k against 248k rows/s for 180-byte values; even for 700-byte user rows)
CREATE TABLE IF NOT EXISTS rows(gen INTEGER NOT NULL, tbl TEXT NOT NULL, key TEXT NOT NULL,
                                b BLOB, bv INTEGER NOT NULL DEFAULT -1, p BLOB, pv INTEGER NOT NULL DEFAULT -1,
                                exp REAL, PRIMARY KEY(gen, tbl, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS purchases(user TEXT NOT NULL, item TEXT NOT NULL, PRIMARY KEY(user, item)) WITHOUT ROWID;
INSERT OR IGNORE INTO meta VALUES('gen', 0), ('purchases_version', -1);
"""
_ACTIVE = "(SELECT v FROM meta WHERE k = 'gen')"


def _upsert(layer: Layer, gen: int, table: str, version: int) -> str:
    """The guarded upsert of one layer; the values shared by every row are SQL literals.

    Binding three parameters per row instead of six made bulk loads about 15% faster.
    """
    col, name = layer.value, "'" + table.replace("'", "''") + "'"
    return (f"INSERT INTO rows(gen, tbl, key, {col}, {col}v, exp) VALUES({int(gen)}, {name}, ?, ?, {int(version)}, ?) "
            f"ON CONFLICT(gen, tbl, key) DO UPDATE SET {col} = excluded.{col}, {col}v = excluded.{col}v, "
            "exp = CASE WHEN excluded.exp IS NULL THEN NULL ELSE max(excluded.exp, coalesce(rows.exp, 0)) END "
            f"WHERE excluded.{col}v > rows.{col}v")


#: Larger pages than SQLite's 4 KiB: fewer B-tree levels and splits per row (user rows are ~700 bytes);
#: bulk loads measured 16% faster at 16 KiB. Set when the file is created; older files keep theirs.
_PAGE_SIZE = 16384


class SqliteStore(OnlineStore):
    """The online store in one SQLite file."""

    backend = "sqlite"

    def __init__(self, path: str, *, grace: float = 60.0, timeout: float = 30.0) -> None:
        self.path = path
        self.grace = grace
        self.timeout = timeout
        self._local = threading.local()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = self._conn()
        conn.executescript(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
                conn.execute(f"PRAGMA page_size={_PAGE_SIZE}")  # takes effect only on a new, empty file
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"online store (sqlite {self.path}): cannot open: {exc}") from exc
            self._local.conn = conn
        return conn

    def _run(self, what: str, fn: Any) -> Any:
        try:
            return fn(self._conn())
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"online store (sqlite {self.path}): {what} failed: {exc}") from exc
        except sqlite3.Error as exc:
            raise OnlineStoreError(f"online store (sqlite {self.path}): {what} failed: {exc}") from exc

    def _gen(self, conn: sqlite3.Connection, generation: int | None) -> int:
        if generation is not None:
            return generation
        return int(conn.execute("SELECT v FROM meta WHERE k = 'gen'").fetchone()[0])

    # -- features -------------------------------------------------------------------------------
    def write(self, table: str, layer: Layer, rows: Sequence[Write], version: int, *,
              generation: int | None = None, fresh: bool = False) -> int:
        def run(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            try:
                gen = self._gen(conn, generation)
                before = conn.total_changes
                # in key order: B-tree inserts then append instead of landing at random pages
                # (89k user x category rows: 187k rows/s sorted against 56k/s in table order)
                conn.executemany(_upsert(layer, gen, table, version), sorted(rows, key=itemgetter(0)))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return conn.total_changes - before
        return int(self._run(f"write {table}", run))

    def read(self, table: str, keys: Sequence[str]) -> list[StoredRow | None]:
        if not keys:
            return []
        marks = ",".join("?" * len(keys))
        sql = (f"SELECT key, b, bv, p, pv FROM rows WHERE gen = {_ACTIVE} AND tbl = ? AND key IN ({marks}) "
               "AND (exp IS NULL OR exp > ?)")
        found = self._run(f"read {table}", lambda c: c.execute(sql, (table, *keys, time.time())).fetchall())
        rows = {r[0]: StoredRow(r[1], r[2], r[3], r[4]) for r in found if r[1] is not None or r[3] is not None}
        return [rows.get(k) for k in keys]

    def scan(self, table: str, generation: int | None = None) -> Iterator[tuple[str, StoredRow]]:
        def run(conn: sqlite3.Connection) -> list[Any]:
            gen = self._gen(conn, generation)
            return conn.execute("SELECT key, b, bv, p, pv FROM rows WHERE gen = ? AND tbl = ? "
                                "AND (exp IS NULL OR exp > ?)", (gen, table, time.time())).fetchall()
        for r in self._run(f"scan {table}", run):
            if r[1] is not None or r[3] is not None:  # rows of tombstones only are absent
                yield r[0], StoredRow(r[1], r[2], r[3], r[4])

    def delete_keys(self, table: str, keys: Sequence[str]) -> int:
        def run(conn: sqlite3.Connection) -> int:
            before = conn.total_changes
            gens = {g for (g,) in conn.execute("SELECT gen FROM generations").fetchall()} | {self._gen(conn, None)}
            conn.executemany("DELETE FROM rows WHERE gen = ? AND tbl = ? AND key = ?",  # the index's order
                             [(g, table, k) for g in gens for k in keys])
            return conn.total_changes - before
        return int(self._run(f"delete from {table}", run))

    def forget_purchases(self, users: Sequence[str]) -> int:
        def run(conn: sqlite3.Connection) -> int:
            had = sum(conn.execute("SELECT EXISTS(SELECT 1 FROM purchases WHERE user = ?)", (u,)).fetchone()[0]
                      for u in users)
            conn.executemany("DELETE FROM purchases WHERE user = ?", [(u,) for u in users])
            return int(had)
        return int(self._run("forget purchases", run))

    def erase_freed(self) -> None:
        """Rewrite the file without free pages (``VACUUM``), then checkpoint and truncate the write-ahead log.

        Free pages hold the old values of updated and deleted rows.
        """
        def run(conn: sqlite3.Connection) -> None:
            conn.execute("VACUUM")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._run("erase freed pages", run)

    # -- generations and versions -------------------------------------------------------------
    def generation(self) -> int:
        return int(self._run("read the generation", lambda c: self._gen(c, None)))

    def new_generation(self) -> int:
        def run(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            try:
                active = self._gen(conn, None)
                # a load that died before activating left its generation behind: drop it
                for (gen,) in conn.execute("SELECT gen FROM generations WHERE replaced IS NULL AND gen > ?",
                                           (active,)).fetchall():
                    self._drop(conn, gen)
                top = conn.execute("SELECT max(gen) FROM generations").fetchone()[0]
                gen = max(int(top or 0), active) + 1
                conn.execute("INSERT INTO generations VALUES(?, ?, NULL)", (gen, time.time()))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return gen
        return int(self._run("allocate a generation", run))

    def activate(self, generation: int) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                now = time.time()
                old = self._gen(conn, None)
                conn.execute("UPDATE meta SET v = ? WHERE k = 'gen'", (generation,))
                conn.execute("INSERT OR IGNORE INTO generations VALUES(?, ?, NULL)", (old, now))
                conn.execute("UPDATE generations SET replaced = ? WHERE gen = ?", (now, old))
                for (gen,) in conn.execute("SELECT gen FROM generations WHERE replaced IS NOT NULL AND replaced < ?"
                                           " AND gen != ?", (now - self.grace, generation)).fetchall():
                    self._drop(conn, gen)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        self._run(f"activate generation {generation}", run)

    @staticmethod
    def _drop(conn: sqlite3.Connection, gen: int) -> None:
        conn.execute("DELETE FROM rows WHERE gen = ?", (gen,))
        conn.execute("DELETE FROM applied WHERE gen = ?", (gen,))
        conn.execute("DELETE FROM generations WHERE gen = ?", (gen,))

    def applied_version(self, table: str, generation: int | None = None) -> int:
        def run(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT version FROM applied WHERE gen = ? AND tbl = ?",
                               (self._gen(conn, generation), table)).fetchone()
            return -1 if row is None else int(row[0])
        return int(self._run(f"read the applied version of {table}", run))

    def set_applied(self, table: str, version: int, generation: int | None = None) -> None:
        self._run(f"record the applied version of {table}", lambda c: c.execute(
            "INSERT INTO applied VALUES(?, ?, ?) ON CONFLICT(gen, tbl) DO UPDATE SET version = excluded.version "
            "WHERE excluded.version > applied.version", (self._gen(c, generation), table, version)))

    # -- purchases ----------------------------------------------------------------------------
    def add_purchases(self, pairs: Sequence[tuple[str, str]], events_version: int) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("INSERT OR IGNORE INTO purchases VALUES(?, ?)", pairs)
                conn.execute("UPDATE meta SET v = max(v, ?) WHERE k = 'purchases_version'", (events_version,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        self._run("add purchases", run)

    def purchases(self, users: Sequence[str]) -> dict[str, set[str]]:
        if not users:
            return {}
        marks = ",".join("?" * len(users))
        found = self._run("read purchases", lambda c: c.execute(
            f"SELECT user, item FROM purchases WHERE user IN ({marks})", tuple(users)).fetchall())
        out: dict[str, set[str]] = {}
        for user, item in found:
            out.setdefault(user, set()).add(item)
        return out

    def purchases_version(self) -> int:
        return int(self._run("read the purchases version", lambda c: c.execute(
            "SELECT v FROM meta WHERE k = 'purchases_version'").fetchone()[0]))

    # -- watermark ------------------------------------------------------------------------------
    def raise_watermark(self, micros: int) -> None:
        self._run("raise the watermark", lambda c: c.execute(
            "INSERT INTO meta VALUES('watermark', ?) ON CONFLICT(k) DO UPDATE SET v = max(v, excluded.v)",
            (int(micros),)))

    def watermark(self) -> int | None:
        row = self._run("read the watermark", lambda c: c.execute(
            "SELECT v FROM meta WHERE k = 'watermark'").fetchone())
        return None if row is None else int(row[0])

    # -- operations -----------------------------------------------------------------------------
    def ping(self) -> None:
        if not Path(self.path).exists():
            raise StoreUnavailable(f"online store (sqlite {self.path}): the file is gone")
        self._run("ping", lambda c: c.execute("SELECT 1").fetchone())

    def stats(self) -> dict[str, Any]:
        def run(conn: sqlite3.Connection) -> dict[str, Any]:
            gen = self._gen(conn, None)
            rows = dict(conn.execute("SELECT tbl, count(*) FROM rows WHERE gen = ? "
                                     "AND (b IS NOT NULL OR p IS NOT NULL) GROUP BY tbl", (gen,)).fetchall())
            applied = dict(conn.execute("SELECT tbl, version FROM applied WHERE gen = ?", (gen,)).fetchall())
            page = conn.execute("PRAGMA page_size").fetchone()[0] * conn.execute("PRAGMA page_count").fetchone()[0]
            gens = [g for (g,) in conn.execute("SELECT gen FROM generations ORDER BY gen").fetchall()]
            users = conn.execute("SELECT count(DISTINCT user) FROM purchases").fetchone()[0]
            return {"backend": self.backend, "path": self.path, "generation": gen, "generations": gens,
                    "rows": rows, "applied_versions": applied, "bytes": int(page),
                    "purchases_users": users, "purchases_version": self.purchases_version()}
        return dict(self._run("stats", run))

    def clear(self) -> None:
        self._run("clear", lambda c: c.executescript(
            "DELETE FROM rows; DELETE FROM applied; DELETE FROM generations; DELETE FROM purchases; "
            "UPDATE meta SET v = 0 WHERE k = 'gen'; UPDATE meta SET v = -1 WHERE k = 'purchases_version'; "
            "DELETE FROM meta WHERE k = 'watermark';"))

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
