"""The database, not the application, guarantees that audit rows are never changed.

Row triggers refuse UPDATE and DELETE from any client. TRUNCATE stays a table-owner
operation (Django's test flush uses it); production grants the app role no TRUNCATE.
"""

from django.db import migrations

POSTGRES_UP = """
CREATE OR REPLACE FUNCTION governance_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only (%% refused)', TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER governance_auditevent_append_only
    BEFORE UPDATE OR DELETE ON governance_auditevent
    FOR EACH ROW EXECUTE FUNCTION governance_audit_append_only();
"""
POSTGRES_DOWN = """
DROP TRIGGER IF EXISTS governance_auditevent_append_only ON governance_auditevent;
DROP FUNCTION IF EXISTS governance_audit_append_only();
"""
SQLITE_UP = [
    "CREATE TRIGGER governance_auditevent_no_update BEFORE UPDATE ON governance_auditevent "
    "BEGIN SELECT RAISE(ABORT, 'audit events are append-only (UPDATE refused)'); END;",
    "CREATE TRIGGER governance_auditevent_no_delete BEFORE DELETE ON governance_auditevent "
    "BEGIN SELECT RAISE(ABORT, 'audit events are append-only (DELETE refused)'); END;",
]
SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS governance_auditevent_no_update;",
    "DROP TRIGGER IF EXISTS governance_auditevent_no_delete;",
]


def install(apps, schema_editor) -> None:
    vendor = schema_editor.connection.vendor
    statements = [POSTGRES_UP] if vendor == "postgresql" else SQLITE_UP if vendor == "sqlite" else []
    for sql in statements:
        schema_editor.execute(sql)


def remove(apps, schema_editor) -> None:
    vendor = schema_editor.connection.vendor
    statements = [POSTGRES_DOWN] if vendor == "postgresql" else SQLITE_DOWN if vendor == "sqlite" else []
    for sql in statements:
        schema_editor.execute(sql)


class Migration(migrations.Migration):
    dependencies = [("governance", "0001_initial")]
    operations = [migrations.RunPython(install, remove)]
