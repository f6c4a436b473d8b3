from django.core.management.base import BaseCommand

from reports.datasources import DEFAULT_SOURCE, is_demo_source
from reports.services.demo import ensure_demo_admin, seed_demo_data, seed_demo_reports


class Command(BaseCommand):
    help = "Create demo data, demo reports and an admin login (each only if missing)."

    def add_arguments(self, parser):
        parser.add_argument("--no-admin", action="store_true", help="do not create an admin user")

    def handle(self, *args, **options):
        if not is_demo_source(DEFAULT_SOURCE):
            self.stdout.write(
                "Demo data: skipped, REPORTING_DATABASE_URL names the default data source "
                "(demo data goes only into the built-in demo source)."
            )
        elif seed_demo_data():
            self.stdout.write("Demo data: created demo_customers and demo_orders.")
        else:
            self.stdout.write("Demo data: already present, unchanged.")
        if is_demo_source(DEFAULT_SOURCE):
            created = seed_demo_reports()
            self.stdout.write(
                f"Demo reports: created {', '.join(created)}."
                if created
                else "Demo reports: already present, unchanged."
            )
        if options["no_admin"]:
            return
        password = ensure_demo_admin()
        if password:
            self.stdout.write(
                self.style.SUCCESS(
                    "\nAdmin login (shown only this once): "
                    f"user 'admin', password '{password}'\n"
                    "Open http://127.0.0.1:8000/admin/\n"
                )
            )
        else:
            self.stdout.write(
                "Admin login: a superuser exists already "
                "(reset a password with: python manage.py changepassword admin)."
            )
