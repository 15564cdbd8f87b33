"""Signals the loyalty domain sends; other apps subscribe without loyalty importing them."""

from django.dispatch import Signal

# Sent after an events import commits, with batch_id and rows_written: later events can
# close the loop on past recommendations (recommendations.outcomes listens).
events_imported = Signal()
