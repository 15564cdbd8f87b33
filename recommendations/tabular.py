"""Exports as csv or parquet: the one place that knows the formats and writes them.

rows_write streams (a run or a queue of any size in bounded memory); frame_write writes a
frame already in memory. Both refuse an unknown format before writing anything.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from itertools import islice
from typing import IO

import pandas as pd

EXPORT_FORMATS = ("csv", "parquet")
CONTENT_TYPES = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet"}


def _format_check(fmt: str) -> None:
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}: use csv or parquet")


def frame_write(frame: pd.DataFrame, *, fmt: str, out: IO) -> int:
    """Write ``frame`` as csv to a text stream or parquet to a binary one; returns the rows."""
    _format_check(fmt)
    if fmt == "csv":
        frame.to_csv(out, index=False, lineterminator="\n")
    else:
        frame.to_parquet(out, index=False)
    return len(frame)


def rows_write(rows: Iterable[tuple], *, columns: Sequence[str], fmt: str, out: IO, batch_rows: int = 50_000) -> int:
    """Write ``rows`` (tuples in ``columns`` order) as csv to a text stream or parquet to a
    binary one, ``batch_rows`` at a time (one parquet row group each); returns the count.

    The parquet schema is the first batch's (pandas' inference); later batches are cast to it.
    So a column must not be all None in the first batch (its type would be unknown and a later
    value could not be cast): that is refused, naming the column, before anything is written.
    The callers map a missing value to "" (no offer) and have no other nullable column.
    """
    _format_check(fmt)
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        count = 0
        for row in rows:
            writer.writerow(row)
            count += 1
        return count
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = iter(rows)
    writer, count = None, 0
    try:
        while batch := list(islice(rows, batch_rows)):
            table = pa.Table.from_pandas(pd.DataFrame.from_records(batch, columns=list(columns)), preserve_index=False,
                                         schema=writer.schema if writer is not None else None)
            if writer is None:
                untyped = [field.name for field in table.schema if pa.types.is_null(field.type)]
                if untyped:
                    raise ValueError(f"export column(s) {', '.join(untyped)} have no value in the first "
                                     f"{len(batch)} rows: their parquet type is unknown")
                writer = pq.ParquetWriter(out, table.schema)
            writer.write_table(table)
            count += len(batch)
        if writer is None:  # no rows: a file with the columns and no row group
            writer = pq.ParquetWriter(out, pa.schema([(name, pa.string()) for name in columns]))
    finally:
        if writer is not None:
            writer.close()
    return count
