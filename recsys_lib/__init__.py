"""recsys: a Spark job suite that keeps an e-commerce recommender fresh.

Layers (imports point down only; ``tests/unit/test_layers.py`` checks it)::

    faces      cli.py, cli_models.py, jobs/, airflow_dags/, notebooks/
    pipelines  recsys_lib.pipelines   one function per job
    domain     recsys_lib.ingest, .features, .streaming, .models, .datagen (may use each other)
    lake       recsys_lib.lake        Delta I/O (delta-rs commits, Spark computes)
    core       recsys_lib.core        config, schema, Spark session
"""

__version__ = "0.1.0"
