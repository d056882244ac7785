"""Plain-words diagnoses for input files DuckDB cannot read: wrong compression, wrong text
encoding, a truncated last line.

DuckDB's own messages for these are a CSV sniffer dump ("It was not possible to automatically
detect the CSV parsing dialect ... Possible fixes: ...") that names neither the cause nor the
fix. The leading bytes are checked before anything is read (four bytes, free); the rest runs
only after DuckDB has failed, so a good file - however large - pays nothing for it.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

GZIP_MAGIC = b"\x1f\x8b"
# Longest first: the UTF-32 LE mark starts with the UTF-16 LE one.
BYTE_ORDER_MARKS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)
TEXT_FORMATS = ("csv", "tsv", "json")
PARQUET_MAGIC = b"PAR1"
NUL = b"\x00"
_HEAD_BYTES = 4096  # read before every load: cheap, and enough to tell text from binary
_TAIL_BYTES = 1 << 16  # enough for any sane last line; the file is never read whole


def leading_bytes_problem(path: Path, fmt: str, compression: str) -> str | None:
    """What is wrong with the file judging by its first bytes (compression, encoding, binary
    content, Parquet magic), or None."""
    with open(path, "rb") as f:
        head = f.read(_HEAD_BYTES)
    if compression == "none" and head.startswith(GZIP_MAGIC):
        return (f"the file is gzip-compressed but its name does not end in .gz: rename it to "
                f"'{path.name}.gz' (or gunzip it)")
    if compression == "gzip" and head and not head.startswith(GZIP_MAGIC):
        return "the name ends in .gz but the file is not gzip-compressed: remove the .gz suffix"
    if fmt in TEXT_FORMATS and compression == "none":
        for mark, encoding in BYTE_ORDER_MARKS:
            if head.startswith(mark):
                return (f"the file is {encoding}-encoded; expected UTF-8 (convert it, e.g. "
                        f"`iconv -f {encoding} -t UTF-8 {path.name} > utf8-{path.name}`)")
        if NUL in head:
            return (f"the file is not text: it has a NUL byte at offset {head.index(NUL)} "
                    f"(a binary file, or UTF-16 without a byte-order mark); expected UTF-8 {fmt.upper()}")
    if fmt == "parquet" and not head.startswith(PARQUET_MAGIC):
        return "not a Parquet file (it does not start with the PAR1 magic bytes)"
    return None


def read_error_explanation(path: Path, fmt: str, compression: str, duck_message: str) -> str | None:
    """A clear cause and fix for a DuckDB read error on `path`, or None when there is none to add."""
    line = re.search(r"\bLine: (\d+)", duck_message)
    where = f" (line {line.group(1)} of the file)" if line else ""
    if "Invalid unicode" in duck_message or "not utf-8 encoded" in duck_message:
        return (f"not valid UTF-8 text{where}; expected UTF-8: convert the file, e.g. "
                f"`iconv -f LATIN1 -t UTF-8 {path.name} > utf8-{path.name}`")
    if fmt in ("csv", "tsv") and compression == "none":
        truncated = truncated_last_line(path, "," if fmt == "csv" else "\t")
        if truncated:
            return truncated
    columns = re.search(r"Expected Number of Columns: (\d+) Found: (\d+)", duck_message)
    if columns:
        return (f"a line has {columns.group(2)} fields where the header has {columns.group(1)}"
                f"{where}; every line needs one value per header column")
    if "GZIP" in duck_message.upper() and compression == "gzip":
        return f"the gzip data is damaged or cut short ({duck_message.splitlines()[0]})"
    return None


def truncated_last_line(path: Path, delimiter: str) -> str | None:
    """'the last line is truncated ...' when the file's last line has fewer fields than its
    header or ends inside a quoted value (a file still being written), else None."""
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        header = f.readline()
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - _TAIL_BYTES))
        tail = f.read().decode("utf-8", errors="replace")
    last = tail.rstrip("\r\n").rsplit("\n", 1)[-1]
    if not header.strip() or not last.strip() or last == header.rstrip("\r\n"):
        return None
    expected = len(next(csv.reader([header.rstrip("\r\n")], delimiter=delimiter)))
    unterminated = last.count('"') % 2 == 1
    found = len(next(csv.reader([last], delimiter=delimiter)))
    if not unterminated and found >= expected:
        return None
    ending = "ends inside a quoted value" if unterminated else f"has {found} of {expected} fields"
    return (f"the last line is truncated (it {ending}): the file may still be being written; "
            f"remove the last line (e.g. `sed -i '$d' {path.name}`) or copy the file when the "
            f"writer is done")
