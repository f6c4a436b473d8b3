from django.apps import AppConfig


class RunsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "runs"
    verbose_name = "Runs"

    def ready(self):
        from runs import cache_tables, signals  # noqa: F401 - connects the receivers
        from runs.services.runtime import leadership  # noqa: F401 - bounds the leader's sessions
