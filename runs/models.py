from django.conf import settings
from django.db import models
from django.utils import timezone

from runs.services.notifications.channels import channel_choices


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"
    # Stopped by a person's or a client's act (never by a shutdown: that run fails).
    CANCELLED = "cancelled", "Cancelled"


class RunTrigger(models.TextChoices):
    SCHEDULE = "schedule", "Schedule"
    MANUAL = "manual", "Manual (admin)"
    API = "api", "API"
    CLI = "cli", "Command line"
    BACKFILL = "backfill", "Backfill"


FINISHED_STATUSES = (
    RunStatus.SUCCEEDED,
    RunStatus.FAILED,
    RunStatus.SKIPPED,
    RunStatus.CANCELLED,
)


def output_upload_path(run, filename):
    """``filename`` in the folder of the run's report (Run.output's upload_to, named
    here by the migrations); runs.naming builds the names on it."""
    return f"{run.report.slug}/{filename}"


class Run(models.Model):
    """One execution of a report: what ran, when, where, and what it produced.

    Only ``runs.services.domain.transitions`` changes ``status``.
    """

    # Foreign keys without their default index: run_report_queued_idx leads with the
    # report, and the partial indexes below skip the runs (most) without a user or a
    # first attempt. Every index is written at each status change.
    report = models.ForeignKey(
        "reports.Report", on_delete=models.CASCADE, related_name="runs", db_index=False
    )
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    trigger = models.CharField(max_length=16, choices=RunTrigger.choices)
    scheduled_for = models.DateTimeField(
        null=True, blank=True, help_text="The fire time, for scheduled runs."
    )
    # The data interval a scheduled run covers: from the previous fire time of its
    # schedule to its own (a retry covers its first attempt's interval).
    interval_start = models.DateTimeField(
        null=True, blank=True, help_text="The schedule's previous fire time: the interval's start."
    )
    interval_end = models.DateTimeField(
        null=True, blank=True, help_text="The fire time this run belongs to: the interval's end."
    )
    parameters = models.JSONField(
        default=dict,
        blank=True,
        help_text="Parameter values: those given while queued; once started, every value "
        "the statement used (the interval's bounds too, when the SQL uses them).",
    )
    rerun_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="reruns",
        db_index=False,
        help_text="The run this one repeats, with the same parameters and interval.",
    )
    backfill_id = models.UUIDField(
        null=True, blank=True, help_text="The backfill request that queued this run."
    )
    report_version = models.ForeignKey(
        "reports.HistoricalReport",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
        help_text="The report's version when the run started (its settings and SQL).",
    )
    queued_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    sql = models.TextField("SQL", blank=True, help_text="The exact statement executed.")
    row_count = models.PositiveBigIntegerField(null=True, blank=True)
    output = models.FileField(upload_to=output_upload_path, max_length=500, blank=True)
    output_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    output_sha256 = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)
    worker = models.CharField(max_length=255, blank=True, help_text="host:pid that ran it.")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        db_index=False,
    )
    attempt = models.PositiveSmallIntegerField(default=1, help_text="1 = first try.")
    retry_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="retries",
        db_index=False,
        help_text="The first run, when this run is a retry of it.",
    )
    not_before = models.DateTimeField(
        null=True, blank=True, help_text="A queued retry waits until this time."
    )
    idempotency_key = models.CharField(
        max_length=255,
        blank=True,
        help_text="The Idempotency-Key of the API request that queued this run.",
    )
    # Set when someone asks to cancel the run. A running run keeps running until its
    # worker has stopped the statement on the server, then ends cancelled.
    cancelled_at = models.DateTimeField(
        null=True, blank=True, help_text="When someone asked to cancel the run."
    )
    cancelled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
        help_text="Who cancelled the run.",
    )

    class Meta:
        ordering = ["-queued_at", "-id"]
        indexes = [
            models.Index(fields=["report", "-queued_at"], name="run_report_queued_idx"),
            models.Index(fields=["status", "queued_at"], name="run_status_queued_idx"),
            models.Index(fields=["-queued_at", "-id"], name="run_queued_idx"),
            # The worker's hot queries: next queued runs in order, and running runs
            # (per report, and by heartbeat age) - small partial indexes for both.
            models.Index(
                fields=["queued_at", "id"],
                condition=models.Q(status="queued"),
                name="run_queue_idx",
            ),
            models.Index(
                fields=["report", "heartbeat_at"],
                condition=models.Q(status="running"),
                name="run_running_idx",
            ),
            # The latest successful run of each report (runs.selectors): newest finish.
            models.Index(
                fields=["report", "-finished_at", "-id"],
                condition=models.Q(status="succeeded"),
                name="run_report_success_idx",
            ),
            # The admin's "failed in the last 24 hours": only failed runs enter it.
            models.Index(
                fields=["-finished_at"],
                condition=models.Q(status="failed"),
                name="run_failed_finished_idx",
            ),
            models.Index(
                fields=["requested_by"],
                condition=models.Q(requested_by__isnull=False),
                name="run_requested_by_idx",
            ),
            # Deleting a user sets cancelled_by to null: found by index, not a scan.
            models.Index(
                fields=["cancelled_by"],
                condition=models.Q(cancelled_by__isnull=False),
                name="run_cancelled_by_idx",
            ),
            models.Index(
                fields=["retry_of"],
                condition=models.Q(retry_of__isnull=False),
                name="run_retry_of_idx",
            ),
            models.Index(
                fields=["rerun_of"],
                condition=models.Q(rerun_of__isnull=False),
                name="run_rerun_of_idx",
            ),
            models.Index(
                fields=["backfill_id"],
                condition=models.Q(backfill_id__isnull=False),
                name="run_backfill_idx",
            ),
            # Backfills look up the runs of a report by the interval they cover.
            models.Index(
                fields=["report", "interval_end"],
                condition=models.Q(interval_end__isnull=False),
                name="run_report_interval_idx",
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["report", "scheduled_for"],
                condition=models.Q(scheduled_for__isnull=False),
                name="run_unique_report_fire",
            ),
            models.UniqueConstraint(
                fields=["report", "idempotency_key"],
                condition=~models.Q(idempotency_key=""),
                name="run_unique_idempotency_key",
            ),
        ]

    def __str__(self):
        return f"Run {self.pk} of {self.report.name} ({self.status})"

    @property
    def duration_seconds(self):
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class WorkerHeartbeat(models.Model):
    """One row per live worker process, refreshed while it runs."""

    name = models.CharField(max_length=255, unique=True, help_text="host:pid")
    host = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    version = models.CharField(max_length=50)
    started_at = models.DateTimeField()
    last_seen_at = models.DateTimeField(db_index=True)
    running_runs = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-last_seen_at"]

    def __str__(self):
        return self.name


class SchedulerLease(models.Model):
    """Who schedules: one row (runs.services.runtime.leadership). A worker holds it until
    ``expires_at``, renewing it while it leads; once it has expired, another takes it
    and ``epoch`` goes up. Times are the database's clock, never a worker's."""

    holder = models.CharField(max_length=255, blank=True, help_text="host:pid")
    epoch = models.PositiveBigIntegerField(
        default=0, help_text="Counts the holders: a former holder's epoch is refused."
    )
    acquired_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    fire_pass_at = models.DateTimeField(
        null=True, blank=True, help_text="The holder's last fire pass."
    )

    def __str__(self):
        return f"{self.holder or 'nobody'} (epoch {self.epoch})"


class RunTally(models.Model):
    """A report's runs that ended in one final status: how many, ever, and when the
    newest of them that started began and ended.

    Not read from the runs table, so retention, which deletes runs, never lowers a count
    or forgets a last success; and /metrics reads one small row per report and status
    instead of looking through runs. Only ``runs.services.domain.transitions`` writes it, in
    the transaction that records the runs' final status.
    """

    report = models.ForeignKey(
        "reports.Report", on_delete=models.CASCADE, related_name="run_tallies", db_index=False
    )
    status = models.CharField(max_length=16, choices=RunStatus.choices)
    count = models.PositiveBigIntegerField(default=0)
    last_started_at = models.DateTimeField(null=True, blank=True)
    last_finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["report", "status"], name="run_tally_unique"),
        ]

    def __str__(self):
        return f"{self.report_id} {self.status}: {self.count}"


class DeliveryChannel(models.TextChoices):
    """The channels' names as constants; the field's choices follow the registry."""

    EMAIL = "email", "Email"
    WEBHOOK = "webhook", "Webhook"
    SLACK = "slack", "Slack"
    TEAMS = "teams", "Teams"


class DeliveryStatus(models.TextChoices):
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"
    # Not sent on purpose (runs.services.domain.alerting): a repeat failure between reminders.
    SUPPRESSED = "suppressed", "Suppressed"


class Delivery(models.Model):
    """One notification to one target, with how it went: about a run, or about the
    report as a whole (freshness alerts), then without a run."""

    report = models.ForeignKey(
        "reports.Report", on_delete=models.CASCADE, related_name="deliveries"
    )
    run = models.ForeignKey(
        Run, null=True, blank=True, on_delete=models.CASCADE, related_name="deliveries"
    )
    channel = models.CharField(max_length=16, choices=channel_choices)
    target = models.CharField(
        max_length=500,
        help_text="Email address, URL (scheme and host only) or Slack channel id.",
    )
    reason = models.CharField(
        max_length=32,
        help_text="failed, reminder, recovered, finished, alert, cancelled (about a run); "
        "stale, fresh (about the report).",
    )
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True)
    note = models.CharField(
        max_length=500, blank=True, help_text="Why it was suppressed, or what it said."
    )
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name_plural = "deliveries"

    def __str__(self):
        return f"{self.channel} to {self.target}: {self.status}"

    def save(self, *args, **kwargs):
        # A delivery about a run belongs to the run's report: callers give the run only.
        if self.report_id is None and self.run is not None:
            self.report_id = self.run.report_id
        super().save(*args, **kwargs)


class AlertState(models.Model):
    """What a report's notifications last said, so that they speak on changes only
    (runs.services.domain.alerting owns it).

    A failing streak: since when, how many failures, when the last failure notice or
    reminder went out. Freshness: when the stale alert went out (None: fresh). Written
    with conditional updates (``version``), so two processes deciding at once send one
    notice between them.
    """

    report = models.OneToOneField(
        "reports.Report", on_delete=models.CASCADE, primary_key=True, related_name="alert_state"
    )
    version = models.PositiveBigIntegerField(default=0)
    failing_since = models.DateTimeField(
        null=True, blank=True, help_text="When the first failure of the streak finished."
    )
    failures = models.PositiveIntegerField(default=0, help_text="Failed runs in the streak.")
    notified_at = models.DateTimeField(
        null=True, blank=True, help_text="When the streak's last failure notice or reminder went."
    )
    stale_since = models.DateTimeField(
        null=True, blank=True, help_text="When the stale alert went; None while fresh."
    )

    def __str__(self):
        return f"alert state of report {self.report_id}"
