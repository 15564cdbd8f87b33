"""Drop the two single-column foreign-key indexes of recommendations_recommendation that
repeat the leading column of a composite index:

* ``run_id``: the unique (run_id, member_id) constraint serves every lookup by run;
* ``member_id``: rec_member_status_idx (member_id, status) serves every lookup by member
  (and the superseding step's member_id IN (...) AND status = 'pending').

Every index is maintained on each inserted row; a scoring run inserts every member. Inserting
a 9,335-row chunk into a 93k-row table took ~410 ms with all 13 indexes and ~170 ms without
any secondary index, so each costs ~20 ms per chunk. The queue's indexes (rec_queue_idx and the
partial rec_open_* indexes of 0002_desk_queue_indexes) and the model_version/offer indexes
(their PROTECT checks) stay. Raw SQL with the names 0001 gave the indexes (the same on
Postgres and SQLite), kept out of the model state so the shared models.py stays as it is.
"""

from django.db import migrations

TABLE = "recommendations_recommendation"
INDEXES = {
    "recommendations_recommendation_run_id_104b07b1": "run_id",
    "recommendations_recommendation_member_id_ead83c2b": "member_id",
}


class Migration(migrations.Migration):
    # After main's 0005_governance_drift (merged in later): one linear history, no merge migration.
    dependencies = [("recommendations", "0005_governance_drift")]
    operations = [
        migrations.RunSQL(
            sql=f"DROP INDEX IF EXISTS {name}",
            reverse_sql=f"CREATE INDEX IF NOT EXISTS {name} ON {TABLE} ({column})",
        )
        for name, column in INDEXES.items()
    ]
