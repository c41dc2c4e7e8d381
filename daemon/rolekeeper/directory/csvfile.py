"""Read CRM/HR CSV exports: UTF-8 with or without BOM, `,` `;` or tab, quoted cells.

Rows come back with the physical line they start on, so an admin can find a bad row in
the editor the export was opened in.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rolekeeper.errors import ImportFileError

_DELIMITERS = (",", ";", "\t")


@dataclass(frozen=True, slots=True)
class Row:
    line: int
    cells: dict[str, str]


def read_rows(
    path: Path, fields: Sequence[str], required: Sequence[str], columns: Mapping[str, str]
) -> Iterator[Row]:
    """Yield rows keyed by canonical field name; `columns` maps field → header in the file."""
    text = _decode(path)
    delimiter = _delimiter(text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise ImportFileError(str(path), ["the file is empty"]) from None
    except csv.Error as exc:
        raise ImportFileError(str(path), [f"line 1: {exc}"]) from None
    index = _header_index(path, header, fields, required, columns)
    previous_end = reader.line_num
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise ImportFileError(str(path), [f"line {previous_end + 1}: {exc}"]) from None
        start = previous_end + 1
        previous_end = reader.line_num
        if not any(cell.strip() for cell in record):
            continue
        if len(record) > len(header):
            extra = record[len(header) :]
            if any(cell.strip() for cell in extra):
                raise ImportFileError(
                    str(path),
                    [f"line {start}: {len(record)} cells but the header has {len(header)}"],
                )
        cells = {
            field: (record[i].strip() if i < len(record) else "") for field, i in index.items()
        }
        yield Row(start, cells)


def _decode(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImportFileError(str(path), [f"cannot be read: {exc.strerror}"]) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ImportFileError(
            str(path),
            [f"line {line}: not UTF-8 text (save the export as 'CSV UTF-8')"],
        ) from None


def _delimiter(text: str) -> str:
    first = text.split("\n", 1)[0]
    outside = _outside_quotes(first)
    return max(_DELIMITERS, key=outside.count)


def _outside_quotes(line: str) -> str:
    kept, quoted = [], False
    for char in line:
        if char == '"':
            quoted = not quoted
        elif not quoted:
            kept.append(char)
    return "".join(kept)


def _header_index(
    path: Path,
    header: Sequence[str],
    fields: Sequence[str],
    required: Sequence[str],
    columns: Mapping[str, str],
) -> dict[str, int]:
    found = {name.strip().casefold(): i for i, name in enumerate(header)}
    index: dict[str, int] = {}
    missing = []
    for field in fields:
        label = columns.get(field, field)
        position = found.get(label.strip().casefold())
        if position is not None:
            index[field] = position
        elif field in required:
            missing.append(label if label == field else f"{label} (field {field})")
    if missing:
        raise ImportFileError(
            str(path),
            [
                f"line 1: missing column(s): {', '.join(missing)}; "
                f"the header has: {', '.join(h.strip() for h in header)}"
            ],
        )
    return index
