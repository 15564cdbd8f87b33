"""Small CSV builders for the import tests."""

from __future__ import annotations

from pathlib import Path

from loyalty.definitions import EVENT_COLUMNS, MEMBER_COLUMNS, OFFER_COLUMNS

EVENT = {
    "member_id": "M1", "occurred_at": "2024-03-01T10:00:00", "kind": "purchase", "amount": "12.50",
    "points": "12", "quantity": "1", "duration_seconds": "0", "score": "", "offer_code": "", "comment": "",
}
MEMBER = {
    "member_id": "M1", "joined_at": "2020-01-15", "birth_date": "1985-06-30", "gender": "f", "region": "north",
    "tier": "gold", "points_balance": "1200", "consent_profiling": "true", "name": "Ann Example",
    "email": "ann@example.com",
}
OFFER = {
    "code": "BONUS500", "name": "500 bonus points", "kind": "bonus_points", "cost": "5.00", "value": "20.00",
    "high_stakes": "false", "active": "true",
}


def csv_text(columns: list[str], rows: list[dict[str, str]]) -> str:
    def cell(value: str) -> str:
        return f'"{value.replace(chr(34), chr(34) * 2)}"' if any(c in value for c in ',"\n') else value

    lines = [",".join(columns)] + [",".join(cell(row.get(c, "")) for c in columns) for row in rows]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, columns: list[str], rows: list[dict[str, str]]) -> Path:
    path.write_text(csv_text(columns, rows), encoding="utf-8")
    return path


def events_csv(path: Path, *rows: dict[str, str], columns: list[str] = EVENT_COLUMNS) -> Path:
    return write_csv(path, columns, [dict(EVENT, **row) for row in rows])


def members_csv(path: Path, *rows: dict[str, str], columns: list[str] = MEMBER_COLUMNS) -> Path:
    return write_csv(path, columns, [dict(MEMBER, **row) for row in rows])


def offers_csv(path: Path, *rows: dict[str, str], columns: list[str] = OFFER_COLUMNS) -> Path:
    return write_csv(path, columns, [dict(OFFER, **row) for row in rows])
