"""Upload endpoint, offer catalog API and the admin offer page, through real HTTP clients."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from rest_framework.test import APIClient

from governance.models import AuditEvent
from loyalty.models import Event, ImportBatch, Member, Offer
from tests.loyalty.csvfiles import EVENT, MEMBER, csv_text

pytestmark = pytest.mark.django_db

MEMBER_COLUMNS = list(MEMBER)
EVENT_COLUMNS = list(EVENT)


def api_as(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


def upload(client: APIClient, kind: str, text: str | bytes, **extra: str):
    data = text.encode() if isinstance(text, str) else text
    return client.post(
        f"/api/imports/{kind}/", {"file": SimpleUploadedFile("upload.csv", data, "text/csv"), **extra},
        format="multipart",
    )


def members_text(*rows: dict[str, str]) -> str:
    return csv_text(MEMBER_COLUMNS, [dict(MEMBER, **row) for row in rows])


def test_admin_uploads_members_and_gets_the_result(role_users) -> None:
    response = upload(api_as(role_users["admin"]), "members", members_text({"member_id": "A"}, {"member_id": "B"}))
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["status"], body["rows_read"], body["rows_written"], body["created"]) == ("succeeded", 2, 2, 2)
    assert set(Member.objects.values_list("member_id", flat=True)) == {"A", "B"}
    batch = ImportBatch.objects.get(pk=body["batch_id"])
    assert batch.created_by == role_users["admin"] and batch.filename == "upload.csv"
    assert AuditEvent.objects.get(action="import.members").actor == role_users["admin"]


def test_bad_upload_is_400_with_row_and_column_errors_and_writes_nothing(role_users) -> None:
    admin = api_as(role_users["admin"])
    upload(admin, "members", members_text({"member_id": "M1"}))
    text = csv_text(EVENT_COLUMNS, [EVENT, dict(EVENT, kind="refund"), dict(EVENT, member_id="GHOST")])
    response = upload(admin, "events", text)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "import_failed" and body["status"] == "failed"
    assert "2 error(s) in 2 rows; nothing was written" in body["error"]
    assert [(e["row"], e["column"]) for e in body["errors"]] == [(2, "kind"), (3, "member_id")]
    assert body["errors"][1]["text"] == "row 3, column member_id: unknown member (got 'GHOST')"
    assert Event.objects.count() == 0


def test_skip_invalid_upload_writes_good_rows(role_users, settings, tmp_path: Path) -> None:
    settings.DATA_DIR = tmp_path
    admin = api_as(role_users["admin"])
    upload(admin, "members", members_text({"member_id": "M1"}))
    text = csv_text(EVENT_COLUMNS, [EVENT, dict(EVENT, score="9")])
    response = upload(admin, "events", text, skip_invalid="true")
    assert response.status_code == 201
    body = response.json()
    assert (body["rows_written"], body["rows_rejected"]) == (1, 1)
    assert Path(body["rejects_path"]).parent == tmp_path / "rejects"
    assert "score outside 1-5" in Path(body["rejects_path"]).read_text()
    assert Event.objects.count() == 1


def test_file_level_errors_are_400_with_a_clear_message(role_users) -> None:
    admin = api_as(role_users["admin"])
    response = upload(admin, "offers", "code,cost\nX,1\n")
    assert response.status_code == 400
    assert response.json()["error"] == "missing required columns: name, kind (found: code, cost)"
    latin = upload(admin, "offers", "code,name,kind\nX,Caf\u00e9,discount\n".encode("latin-1"))
    assert latin.status_code == 400 and "not UTF-8 encoded" in latin.json()["error"]
    missing = admin.post("/api/imports/offers/", {}, format="multipart")
    assert missing.status_code == 400 and "file" in missing.json()["fields"]


def test_only_admins_may_upload(role_users) -> None:
    text = members_text({"member_id": "A"})
    for role in ("manager", "senior_manager", "auditor"):
        assert upload(api_as(role_users[role]), "members", text).status_code == 403
    assert upload(api_as(), "members", text).status_code in (401, 403)
    assert Member.objects.count() == 0 and ImportBatch.objects.count() == 0


def test_unknown_import_kind_is_404(role_users) -> None:
    response = upload(api_as(role_users["admin"]), "coupons", "a\n1\n")
    assert response.status_code == 404 and "unknown import kind" in response.json()["error"]


def test_schema_documents_the_multipart_upload(role_users) -> None:
    schema = api_as(role_users["admin"]).get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    operation = schema["paths"]["/api/imports/{kind}/"]["post"]
    assert "multipart/form-data" in operation["requestBody"]["content"]
    assert {"201", "400"} <= set(operation["responses"])
    assert "/api/offers/{code}/" in schema["paths"]


# --------------------------------------------------------------------------- offers API


@pytest.fixture
def offer(db) -> Offer:
    return Offer.objects.create(code="BONUS500", name="500 bonus points", kind="bonus_points", cost=5, value=20)


def test_any_desk_role_lists_offers_but_anonymous_cannot(role_users, offer: Offer) -> None:
    response = api_as(role_users["manager"]).get("/api/offers/")
    assert response.status_code == 200
    assert [o["code"] for o in response.json()["results"]] == ["BONUS500"]
    assert api_as(role_users["auditor"]).get("/api/offers/BONUS500/").json()["cost"] == "5.00"
    assert api_as().get("/api/offers/").status_code in (401, 403)


def test_admin_creates_and_updates_offers_with_audited_old_and_new_values(role_users, offer: Offer) -> None:
    admin = api_as(role_users["admin"])
    created = admin.put("/api/offers/CALL/", {"name": "Retention call", "kind": "retention_call", "cost": "8.00"},
                        format="json")
    assert created.status_code == 201, created.json()
    assert AuditEvent.objects.get(action="offer.create").new["cost"] == "8.00"

    changed = admin.patch("/api/offers/BONUS500/", {"cost": "7.50", "high_stakes": True}, format="json")
    assert changed.status_code == 200
    offer.refresh_from_db()
    assert (offer.cost, offer.high_stakes) == (Decimal("7.50"), True)
    audit = AuditEvent.objects.get(action="offer.update")
    assert (audit.object_type, audit.object_id, audit.actor) == ("offer", "BONUS500", role_users["admin"])
    assert audit.old == {"cost": "5.00", "high_stakes": False}
    assert audit.new == {"cost": "7.50", "high_stakes": True}

    # Saving the same values again changes nothing and audits nothing.
    assert admin.patch("/api/offers/BONUS500/", {"cost": "7.50"}, format="json").status_code == 200
    assert AuditEvent.objects.filter(action="offer.update").count() == 1


def test_offer_changes_are_validated_and_admin_only(role_users, offer: Offer) -> None:
    admin = api_as(role_users["admin"])
    negative = admin.patch("/api/offers/BONUS500/", {"cost": "-1"}, format="json")
    assert negative.status_code == 400 and "cost" in negative.json()["fields"]
    bad_kind = admin.put("/api/offers/NEW/", {"name": "x", "kind": "cashback"}, format="json")
    assert bad_kind.status_code == 400 and "kind" in bad_kind.json()["fields"]
    assert admin.patch("/api/offers/NOPE/", {"cost": "1"}, format="json").status_code == 404
    assert api_as(role_users["manager"]).patch("/api/offers/BONUS500/", {"cost": "1"}, format="json").status_code == 403
    offer.refresh_from_db()
    assert offer.cost == Decimal("5.00") and not AuditEvent.objects.exists()


# --------------------------------------------------------------------------- dashboard page


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_offer_pages_are_admin_only(role_users, offer: Offer) -> None:
    page = logged_in(role_users["admin"]).get("/offers/")
    assert page.status_code == 200 and b"BONUS500" in page.content and b'href="/offers/"' in page.content
    for role in ("manager", "senior_manager", "auditor"):
        client = logged_in(role_users[role])
        assert client.get("/offers/").status_code == 403
        assert client.post("/offers/BONUS500/edit/", {"name": "hijack"}).status_code == 403
        assert b'href="/offers/"' not in client.get("/").content
    assert Client().get("/offers/").status_code == 302  # to the login page


def test_admin_edits_an_offer_through_the_form_and_it_is_audited(role_users, offer: Offer) -> None:
    client = logged_in(role_users["admin"])
    assert b'name="csrfmiddlewaretoken"' in client.get("/offers/BONUS500/edit/").content
    form = {"name": "600 bonus points", "kind": "bonus_points", "cost": "6.00", "value": "20.00", "active": "on"}
    response = client.post("/offers/BONUS500/edit/", form)
    assert response.status_code == 302 and response.url == "/offers/"
    offer.refresh_from_db()
    assert (offer.name, offer.cost) == ("600 bonus points", Decimal("6.00"))
    audit = AuditEvent.objects.get(action="offer.update")
    assert audit.old == {"name": "500 bonus points", "cost": "5.00"}

    invalid = client.post("/offers/BONUS500/edit/", dict(form, cost="-2"))
    assert invalid.status_code == 200 and b'class="error"' in invalid.content
    created = client.post("/offers/new/", dict(form, code="NEW1", kind="discount"))
    assert created.status_code == 302 and Offer.objects.get(code="NEW1").kind == "discount"
    duplicate = client.post("/offers/new/", dict(form, code="NEW1"))
    assert duplicate.status_code == 200 and Offer.objects.filter(code="NEW1").count() == 1


def test_offer_form_requires_a_csrf_token(role_users, offer: Offer) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(role_users["admin"])
    response = client.post("/offers/BONUS500/edit/", {"name": "x", "kind": "discount", "cost": "1", "value": "1"})
    assert response.status_code == 403
    offer.refresh_from_db()
    assert offer.name == "500 bonus points"
