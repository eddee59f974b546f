"""The lake's errors: each message names the table and what to do."""

from __future__ import annotations


class LakeError(RuntimeError):
    """A lake operation failed; the message names the table and the operation."""


class LakeConflictError(LakeError):
    """A commit kept conflicting with concurrent writers until the retries ran out."""


class TableNotFound(LakeError):
    """The named table does not exist."""


class CorruptLog(LakeError):
    """A table's Delta log holds an entry that cannot be parsed; the message names the file and version."""


class SchemaDrift(LakeError):
    """A table is stored with other columns (or types, or partitioning) than the code writes."""
