"""Re-encrypt stored personal data under the newest key in LOYALTY_PII_KEYS."""

from django.core.management.base import BaseCommand, CommandError

from governance.privacy import pii_rotate_keys


class Command(BaseCommand):
    help = (
        "Re-encrypt member names, emails, birth dates and event comments under the newest key. "
        "Atomic per batch and resumable: run it again after an interruption. Drop an old key "
        "from LOYALTY_PII_KEYS only after a run completes."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--batch-size", type=int, default=1000)

    def handle(self, *args, **options) -> None:
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1")
        verbosity = options["verbosity"]

        def progress(table: str, checked: int, rotated: int) -> None:
            if verbosity > 1:
                self.stdout.write(f"  {table}: {checked} rows checked, {rotated} values re-encrypted")

        result = pii_rotate_keys(batch_size=options["batch_size"], progress=progress)
        for table, checked in result.rows_checked.items():
            self.stdout.write(f"{table}: {checked} rows checked, {result.values_rotated[table]} values re-encrypted")
