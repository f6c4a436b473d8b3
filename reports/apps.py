from django.apps import AppConfig
from django.db.backends.signals import connection_created
from django.db.models.signals import post_migrate


def _provision_demo_source(sender, using, **kwargs):
    import sys

    from datasources.backends.base import DemoSourceUnavailable
    from reports.services.demo_source import provision_demo_source

    if using != "default":
        return
    try:
        provision_demo_source(using)
    except DemoSourceUnavailable as error:  # migrating must not fail for the demo
        sys.stderr.write(f"Warning: {error}\n")


class ReportsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "reports"
    verbose_name = "Reports"

    def ready(self):
        from reports import checks  # noqa: F401  (registers the data-source checks)
        from reportsvc.text import read_sqlite_text_leniently

        post_migrate.connect(_provision_demo_source, sender=self)
        connection_created.connect(read_sqlite_text_leniently)
