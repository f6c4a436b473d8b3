import copy
import secrets

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models, router, transaction

from datasources.registry import DEFAULT_SOURCE
from reports.history import SECRET_FIELDS, ReportHistory
from reports.targets import legacy_views, targets_from_views, webhook_lines
from reports.validators import (
    MAX_ROWS_LIMIT,
    MAX_TIMEOUT_SECONDS,
    report_sql_problem,
    split_list,
    validate_crontab,
    validate_data_source,
    validate_email_list,
    validate_expect_success_within,
    validate_notify_repeat_after,
    validate_timezone,
    validate_webhook_list,
)
from reports.zones import report_zone
from runs.services.formats import DEFAULT_FORMAT, format_choices, get_format

INLINE_ROWS_MAX = 50
MAX_TARGETS = 50
MAX_ADDRESS_CHARS = 2000
_UNSEEN = object()  # a deferred field, never read: not changed


def cleaned_targets(targets, skipped=()):
    """``targets`` checked by their channels and normalised; ValidationError on
    ``targets`` naming the item and what is wrong with it. Targets of the channels in
    ``skipped`` are kept as they are (checked elsewhere)."""
    from runs.services.notifications.channels import channels, get_channel
    from runs.services.notifications.channels.base import TargetProblem

    if not isinstance(targets, list):
        raise ValidationError({"targets": "A list of {channel, address, options} objects."})
    if len(targets) > MAX_TARGETS:
        raise ValidationError(
            {"targets": f"At most {MAX_TARGETS} targets ({len(targets):,} given)."}
        )
    cleaned = []
    for index, item in enumerate(targets):
        where = f"targets[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("address"), str):
            raise ValidationError({"targets": f"{where}: an object with channel and address."})
        if len(item["address"]) > MAX_ADDRESS_CHARS:
            raise ValidationError(
                {
                    "targets": f"{where}.address: at most {MAX_ADDRESS_CHARS:,} characters "
                    f"({len(item['address']):,} given)."
                }
            )
        unknown = sorted(set(item) - {"channel", "address", "options"})
        if unknown:
            raise ValidationError({"targets": f"{where}.{unknown[0]}: not a target field."})
        channel = get_channel(item.get("channel"))
        if channel is None:
            known = ", ".join(channels())
            raise ValidationError(
                {"targets": f"{where}.channel: {item.get('channel')!r} is not a channel ({known})."}
            )
        if channel.name in skipped:
            cleaned.append({"channel": channel.name, "address": item["address"], "options": {}})
            continue
        try:
            address, options = channel.clean_target(item["address"], item.get("options") or {})
        except TargetProblem as problem:
            raise ValidationError({"targets": f"{where}.address: {problem}"}) from None
        target = {"channel": channel.name, "address": address, "options": options}
        if target not in cleaned:
            cleaned.append(target)
    return cleaned


def default_timezone():
    return settings.TIME_ZONE


def new_webhook_secret():
    return secrets.token_hex(32)


class NotifyWhen(models.TextChoices):
    # State changes: the first failure after a success, reminders while it keeps
    # failing (NOTIFY_REPEAT_AFTER), and "recovered" at the next success.
    FAILURE = "failure", "When it starts failing, and when it recovers"
    EVERY_FAILURE = "every_failure", "After every failed run"
    ALWAYS = "always", "After every run"
    NEVER = "never", "Never"


class AlertCondition(models.TextChoices):
    NONE = "", "No alert condition"
    HAS_ROWS = "has_rows", "The result has rows"
    EMPTY = "empty", "The result is empty"
    ROWS_ABOVE = "rows_above", "Row count above the threshold"
    ROWS_BELOW = "rows_below", "Row count below the threshold"


# What people set on a report: the admin form, the API and report listings share it.
REPORT_SETTINGS_FIELDS = (
    "name",
    "slug",
    "description",
    "sql",
    "parameters",
    "data_source",
    "schedule",
    "timezone",
    "enabled",
    "expect_success_within",
    "timeout_seconds",
    "max_rows",
    "max_retries",
    "retention_days",
    "targets",
    "notify_emails",
    "notify_webhooks",
    "notify_when",
    "notify_repeat_after",
    "inline_rows",
    "alert_condition",
    "alert_threshold",
    "output_format",
    "escape_formulas",
    "csv_bom",
)


class Report(models.Model):
    """A named SQL query, where it runs, and when."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(
        max_length=100, unique=True, help_text="URL key: letters, digits, hyphens, underscores."
    )
    description = models.TextField(blank=True)
    sql = models.TextField(
        "SQL",
        help_text="One read-only statement (SELECT, WITH, VALUES or TABLE). "
        "It runs in a read-only transaction.",
    )
    parameters = models.JSONField(
        default=list,
        blank=True,
        help_text="Declared parameters, used in the SQL as {{ name }}: a list of objects "
        'such as {"name": "region", "type": "choice", "label": "Region", "default": "EU", '
        '"choices": ["EU", "US"]}. Types: date, timestamp, integer, decimal, text, boolean, '
        "choice. A date or timestamp may default to interval_start or interval_end. "
        "interval_start and interval_end are built in: the run's data interval.",
    )
    data_source = models.CharField(
        max_length=63,
        default=DEFAULT_SOURCE,
        validators=[validate_data_source],
        help_text="Name of a configured connection: default, or NAME from a "
        "REPORTING_DATABASE_URL_NAME environment variable.",
    )
    schedule = models.CharField(
        max_length=200,
        blank=True,
        validators=[validate_crontab],
        help_text="5-field crontab, e.g. '0 6 * * mon-fri'. Blank: manual runs only.",
    )
    timezone = models.CharField(
        max_length=64,
        default=default_timezone,
        validators=[validate_timezone],
        help_text="IANA time zone the schedule is read in, e.g. 'Europe/Berlin'.",
    )
    enabled = models.BooleanField(default=True)
    expect_success_within = models.DurationField(
        "expect a success within",
        null=True,
        blank=True,
        validators=[validate_expect_success_within],
        help_text="The report is stale when no run has succeeded for this long (since it "
        "was created, if none ever has), e.g. 1 02:00:00 for a day and two hours, or "
        "ISO 8601 (P1DT2H). At most a year. Blank: no expectation.",
    )
    timeout_seconds = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_TIMEOUT_SECONDS)],
        help_text="Statement timeout, at most a day. "
        "Blank: the service default (REPORT_TIMEOUT_SECONDS).",
    )
    max_rows = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_ROWS_LIMIT)],
        help_text="A run returning more rows fails. Blank: the service default (REPORT_MAX_ROWS).",
    )
    max_retries = models.PositiveSmallIntegerField(
        default=0,
        validators=[MaxValueValidator(10)],
        help_text="Retry a failed scheduled run this many times, waiting longer each time "
        "(RETRY_BACKOFF_SECONDS, doubling).",
    )
    retention_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(36500)],
        help_text="Delete runs and their files after this many days. "
        "Blank: the service default (RUN_RETENTION_DAYS).",
    )
    targets = models.JSONField(
        default=list,
        blank=True,
        help_text='Where notifications go: a list of {"channel": "email" | "webhook" | '
        '"slack" | "teams", "address": …, "options": {}}. Notify emails and notify webhooks '
        "below are views of the email and webhook targets.",
    )
    # Deprecated views of ``targets`` (kept in step on save, see sync_targets).
    notify_emails = models.TextField(
        "notify emails",
        blank=True,
        validators=[validate_email_list],
        help_text="Deprecated (use targets): addresses to email, separated by commas or new lines.",
    )
    notify_webhooks = models.TextField(
        "notify webhooks",
        blank=True,
        validators=[validate_webhook_list],
        help_text="Deprecated (use targets): URLs to POST a JSON payload to, one per line. "
        "Slack and Teams webhook URLs become Slack and Teams targets.",
    )
    notify_when = models.CharField(
        max_length=16,
        choices=NotifyWhen.choices,
        default=NotifyWhen.FAILURE,
        help_text="Which finished runs notify. 'When it starts failing': the first failure "
        "after a success, a reminder while it keeps failing, and 'recovered' at the next "
        "success. The alert condition and the freshness expectation notify on their own.",
    )
    notify_repeat_after = models.DurationField(
        "remind every",
        null=True,
        blank=True,
        validators=[validate_notify_repeat_after],
        help_text="While the report keeps failing, a reminder at most this often, e.g. "
        "01:00:00 for an hour, or ISO 8601 (PT1H). Blank: NOTIFY_REPEAT_AFTER.",
    )
    alert_condition = models.CharField(
        max_length=16,
        choices=AlertCondition.choices,
        blank=True,
        default=AlertCondition.NONE,
        help_text="Notify when a successful run meets this condition - once when it starts "
        "to hold, and again only after a run where it did not hold (no repeat every run).",
    )
    alert_threshold = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        validators=[MaxValueValidator(MAX_ROWS_LIMIT)],
        help_text="N for 'row count above/below N'.",
    )
    inline_rows = models.PositiveSmallIntegerField(
        default=0,
        validators=[MaxValueValidator(INLINE_ROWS_MAX)],
        help_text="Show this many first rows (at most 50, and 20 columns) in the email, Slack "
        "and Teams messages, read from the run's file. 0: none.",
    )
    output_format = models.CharField(
        max_length=16,
        choices=format_choices,
        default=DEFAULT_FORMAT,
        help_text="The kind of file each run writes.",
    )
    escape_formulas = models.BooleanField(
        default=False,
        help_text="CSV only: prefix text values that start with =, +, -, @, a tab or a "
        "carriage return with ' so spreadsheets show them as text, never run them.",
    )
    csv_bom = models.BooleanField(
        "CSV BOM",
        default=False,
        help_text="CSV only: start the file with a UTF-8 byte order mark, so Excel reads "
        "it as UTF-8.",
    )
    alert_active = models.BooleanField(
        default=False,
        editable=False,
        help_text="The condition held at the last successful run (and was notified).",
    )
    webhook_secret = models.CharField(
        max_length=128,
        default=new_webhook_secret,
        help_text="Key of the X-Reportsvc-Signature HMAC-SHA256 header on webhooks.",
    )
    next_run_at = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="When the schedule fires next: set on save, moved on by the worker.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    # Versions: a change to a setting (or a new webhook secret, never kept) writes one.
    history = ReportHistory(compared=(*REPORT_SETTINGS_FIELDS, *SECRET_FIELDS))

    class Meta:
        ordering = ["name"]
        indexes = [
            # The leader looks for due reports every second.
            models.Index(
                fields=["next_run_at"],
                condition=models.Q(next_run_at__isnull=False),
                name="report_next_run_idx",
            ),
            # The reports list's pages: each a range by (name, id), read in that order,
            # so a page looks up the last runs of its own reports only.
            models.Index(fields=["name", "id"], name="report_name_idx"),
        ]
        permissions = [
            ("run_report", "Can run reports on demand"),
            ("view_report_sql", "Can see the SQL of reports and runs"),
        ]

    def __str__(self):
        return self.name

    def save(self, *args, **kwargs):
        update_fields = kwargs.get("update_fields")
        if update_fields is None or {"targets", "notify_emails", "notify_webhooks"} & set(
            update_fields
        ):
            self.sync_targets()
        # The row and its version are written in one transaction (see reports.history).
        using = kwargs.get("using") or router.db_for_write(type(self), instance=self)
        with transaction.atomic(using=using):
            super().save(*args, **kwargs)
        self._remember_targets()

    def clean(self):
        from reports.parameters import ParameterError, declared_parameters, parameters_json

        try:
            declared = declared_parameters(self.parameters, report_zone(self))
        except ParameterError as error:
            raise ValidationError({"parameters": f"{error.field}: {error.message}"}) from None
        self.parameters = parameters_json(declared)
        if self.schedule.strip():
            for index, parameter in enumerate(declared):
                if not parameter.has_default:
                    raise ValidationError(
                        {
                            "parameters": f"parameters[{index}].default: '{parameter.name}' "
                            "needs a default: scheduled runs have no one to ask for a value."
                        }
                    )
        problem = report_sql_problem(self.sql, self.data_source, declared)
        if problem:
            raise ValidationError({"sql": problem})
        needs_threshold = self.alert_condition in (
            AlertCondition.ROWS_ABOVE,
            AlertCondition.ROWS_BELOW,
        )
        if needs_threshold and self.alert_threshold is None:
            raise ValidationError({"alert_threshold": "Set N for this alert condition."})
        self._check_csv_options()
        if self.sync_targets() == "views":
            # The views' own validators checked their addresses; the Slack and Teams
            # URLs they held are checked by their channels, the error on the view.
            try:
                self.targets = cleaned_targets(self.targets, skipped=("email", "webhook"))
            except ValidationError as error:
                raise ValidationError({"notify_webhooks": error.message_dict["targets"]}) from None
        else:
            self.targets = cleaned_targets(self.targets)

    def _check_csv_options(self):
        """The CSV options do nothing for other formats: refuse them rather than ignore."""
        output_format = get_format(self.output_format)
        if output_format is None or output_format.csv_options:
            return  # an unknown format is the field's own error
        errors = {
            name: f"{label} applies to CSV files only; {output_format.label} files "
            "are not affected. Clear it, or choose CSV or CSV.gz."
            for name, label in (("escape_formulas", "Formula escaping"), ("csv_bom", "The BOM"))
            if getattr(self, name)
        }
        if errors:
            raise ValidationError(errors)

    @classmethod
    def from_db(cls, db, field_names, values):
        report = super().from_db(db, field_names, values)
        report._remember_targets()
        return report

    def refresh_from_db(self, *args, **kwargs):
        super().refresh_from_db(*args, **kwargs)
        self._remember_targets()

    def _remember_targets(self):
        stored = self.__dict__
        self._targets_seen = tuple(
            copy.deepcopy(stored.get(name, _UNSEEN))
            for name in ("targets", "notify_emails", "notify_webhooks")
        )

    def sync_targets(self):
        """Keep ``targets`` and its deprecated views in step. What changed since the
        report was read wins: ``targets`` (the views are then derived from it), else the
        views (their email and webhook targets replace those in ``targets``). A new
        report counts every given value as changed, ``targets`` first. Returns which
        side won: "targets", "views" or None."""
        won = None
        if self.targets is None:  # a form's empty field
            self.targets = []
        seen = self.__dict__.get("_targets_seen") or ([], "", "")
        now = (self.targets, self.notify_emails, self.notify_webhooks)
        changed = [
            before is not _UNSEEN and before != after
            for before, after in zip(seen, now, strict=True)
        ]
        if changed[0]:
            won = "targets"
            emails, webhooks = legacy_views(self.targets)
            # The views' own text stays when it lists the same targets.
            if split_list(self.notify_emails) != split_list(emails):
                self.notify_emails = emails
            if webhook_lines(self.notify_webhooks) != webhook_lines(webhooks):
                self.notify_webhooks = webhooks
        elif changed[1] or changed[2]:
            won = "views"
            self.targets = targets_from_views(
                self.targets, self.notify_emails, self.notify_webhooks
            )
            webhooks = legacy_views(self.targets)[1]
            if webhook_lines(self.notify_webhooks) != webhook_lines(webhooks):
                self.notify_webhooks = webhooks  # Slack and Teams URLs moved to targets
        return won

    @property
    def effective_timeout_seconds(self):
        return self.timeout_seconds or settings.REPORT_TIMEOUT_SECONDS

    @property
    def effective_max_rows(self):
        return self.max_rows or settings.REPORT_MAX_ROWS

    @property
    def effective_repeat_after(self):
        return self.notify_repeat_after or settings.NOTIFY_REPEAT_AFTER

    @property
    def effective_retention_days(self):
        return self.retention_days or settings.RUN_RETENTION_DAYS


class LoginLease(models.Model):
    """Who uses a data-source login now (reports.services.logins).

    One row per (source, login). A holder takes a login with one conditional update of a
    row whose lease has run out, renews it while it works (a run's heartbeat) and gives
    it back; a holder that died or froze loses it when ``expires_at`` passes.
    """

    source = models.CharField(max_length=63)
    login = models.CharField(max_length=128)
    holder = models.CharField(
        max_length=100, blank=True, help_text="run:<id>, check:…, examination:…, or busy:…"
    )
    expires_at = models.DateTimeField(help_text="Free from this moment on.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["source", "login"], name="login_lease_unique"),
        ]

    def __str__(self):
        return f"{self.source}/{self.login}: {self.holder or 'free'}"
