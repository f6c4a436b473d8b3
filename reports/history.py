"""How report versions are recorded (django-simple-history, with the rules below).

Every save of a report that changes one of its settings writes a version: who made it
(the user given to ``recorded``, else the request's user), when, how (``recorded``'s
``via``: the admin, the API, a command) and which settings changed. Versions are
numbered per report, 1, 2, …, in the transaction of the save itself, so a run claimed
at the same moment sees the report and its version together or neither.

What a version keeps leaves secrets out: the webhook secret is never stored (a rotation
is a version naming the field, without values), webhook URLs are kept as scheme and host
as deliveries keep them (their user, password, path and query are often the secret),
and what the service moves on by itself (``next_run_at``, ``alert_active``) and the
timestamps are not part of a version: saving only those makes none.
"""

import contextlib
import contextvars

from django.db import connections, models, router
from django.db.models import Max
from simple_history.models import HistoricalRecords
from simple_history.signals import pre_create_historical_record

from reports.targets import redacted_targets, redacted_webhooks

# Fields a version does not keep: the secret, bookkeeping, timestamps.
UNVERSIONED_FIELDS = ("webhook_secret", "next_run_at", "alert_active", "created_at", "updated_at")
# Compared on save, but never kept: a change is recorded by name only.
SECRET_FIELDS = ("webhook_secret",)
# Kept redacted, as for people who may not change the report.
REDACTED_FIELDS = {
    "notify_webhooks": redacted_webhooks,
    # Email addresses kept (shown redacted to viewers); URLs as scheme and host.
    "targets": lambda targets: redacted_targets(targets, show_addresses=True),
}

_recorded_as = contextvars.ContextVar("report_history_recorded_as", default=(None, ""))


@contextlib.contextmanager
def recorded(by=None, via=""):
    """Versions written inside this block name ``by`` (a user) and ``via`` (how: "admin",
    "API", "manage.py seed_demo", …)."""
    token = _recorded_as.set((by, via))
    try:
        yield
    finally:
        _recorded_as.reset(token)


class VersionFields(models.Model):
    """What a version adds to the report's own fields."""

    history_version = models.PositiveIntegerField(help_text="The report's versions: 1, 2, …")
    history_changes = models.JSONField(
        default=list,
        blank=True,
        help_text="The settings this version changed (empty for the first one).",
    )

    class Meta:
        abstract = True


class ReportHistory(HistoricalRecords):
    """HistoricalRecords that writes a version only when a compared field changed."""

    def __init__(self, *, compared, **options):
        super().__init__(
            bases=[VersionFields],
            excluded_fields=list(UNVERSIONED_FIELDS),
            no_db_index=["id"],  # the unique (id, history_version) index leads with it
            **options,
        )
        self.compared = tuple(compared)

    def get_meta_options(self, model):
        options = super().get_meta_options(model)
        # Numbers are unique per report; the index finds a report's newest version.
        options["constraints"] = [
            models.UniqueConstraint(
                fields=[model._meta.pk.attname, "history_version"],
                name=f"{model._meta.db_table}_version_unique",
            )
        ]
        return options

    def finalize(self, sender, **kwargs):
        super().finalize(sender, **kwargs)
        if sender is self.cls:
            models.signals.pre_save.connect(self.remember_stored, sender=sender, weak=False)
            history_model = getattr(sender, self.manager_name).model
            pre_create_historical_record.connect(
                self.complete_version, sender=history_model, weak=False
            )

    def _compared_fields(self, update_fields):
        if update_fields is None:
            return self.compared
        return tuple(name for name in self.compared if name in update_fields)

    def remember_stored(self, sender, instance, raw=False, using=None, update_fields=None, **_):
        """Read the stored values before the save, to tell what it changes."""
        instance._history_stored = None
        if raw or instance.pk is None:
            return
        names = self._compared_fields(update_fields)
        if not names:
            return
        using = using or router.db_for_write(sender, instance=instance)
        stored = sender._base_manager.using(using).filter(pk=instance.pk)
        if connections[using].in_atomic_block:  # Report.save opens one: saves take turns
            stored = stored.select_for_update()
        instance._history_stored = stored.values(*names).first()

    def post_save(self, instance, created, using=None, **kwargs):
        stored = instance.__dict__.pop("_history_stored", None)
        if not created:
            names = self._compared_fields(kwargs.get("update_fields"))
            if stored is None:
                changed = list(names)  # the row was not there to read: say all may have
            else:
                changed = [name for name in names if stored[name] != getattr(instance, name)]
            if not changed:
                return  # bookkeeping only: no version
            instance._history_changes = changed
        super().post_save(instance, created, using=using, **kwargs)

    def get_history_user(self, instance):
        by, _ = _recorded_as.get()
        if getattr(by, "pk", None) is not None:
            return by
        return super().get_history_user(instance)

    def get_change_reason_for_object(self, instance, history_type, using):
        _, via = _recorded_as.get()
        return via or super().get_change_reason_for_object(instance, history_type, using)

    def complete_version(self, sender, instance, history_instance, using=None, **_):
        """Number the version, name what changed, and redact what must not be kept."""
        for name, redact in REDACTED_FIELDS.items():
            setattr(history_instance, name, redact(getattr(instance, name)))
        history_instance.history_changes = instance.__dict__.pop("_history_changes", [])
        newest = (
            sender._default_manager.using(using)
            .filter(**{instance._meta.pk.attname: instance.pk})
            .aggregate(newest=Max("history_version"))["newest"]
        )
        history_instance.history_version = (newest or 0) + 1
