"""Pipelines: one function per job. Faces (CLI, jobs, DAGs, notebooks) call these."""
