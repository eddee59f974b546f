"""Ingestion: raw JSON-lines logs -> validated events plus a quarantine."""
