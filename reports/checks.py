"""System checks: every login of every data source is examined when the web, the worker
or ``manage.py check`` starts, so an unsafe source is reported before a report runs."""

from django.conf import settings
from django.core.checks import Error, Warning, register
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections

from datasources.backends import backend_for
from datasources.registry import is_demo_source, logins_variable
from datasources.safety import assess_source
from reports.services.logins import examine_logins


def migrations_pending():
    """Whether the service's database lacks migrations (Django says so itself)."""
    from django.db.migrations.executor import MigrationExecutor

    try:
        executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
        return bool(executor.migration_plan(executor.loader.graph.leaf_nodes()))
    except DatabaseError:
        return False


@register()
def check_data_sources(app_configs, **kwargs):
    messages = []
    for name, aliases in sorted(settings.REPORT_DATA_SOURCE_LOGINS.items()):
        for login, outcome in examine_logins(name, assess_source):
            if outcome is None:
                continue  # in use: its holder examined it when it connected
            if not hasattr(outcome, "refusals"):
                if is_demo_source(name) and migrations_pending():
                    # `migrate` sets the built-in demo source up after these checks, and
                    # until then every command is told to migrate: nothing to add.
                    break
                where = f"'{name}'" if len(aliases) == 1 else f"'{name}' (login '{login}')"
                messages.append(
                    Warning(
                        f"Data source {where} could not be checked: {str(outcome).strip()}",
                        hint="Its reports fail until it is reachable. The built-in demo "
                        "source is created by `manage.py migrate`.",
                        id="reports.W001",
                    )
                )
                continue
            messages += [Error(text, id="reports.E001") for text in outcome.refusals]
            messages += [Warning(text, id="reports.W002") for text in outcome.warnings]
        first = connections[aliases[0]]
        if len(aliases) == 1 and backend_for(first).has_server_sessions:
            messages.append(
                Warning(
                    f"Data source '{name}' has a single login "
                    f"('{first.settings_dict['USER']}'): its runs run one at a time, and "
                    "saving a report waits for a running one.",
                    hint=f"Add logins with {logins_variable(name)} (README: Security).",
                    id="reports.W003",
                )
            )
    # Logins of one group role are refused for the same reason: say it once.
    return [message for index, message in enumerate(messages) if message not in messages[:index]]
