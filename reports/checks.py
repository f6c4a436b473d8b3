"""System checks: every data source is examined when the web, the worker or
``manage.py check`` starts, so an unsafe source is reported before a report runs."""

from django.conf import settings
from django.core.checks import Error, Warning, register
from django.db import DatabaseError, connections

from reports.services.source_safety import assess_source


@register()
def check_data_sources(app_configs, **kwargs):
    messages = []
    for name, alias in sorted(settings.REPORT_DATA_SOURCES.items()):
        connection = connections[alias]
        try:
            assessment = assess_source(connection)
        except DatabaseError as error:
            messages.append(
                Warning(
                    f"Data source '{name}' could not be checked: {str(error).strip()}",
                    hint="Its reports fail until it is reachable. The built-in demo source "
                    "is created by `manage.py migrate`.",
                    id="reports.W001",
                )
            )
            continue
        finally:
            connection.close()
        messages += [Error(text, id="reports.E001") for text in assessment.refusals]
        messages += [Warning(text, id="reports.W002") for text in assessment.warnings]
    return messages
