"""Where an export command writes: --out FILE (csv as text, parquet as bytes) or stdout (csv)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import IO

from django.core.management.base import BaseCommand, CommandError


def export_to(command: BaseCommand, *, fmt: str, path: str | None, write: Callable[[IO], int]) -> None:
    if fmt == "parquet" and not path:
        raise CommandError("--format parquet needs --out FILE")
    if path:
        mode = {"csv": {"mode": "w", "newline": "", "encoding": "utf-8"}, "parquet": {"mode": "wb"}}[fmt]
        with open(path, **mode) as out:
            count = write(out)
        command.stderr.write(f"wrote {count} rows to {path}")
    else:
        # The underlying stream: the command's OutputWrapper would style and re-end lines.
        write(getattr(command.stdout, "_out", sys.stdout))
