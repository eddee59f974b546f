"""Streaming: micro-batches applied exactly once to events and the feature tables."""
