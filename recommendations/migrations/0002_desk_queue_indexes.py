"""Partial indexes over the open statuses, one per queue sort, each ending in id for keyset paging.

Raw SQL (valid on Postgres and SQLite) rather than Meta.indexes: an expression index on the
interval width plus partial conditions, kept out of the model state so the shared models.py
stays as it is. The queue filters `status IN (...)` on open statuses, which implies the
partial condition, so the planner walks an index in sort order and stops after one page.
"""

from django.db import migrations

OPEN = "status IN ('pending', 'escalated')"
TABLE = "recommendations_recommendation"
INDEXES = {
    "rec_open_priority_idx": "priority DESC, id",
    "rec_open_ev_idx": "expected_value DESC, id",
    "rec_open_prob_idx": "probability, id",
    "rec_open_width_idx": "(p_high - p_low) DESC, id",
    "rec_open_age_idx": "created_at, id",
}


class Migration(migrations.Migration):
    dependencies = [("recommendations", "0001_initial")]
    operations = [
        migrations.RunSQL(
            sql=f"CREATE INDEX IF NOT EXISTS {name} ON {TABLE} ({columns}) WHERE {OPEN}",
            reverse_sql=f"DROP INDEX IF EXISTS {name}",
        )
        for name, columns in INDEXES.items()
    ]
