"""Event.sentiment: each feedback comment's score, stored once (see loyalty.models.Event).

The backfill decrypts and scores the comments already stored, in batches by id; scoring
reads only this column from now on, so it must be complete before the first run.
"""

from django.db import migrations, models

BATCH = 5_000


def backfill(apps, schema_editor) -> None:
    from recommendations.text import feedback_sentiments

    Event = apps.get_model("loyalty", "Event")
    feedback = Event.objects.filter(kind="feedback").exclude(comment="").order_by("id")
    last = 0
    while True:
        # The historical model's comment field still decrypts on read.
        batch = list(feedback.filter(id__gt=last).only("id", "kind", "comment")[:BATCH])
        if not batch:
            return
        scores = feedback_sentiments([e.kind for e in batch], [e.comment for e in batch])
        for event, score in zip(batch, scores, strict=True):
            event.sentiment = None if score != score else float(score)  # NaN: no text after all
        Event.objects.bulk_update(batch, ["sentiment"], batch_size=BATCH)
        last = batch[-1].id


class Migration(migrations.Migration):
    dependencies = [("loyalty", "0004_event_indexes")]
    operations = [
        migrations.AddField(model_name="event", name="sentiment", field=models.FloatField(blank=True, null=True)),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
