"""The queue's offer and model filters at a million rows.

`status IN (open) AND offer_id = X ORDER BY priority` walks rec_open_priority_idx until it
has a page; for an offer with no open items (all escalated, decided, or a new offer) that
was the whole index: 2-20 s at 1M rows. Two changes make it a few milliseconds:

* the single-column foreign-key indexes on offer_id and model_version_id become
  (offer_id, status) and (model_version_id, status): as many indexes to maintain per row as
  before, and the PROTECT checks still find their rows by the leading column;
* on Postgres, multi-column statistics of status with each of them, so the planner knows
  how many OPEN items an offer or a model has (not only how many rows) and picks the small
  index when there are few.

Raw SQL like 0002/0004, kept out of the model state.
"""

from django.db import migrations

TABLE = "recommendations_recommendation"
# new index -> (column, the foreign-key index 0001 created, dropped here)
INDEXES = {
    "rec_offer_status_idx": ("offer_id", "recommendations_recommendation_offer_id_2d7e11ab"),
    "rec_model_status_idx": ("model_version_id", "recommendations_recommendation_model_version_id_e579bfb7"),
}
STATISTICS = {"rec_status_offer_stats": "offer_id", "rec_status_model_stats": "model_version_id"}


def _statistics(apps, schema_editor, *, create: bool) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return  # SQLite has no multi-column statistics; its queues are small
    for name, column in STATISTICS.items():
        schema_editor.execute(
            f"CREATE STATISTICS IF NOT EXISTS {name} (mcv) ON status, {column} FROM {TABLE}" if create
            else f"DROP STATISTICS IF EXISTS {name}"
        )


class Migration(migrations.Migration):
    dependencies = [("recommendations", "0010_merge_20261126_1621")]
    operations = [
        *[
            migrations.RunSQL(
                sql=[f"CREATE INDEX IF NOT EXISTS {name} ON {TABLE} ({column}, status)", f"DROP INDEX IF EXISTS {old}"],
                reverse_sql=[f"CREATE INDEX IF NOT EXISTS {old} ON {TABLE} ({column})", f"DROP INDEX IF EXISTS {name}"],
            )
            for name, (column, old) in INDEXES.items()
        ],
        migrations.RunPython(
            lambda apps, editor: _statistics(apps, editor, create=True),
            lambda apps, editor: _statistics(apps, editor, create=False),
        ),
    ]
