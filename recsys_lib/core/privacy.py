"""Pseudonymous user ids: one keyed hash, declared once, computed by Spark, by Arrow and by Python alike.

At the edge (batch ingest, every stream micro-batch, the HTTP API) a shop's raw
``user_id`` becomes ``HMAC-SHA256(key, utf8(user_id))``, hex, truncated to
:data:`PSEUDONYM_HEX` characters (128 bits). Collisions: for n users the chance of any
two sharing a pseudonym is about n² / 2¹²⁹, so 2·10⁻²¹ for a billion users. Without
the key a pseudonym cannot be turned back into the raw id, nor the raw id into it.

The key comes from ``$RECSYS_ID_KEY``, else from the file ``privacy.key_file`` (default
``<home>/secrets/id.key``), never from YAML. With neither, the embedded default writes
a random key to that file (mode 0600) and says so: back it up, since a new key gives the
same person a new pseudonym. Rotating the key means rewriting every stored id
(``old pseudonym -> new pseudonym`` needs both keys, never the raw ids).

Quarantined raw lines keep their reason and position, with the ``user_id`` value masked
(:data:`USER_ID_IN_RAW`, the same pattern for Java's and Python's regex engines).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column
from pyspark.sql import functions as F

from recsys_lib.core.config import RecsysConfig

log = logging.getLogger(__name__)

KEY_ENV = "RECSYS_ID_KEY"
#: Hex characters kept of the HMAC-SHA256 digest (128 bits).
PSEUDONYM_HEX = 32
MIN_KEY_CHARS = 32
#: The ``user_id`` member of a raw JSON line: the name, then a string, number or literal value.
USER_ID_IN_RAW = r'("user_id"\s*:\s*)("(?:[^"\\]|\\.)*"|-?[0-9][0-9.eE+-]*|true|false|null)'
MASKED = '"***"'
_BLOCK = 64  # SHA-256's block size in bytes


class IdKeyError(ValueError):
    """The pseudonym key is missing or too short; the message names where it was looked for."""


@dataclass(frozen=True)
class Pseudonyms:
    """The keyed hash of user ids (see the module docstring)."""

    key: bytes

    def of(self, raw: str) -> str:
        """The pseudonym of one raw id."""
        return hmac.new(self.key, raw.encode("utf-8"), hashlib.sha256).hexdigest()[:PSEUDONYM_HEX]

    def many(self, raws: Iterable[str]) -> list[str]:
        """:meth:`of` for each id."""
        return [self.of(r) for r in raws]

    def arrow(self, ids: pa.Array | pa.ChunkedArray) -> pa.Array:
        """:meth:`of` of an Arrow string column (nulls stay null), hashing each distinct id once."""
        ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
        ids = ids.cast(pa.string())
        distinct = pc.unique(ids.drop_null())
        hashed = pa.array(self.many(distinct.to_pylist()), pa.string())
        return pc.take(hashed, pc.index_in(ids, value_set=distinct))

    def column(self, ids: Column) -> Column:
        """:meth:`of` as a Spark expression (HMAC written out with ``sha2``: no Python UDF)."""
        key = hashlib.sha256(self.key).digest() if len(self.key) > _BLOCK else self.key
        key = key.ljust(_BLOCK, b"\0")
        inner_pad = bytes(b ^ 0x36 for b in key).hex()
        outer_pad = bytes(b ^ 0x5C for b in key).hex()
        inner = F.sha2(F.concat(F.unhex(F.lit(inner_pad)), F.encode(ids, "UTF-8")), 256)
        outer = F.sha2(F.concat(F.unhex(F.lit(outer_pad)), F.unhex(inner)), 256)
        return F.substring(outer, 1, PSEUDONYM_HEX)


def mask_raw(line: str) -> str:
    """``line`` with the value of its ``user_id`` member masked."""
    return re.sub(USER_ID_IN_RAW, lambda m: m.group(1) + MASKED, line)


def mask_raw_arrow(lines: pa.Array | pa.ChunkedArray) -> pa.Array:
    """:func:`mask_raw` of an Arrow string column."""
    return pc.replace_substring_regex(lines, USER_ID_IN_RAW, r"\1" + MASKED)


def mask_raw_column(lines: Column) -> Column:
    """:func:`mask_raw` as a Spark expression."""
    return F.regexp_replace(lines, USER_ID_IN_RAW, "$1" + MASKED.replace("$", r"\$"))


def pseudonyms_for(cfg: RecsysConfig) -> Pseudonyms | None:
    """The config's pseudonyms, or None when ``privacy.pseudonymize`` is off."""
    if not cfg.privacy.pseudonymize:
        return None
    return Pseudonyms(load_key(cfg.privacy.key_file, cfg.home_dir))


def audit_digests(cfg: RecsysConfig) -> Pseudonyms:
    """The keyed hash that turns a stored id into its audit digest (tombstones, ``forget_log``).

    Its key is derived from the pseudonym key for this one purpose (HMAC of a fixed label), so a
    digest matches new events of a forgotten person but names no stored row: it is neither the
    raw id nor the pseudonym, and neither can be computed back from it.
    """
    key = load_key(cfg.privacy.key_file, cfg.home_dir)  # also with pseudonyms off: digests are keyed alike
    return Pseudonyms(hmac.new(key, b"recsys/forget-audit/v1", hashlib.sha256).hexdigest().encode("ascii"))


def stored_id(cfg: RecsysConfig, user: str) -> str:
    """The id the tables know a raw ``user`` id by: its pseudonym, or itself with pseudonyms off."""
    ids = pseudonyms_for(cfg)
    return user if ids is None else ids.of(user)


def load_key(key_file: str | None, home: str) -> bytes:
    """The key from ``$RECSYS_ID_KEY``, else ``key_file`` (default ``<home>/secrets/id.key``), made if absent.

    Raises:
        IdKeyError: The key found is shorter than :data:`MIN_KEY_CHARS` characters.

    """
    given = os.environ.get(KEY_ENV)
    if given is not None:
        return _checked(given, f"${KEY_ENV}")
    path = Path(key_file) if key_file else Path(home) / "secrets" / "id.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
        log.warning("made a new pseudonym key at %s (set %s or privacy.key_file to use your own); back it up: "
                    "with another key the same person gets another pseudonym", path, KEY_ENV)
    return _checked(path.read_text(encoding="utf-8"), str(path))


def _checked(text: str, where: str) -> bytes:
    key = text.strip()
    if len(key) < MIN_KEY_CHARS:
        raise IdKeyError(f"the pseudonym key in {where} has {len(key)} characters; at least {MIN_KEY_CHARS} "
                         "are needed (e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`)")
    return key.encode("utf-8")
