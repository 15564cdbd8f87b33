"""Personal data moves to encrypted columns: name, email, birth date and event comments.

The columns become text (a Fernet token does not fit a date or a 200-character name), then
existing plaintext rows are encrypted in batches with raw SQL, so this migration does not
depend on the model field's behaviour at any later version. Reversing decrypts first.
"""

from django.db import migrations

import loyalty.pii

BATCH = 5_000
COLUMNS = {"loyalty_member": ("name", "email", "birth_date"), "loyalty_event": ("comment",)}


def _convert(schema_editor, transform) -> None:
    connection = schema_editor.connection
    quote = connection.ops.quote_name
    for table, columns in COLUMNS.items():
        last = 0
        while True:
            with connection.cursor() as cursor:
                cursor.execute(
                    f"SELECT id, {', '.join(quote(c) for c in columns)} FROM {quote(table)} "
                    f"WHERE id > %s ORDER BY id LIMIT {BATCH}",
                    [last],
                )
                rows = cursor.fetchall()
                if not rows:
                    break
                last = rows[-1][0]
                sets = ", ".join(f"{quote(c)} = %s" for c in columns)
                cursor.executemany(
                    f"UPDATE {quote(table)} SET {sets} WHERE id = %s",
                    [[transform(None if v is None else str(v)) for v in row[1:]] + [row[0]] for row in rows],
                )


def encrypt_existing(apps, schema_editor) -> None:
    def transform(value):
        if value and value.startswith(loyalty.pii.TOKEN_PREFIX):
            return value  # already a token (a re-run after a partial failure)
        return loyalty.pii.encrypt(value)

    _convert(schema_editor, transform)


def decrypt_existing(apps, schema_editor) -> None:
    _convert(schema_editor, loyalty.pii.decrypt)


class Migration(migrations.Migration):
    dependencies = [("loyalty", "0002_offer_code_alphabet")]

    operations = [
        migrations.AlterField(
            model_name="member",
            name="birth_date",
            field=loyalty.pii.EncryptedDateField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name="member",
            name="name",
            field=loyalty.pii.EncryptedTextField(blank=True, max_length=200),
        ),
        migrations.AlterField(
            model_name="member",
            name="email",
            field=loyalty.pii.EncryptedTextField(blank=True, max_length=254),
        ),
        migrations.AlterField(
            model_name="event",
            name="comment",
            field=loyalty.pii.EncryptedTextField(blank=True),
        ),
        migrations.RunPython(encrypt_existing, decrypt_existing, elidable=False),
    ]
