"""Data sources: the synthetic log generator and real-data adapters."""
