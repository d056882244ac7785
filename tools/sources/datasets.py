"""Parquet datasets: a directory or glob of (hive-partitioned) Parquet files, read in place.

The file list is fixed when the incident is loaded (files written later are not seen, so an
investigation keeps reading the same data), and the investigation database records it in
the table ``source_files(path)``: ``tools.sql_sandbox.connect_readonly`` allows exactly those
files and nothing else once file access is otherwise switched off.
"""
from __future__ import annotations

import glob
from pathlib import Path

from tools.loader import InputError, _lit

__all__ = [
    "GLOB_CHARS",
    "SOURCE_FILES_TABLE",
    "dataset_files",
    "has_glob",
    "is_dataset",
    "parquet_relation_sql",
]

GLOB_CHARS = "*?["
SOURCE_FILES_TABLE = "source_files"


def has_glob(text: str | Path) -> bool:
    return any(c in str(text) for c in GLOB_CHARS)


def is_dataset(text: str | Path) -> bool:
    """A directory or a glob pattern (rather than one file: an existing file whose name has
    a glob character such as '[' is a file)."""
    path = Path(text).expanduser()
    return path.is_dir() or has_glob(text) and not path.exists()


def dataset_files(label: str, text: str | Path) -> list[Path]:
    """The Parquet files of a directory (searched recursively) or a glob (``**`` allowed),
    sorted, as absolute paths. InputError when there is none."""
    pattern = str(Path(text).expanduser())
    if has_glob(pattern):
        matches = glob.glob(pattern, recursive=True)
        what = "the pattern"
    else:
        matches = glob.glob(str(Path(pattern) / "**" / "*.parquet"), recursive=True)
        what = "the directory (searched recursively for *.parquet)"
    files = sorted(Path(m).resolve() for m in matches if Path(m).is_file())
    if not files:
        raise InputError(label, f"no files match {what}")
    not_parquet = [f for f in files if f.suffix.lower() != ".parquet"]
    if not_parquet:
        raise InputError(label, f"a dataset must hold only .parquet files; found "
                         f"{not_parquet[0]} ({len(not_parquet)} such file(s)): narrow the glob")
    return files


def parquet_relation_sql(files: list[Path]) -> str:
    """``read_parquet`` over exactly these files; ``key=value`` folders become columns and
    files whose columns differ are aligned by name."""
    listed = ", ".join(_lit(str(f)) for f in files)
    return f"read_parquet([{listed}], hive_partitioning=true, union_by_name=true)"
