"""Where inputs may be read from, and Parquet datasets (a directory or glob of hive-partitioned
Parquet files) read in place.

The file list is fixed when the incident is loaded (files written later are not seen, so an
investigation keeps reading the same data), and the investigation database records it in
the table ``source_files(path)``: ``tools.sql_sandbox.connect_readonly`` allows exactly those
files and nothing else once file access is otherwise switched off.

A pattern can come from an HTTP client, so listing it is bounded: it walks only from the
pattern's fixed prefix, never follows a symlinked directory (``ln -s . loop`` would otherwise
recurse without end), and stops with a clear error past ``MAX_DATASET_FILES`` matches or
``LIST_SECONDS`` of listing. `confined_inputs` refuses a path outside the allowed roots before
the file system is touched, and its messages only repeat the caller's own string.
"""
from __future__ import annotations

import os
import time
from fnmatch import fnmatchcase
from pathlib import Path

from tools.contract import InputError, sql_literal

__all__ = [
    "FILE_INPUTS",
    "GLOB_CHARS",
    "LIST_SECONDS",
    "MAX_DATASET_FILES",
    "SOURCE_FILES_TABLE",
    "OutsideInputRoots",
    "confined_inputs",
    "dataset_files",
    "has_glob",
    "is_dataset",
    "matching_files",
    "parquet_relation_sql",
]

FILE_INPUTS = ("metrics", "logs", "events", "service_map")
GLOB_CHARS = "*?["
SOURCE_FILES_TABLE = "source_files"
MAX_DATASET_FILES = 10_000
LIST_SECONDS = 10.0


def has_glob(text: str | Path) -> bool:
    return any(c in str(text) for c in GLOB_CHARS)


def is_dataset(text: str | Path) -> bool:
    """A directory or a glob pattern (rather than one file: an existing file whose name has
    a glob character such as '[' is a file)."""
    path = Path(text).expanduser()
    return path.is_dir() or has_glob(text) and not path.exists()


def split_pattern(text: str | Path) -> tuple[Path, list[str]]:
    """(fixed prefix, the rest as path components): 'logs/day=*/*.parquet' -> ('logs', ['day=*', '*.parquet']).
    A directory is the pattern '<dir>/**/*.parquet'."""
    path = Path(text).expanduser()
    if not has_glob(path):
        return path, ["**", "*.parquet"]
    parts = path.parts
    first = next(i for i, part in enumerate(parts) if has_glob(part))
    return Path(*parts[:first]) if first else Path("."), list(parts[first:])


def dataset_files(label: str, text: str | Path, *, max_files: int = MAX_DATASET_FILES,
                  seconds: float = LIST_SECONDS) -> list[Path]:
    """The Parquet files of a directory (searched recursively) or a glob (``**`` allowed),
    sorted, as absolute paths. InputError when there is none, too many, or listing is too slow."""
    matched = matching_files(label, text, max_files=max_files, seconds=seconds)
    # Named as matched, not resolved: a symlink's target may lie outside the data directory.
    not_parquet = [name for real, name in matched if real.suffix.lower() != ".parquet"]
    if not_parquet:
        raise InputError(label, f"a dataset must hold only .parquet files; found "
                         f"{not_parquet[0]} ({len(not_parquet)} such file(s)): narrow the glob")
    return [real for real, _ in matched]


def matching_files(label: str, text: str | Path, *, max_files: int = MAX_DATASET_FILES,
                   seconds: float = LIST_SECONDS) -> list[tuple[Path, str]]:
    """(resolved path, path as matched) of every file of a directory or glob, sorted."""
    prefix, pattern = split_pattern(text)
    found = _walk(label, prefix, pattern, max_files, time.monotonic() + seconds)
    if not found:
        what = "the pattern" if has_glob(text) else "the directory (searched recursively for *.parquet)"
        raise InputError(label, f"no files match {what}")
    return sorted((Path(name).resolve(), name) for name in found)


def _walk(label: str, top: Path, pattern: list[str], max_files: int, deadline: float) -> list[str]:
    """Files under `top` whose relative path matches `pattern`, glob's rules: `*`, `?` and `[..]`
    within one name, `**` any number of folders, names starting with '.' only when the pattern's
    part does. Symlinked folders are not entered; symlinked files are listed (and confined later)."""
    found: list[str] = []
    pending = [(str(top), _with_empty_globstars(pattern, {0}))]
    while pending:
        folder, alive = pending.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if time.monotonic() > deadline:
                        raise InputError(label, "listing the pattern took too long: narrow it (fewer folders under its fixed part)")
                    step = _step(pattern, alive, entry.name)
                    if step and entry.is_dir(follow_symlinks=False):
                        pending.append((entry.path, step))
                    elif len(pattern) in step and entry.is_file():
                        found.append(entry.path)
                        if len(found) > max_files:
                            raise InputError(label, f"the pattern matches more than {max_files} files: narrow it")
        except OSError:  # an unreadable or vanished folder matches nothing, as with glob
            continue
    return found


def _with_empty_globstars(pattern: list[str], alive: set[int]) -> frozenset[int]:
    """Positions reachable without consuming a name: a `**` may match no folder at all."""
    reached = set(alive)
    for i in sorted(alive):
        while i < len(pattern) and pattern[i] == "**":
            i += 1
            reached.add(i)
    return frozenset(reached)


def _step(pattern: list[str], alive: frozenset[int], name: str) -> frozenset[int]:
    """The pattern positions alive after matching one more path component `name`."""
    hidden = name.startswith(".")
    nxt = set()
    for i in alive:
        if i == len(pattern):
            continue
        part = pattern[i]
        if part == "**":
            if not hidden:
                nxt.add(i)
        elif fnmatchcase(name, part) and (not hidden or part.startswith(".")):
            nxt.add(i + 1)
    return _with_empty_globstars(pattern, nxt)


class OutsideInputRoots(InputError):
    """An input path that lies outside every directory inputs may come from."""


def confined_inputs(roots: list[Path], files: dict) -> dict:
    """The file inputs of `files` as paths under one of `roots`; relative paths resolve against
    the first root. A path outside every root (through '..', an absolute path or a symlink) is
    refused with OutsideInputRoots: '..' and absolute paths on the path as written, before the
    file system is touched, and then symlinks, with the same message whether or not the target
    exists. Messages name only the caller's own string, never a resolved path."""
    written_roots = [Path(os.path.abspath(root)) for root in roots]
    real_roots = [root.resolve() for root in roots]
    confined = dict(files)
    for key in FILE_INPUTS:
        if files.get(key):
            confined[key] = str(_confined_path(str(files[key]), written_roots, real_roots))
    return confined


def _confined_path(given: str, written_roots: list[Path], real_roots: list[Path]) -> Path:
    if "\0" in given:
        raise InputError(given.replace("\0", "\\0"), "a path cannot contain a NUL byte")
    outside = OutsideInputRoots(given, "outside the data directory; only files under it can be investigated")
    # normpath folds '..' without reading the disk; an absolute `given` replaces the root.
    written = Path(os.path.normpath(real_roots[0] / given))
    prefix = split_pattern(written)[0] if has_glob(written) else written
    if not _inside(prefix, written_roots + real_roots):
        raise outside
    if not is_dataset(written):
        real = written.resolve()
        if not _inside(real, real_roots):
            raise outside
        return real
    if not _inside(prefix.resolve(), real_roots):
        raise outside
    if not all(_inside(real, real_roots) for real, _ in matching_files(given, written)):
        raise OutsideInputRoots(given, "matches a file outside the data directory (through a symlink); "
                                "only files under it can be investigated")
    return written


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path.is_relative_to(root) for root in roots)


def parquet_relation_sql(files: list[Path], file_column: str | None = None) -> str:
    """``read_parquet`` over exactly these files; ``key=value`` folders become columns and
    files whose columns differ are aligned by name. With `file_column`, each row also carries
    the path of its file in that column."""
    listed = ", ".join(sql_literal(str(f)) for f in files)
    named = f", filename={sql_literal(file_column)}" if file_column else ""
    return f"read_parquet([{listed}], hive_partitioning=true, union_by_name=true{named})"
