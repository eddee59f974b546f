"""The online store's interface: one contract, two backends (SQLite embedded, Redis).

The store is a projection of the feature tables, never a second truth. It holds,
for each key of each feature table, the two layers the Delta table holds
(:mod:`recsys_lib.features.layers`): the **base** row and the **pending** row,
each an encoded state (:mod:`recsys_lib.online.codec`) tagged with the table
version it was read at. A reader merges the two, as Delta's readers do.

* **Version guard.** A layer is written only if its version is newer than the
  stored one; a delete leaves a tombstone with its version. So writes may come in
  any order and any number of times (a replay after SIGKILL, a catch-up racing the
  stream) and the newest Delta version always wins.
* **Generations.** A full refresh loads a new generation beside the active one
  and switches readers to it in one step (:meth:`OnlineStore.activate`). Readers
  read one generation per call; a replaced generation stays readable for
  ``online.generation_grace`` before it is dropped, so in-flight reads finish on it.
* **Applied versions.** Each generation records, per table, the table version it
  is complete up to; catch-up reads Delta's change feed from there.
* **Purchases.** Each user's purchased item ids (from ``events``; outside
  generations, since a refresh does not change them) with the ``events``
  version they are complete up to.
* **TTL.** A row may carry an expiry (its newest ``as_of`` plus the table's TTL);
  an expired row reads as absent.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any


class OnlineStoreError(RuntimeError):
    """The online store failed; the message names the backend and the operation."""


class StoreUnavailable(OnlineStoreError):
    """The store cannot be reached (server down, file unreadable)."""


class Layer(str, Enum):
    """Which layer of a feature table a value belongs to."""

    BASE = "b"
    PENDING = "p"


@dataclass(frozen=True)
class StoredRow:
    """One key's layers as stored: encoded values (None: absent) and their versions (-1: never written)."""

    base: bytes | None
    base_version: int
    pending: bytes | None
    pending_version: int

    @property
    def present(self) -> bool:
        """True if either layer holds a value."""
        return self.base is not None or self.pending is not None


#: One write: the key, the encoded value (None deletes the layer) and the expiry (epoch seconds, None: none).
Write = tuple[str, bytes | None, float | None]


class OnlineStore(ABC):
    """What every backend offers. Implementations are safe to share between threads."""

    backend: str = "abstract"

    # -- features -------------------------------------------------------------------------------
    @abstractmethod
    def write(self, table: str, layer: Layer, rows: Sequence[Write], version: int, *,
              generation: int | None = None, fresh: bool = False) -> int:
        """Write one layer of ``rows`` at ``version`` into ``generation`` (default: the active one).

        Each row is written only if ``version`` is newer than the stored layer's version.
        ``fresh``: the generation is new and only this writer fills it, so the guard is
        skipped (a bulk load). Returns how many rows were written.
        """

    @abstractmethod
    def read(self, table: str, keys: Sequence[str]) -> list[StoredRow | None]:
        """The rows of ``keys`` in the active generation (None: absent or expired), all from one generation."""

    @abstractmethod
    def scan(self, table: str, generation: int | None = None) -> Iterator[tuple[str, StoredRow]]:
        """Every unexpired row of ``table`` in ``generation`` (default: the active one)."""

    @abstractmethod
    def delete_keys(self, table: str, keys: Sequence[str]) -> int:
        """Remove ``keys`` from every generation (forgetting an entity). Returns rows removed."""

    # -- generations and versions -------------------------------------------------------------
    @abstractmethod
    def generation(self) -> int:
        """The active generation (0 before the first load)."""

    @abstractmethod
    def new_generation(self) -> int:
        """Allocate an empty generation, not yet active."""

    @abstractmethod
    def activate(self, generation: int) -> None:
        """Switch readers to ``generation`` atomically and drop generations replaced over the grace period ago."""

    @abstractmethod
    def applied_version(self, table: str, generation: int | None = None) -> int:
        """The table version ``generation`` is complete up to (-1: none)."""

    @abstractmethod
    def set_applied(self, table: str, version: int, generation: int | None = None) -> None:
        """Record that ``generation`` is complete up to ``version`` (never moves back)."""

    # -- purchases ----------------------------------------------------------------------------
    @abstractmethod
    def add_purchases(self, pairs: Sequence[tuple[str, str]], events_version: int) -> None:
        """Add (user, item) purchases and record that they are complete up to ``events_version``."""

    @abstractmethod
    def purchases(self, users: Sequence[str]) -> dict[str, set[str]]:
        """Each user's purchased item ids (users without purchases are left out)."""

    @abstractmethod
    def purchases_version(self) -> int:
        """The ``events`` version purchases are complete up to (-1: none)."""

    # -- forgetting -----------------------------------------------------------------------------
    def forget(self, keys: Mapping[str, Sequence[str]], users: Sequence[str]) -> int:
        """Erase people: ``keys`` per table from every generation, ``users``' purchases, then the freed bytes.

        Returns:
            Rows and purchase sets removed.

        """
        removed = sum(self.delete_keys(table, list(found)) for table, found in keys.items() if found)
        removed += self.forget_purchases(users)
        self.erase_freed()
        return removed

    @abstractmethod
    def forget_purchases(self, users: Sequence[str]) -> int:
        """Remove ``users``' purchases; returns how many users had any."""

    @abstractmethod
    def erase_freed(self) -> None:
        """Make deleted rows unrecoverable from the store's files (a file-backed store rewrites itself)."""

    # -- watermark ------------------------------------------------------------------------------
    @abstractmethod
    def raise_watermark(self, micros: int) -> None:
        """Record that rows up to event time ``micros`` (epoch microseconds) were written (never moves back)."""

    @abstractmethod
    def watermark(self) -> int | None:
        """The newest event time written, in epoch microseconds (None: nothing written)."""

    # -- operations -----------------------------------------------------------------------------
    @abstractmethod
    def ping(self) -> None:
        """Raise :class:`StoreUnavailable` if the store cannot be reached."""

    @abstractmethod
    def stats(self) -> dict[str, Any]:
        """Rows per table, memory or file size in bytes, generation and applied versions."""

    @abstractmethod
    def clear(self) -> None:
        """Remove everything (tests, ``sync --full`` from scratch)."""

    def close(self) -> None:  # noqa: B027 - optional: backends without connections keep this no-op
        """Release connections."""


def key_of(values: Sequence[Any]) -> str:
    """A store key from an entity's key values: one value as is, several joined by U+001F."""
    return values[0] if len(values) == 1 else "\x1f".join(values)


def expiry_ms(expire_at: float | None) -> int:
    """An expiry in epoch milliseconds (0: none)."""
    return 0 if expire_at is None else int(expire_at * 1000)


def versions_dict(raw: Mapping[str, Any]) -> dict[str, int]:
    """Applied versions as ints."""
    return {str(k): int(v) for k, v in raw.items()}
