from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import connection

from datasources.registry import DEFAULT_SOURCE, is_demo_source
from reports.history import recorded
from reports.services.demo import ensure_demo_admin, seed_demo_data, seed_demo_reports
from reportsvc.localrun import (
    admin_password_file,
    display_path,
    manage_command,
    write_admin_password,
)


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
            with recorded(via="manage.py seed_demo"):
                created = seed_demo_reports()
            self.stdout.write(
                f"Demo reports: created {', '.join(created)}."
                if created
                else "Demo reports: already present, unchanged."
            )
        if options["no_admin"]:
            return
        password = ensure_demo_admin()
        var_dir = settings.VAR_DIR
        if password:
            saved = write_admin_password(password, var_dir, connection.settings_dict)
            self.stdout.write(
                self.style.SUCCESS(
                    f"\nAdmin login (shown only this once): user 'admin', password '{password}'"
                )
            )
            self.stdout.write(
                f"  The password is also in {display_path(saved)} (only you can read it).\n"
                f"  Change it: {manage_command('changepassword', 'admin')}"
            )
        else:
            username = (
                get_user_model()
                .objects.filter(is_superuser=True)
                .order_by("pk")
                .values_list("username", flat=True)
                .first()
            )
            admin = get_user_model().objects.filter(username="admin").first()
            saved = admin and admin_password_file(
                var_dir, connection.settings_dict, opens=admin.check_password
            )
            where = f"; the password of 'admin' is in {display_path(saved)}" if saved else ""
            self.stdout.write(
                f"Admin login: the superuser '{username}' exists already{where}.\n"
                f"  Reset a password: {manage_command('changepassword', username)}"
            )
        self.stdout.write(self.style.SUCCESS(f"Open {settings.PUBLIC_BASE_URL}/admin/\n"))
