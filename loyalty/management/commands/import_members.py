from loyalty.management.commands._csv_import import CsvImportCommand


class Command(CsvImportCommand):
    help = "Import members from a UTF-8 CSV file (all or nothing unless --skip-invalid)."
    kind = "members"
