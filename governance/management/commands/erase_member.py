"""Right to be forgotten from the command line: the same service as the admin page and the API."""

from django.core.management.base import BaseCommand, CommandError

from governance.privacy import ErasureError, member_erase, member_find


class Command(BaseCommand):
    help = "Erase a member's personal data and events (by external member id or pseudo id); audited."

    def add_arguments(self, parser) -> None:
        parser.add_argument("member", help="external member id (as imported) or pseudo id")

    def handle(self, *args, **options) -> None:
        try:
            member = member_find(reference=options["member"])
        except ErasureError as exc:
            raise CommandError(str(exc)) from exc
        result = member_erase(member_pk=member.pk, actor=None)
        if result.already_erased:
            self.stdout.write(f"member {result.member_pseudo_id} was already erased; nothing to do")
            return
        self.stdout.write(
            f"erased member {result.member_pseudo_id}: {result.events_deleted} events deleted, "
            f"{result.recommendations_withdrawn} open recommendations withdrawn, "
            f"{result.import_reports_scrubbed} import reports scrubbed"
        )
