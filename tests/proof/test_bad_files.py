"""A 100 MB CSV file: refused through the web upload before a row is read, and on the
command line a malformed one fails fast with a clear error; either way nothing is written.

The other malformed files (wrong encoding, missing columns, bad dates, negative amounts, bad
numbers, too many fields, duplicate ids) are covered row by row in
tests/loyalty/test_importers.py and tests/loyalty/test_import_api.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from loyalty.importers import import_csv
from loyalty.models import Event, ImportBatch, Member
from tests.loyalty.csvfiles import EVENT, MEMBER, csv_text

pytestmark = pytest.mark.django_db

MB = 2**20


def _hundred_mb_of_events(path: Path, *, first_row: bytes = b"") -> Path:
    row = csv_text(list(EVENT), [EVENT]).split("\n", 1)[1].encode()
    header = (",".join(EVENT) + "\n").encode()
    with open(path, "wb") as out:
        out.write(header + first_row)
        block = row * (MB // len(row))
        while out.tell() < 100 * MB:
            out.write(block)
    return path


def test_a_100_mb_upload_is_refused_with_the_limit_and_the_command_to_use(tmp_path: Path, role_users) -> None:
    members = csv_text(list(MEMBER), [MEMBER])
    import_csv(kind="members", source=_write(tmp_path / "m.csv", members))
    big = _hundred_mb_of_events(tmp_path / "big.csv")
    client = APIClient()
    client.force_authenticate(role_users["admin"])
    response = client.post("/api/imports/events/", {"file": SimpleUploadedFile("big.csv", big.read_bytes())},
                           format="multipart")
    assert response.status_code == 413
    body = response.json()
    assert body["code"] == "file_too_large"
    assert "big.csv is 10" in body["error"] and "50 MB" in body["error"] and "manage.py import_events" in body["error"]
    assert Event.objects.count() == 0
    assert not ImportBatch.objects.filter(kind="events").exists()


def test_a_100_mb_file_that_is_not_utf8_fails_fast_on_the_command_line(tmp_path: Path) -> None:
    import_csv(kind="members", source=_write(tmp_path / "m.csv", csv_text(list(MEMBER), [MEMBER])))
    latin1 = "M1,2024-03-01T10:00:00,feedback,0,0,0,0,4,,Tr\u00e8s bien\n".encode("latin-1")
    big = _hundred_mb_of_events(tmp_path / "big.csv", first_row=latin1)
    start = time.perf_counter()
    result = import_csv(kind="events", source=big)
    elapsed = time.perf_counter() - start
    assert not result.succeeded
    assert any("not UTF-8 encoded" in str(error) for error in result.errors)
    assert Event.objects.count() == 0 and Member.objects.count() == 1
    # Refused at the first chunk, not after reading 100 MB.
    assert elapsed < 20, elapsed


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
