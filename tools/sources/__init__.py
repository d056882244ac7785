"""Telemetry where it lives: readers that flatten backends and exports into the loader's tables.

* ``prometheus``: named PromQL queries over ``/api/v1/query_range`` -> a metrics frame / Parquet
  file in the loader's metrics shape (``ts`` + one numeric column per query and series).
* ``logformats``: Loki ``query_range`` JSON, OTLP JSON logs and NDJSON with a field mapping,
  flattened by DuckDB into the loader's log columns.
* ``datasets``: a directory or glob of (hive-partitioned) Parquet files, read in place.

Nothing here imports ``graph/``; errors are ``tools.contract.InputError`` so every caller
reports them the same way (the CLI exits 2).
"""
