"""Read-side queries about runs, shared by the API, the admin and health checks."""

from datetime import timedelta

from django.conf import settings
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from runs.models import Run, RunStatus, WorkerHeartbeat


def runs_with_report():
    return Run.objects.select_related("report", "requested_by")


def latest_successful_run(report):
    """The newest succeeded run of ``report`` that still has its output file record."""
    return (
        Run.objects.select_related("report")
        .filter(report=report, status=RunStatus.SUCCEEDED)
        .exclude(output="")
        .order_by("-finished_at", "-id")
        .first()
    )


def with_last_run_id(reports):
    """Annotate reports with ``last_run_id``: their newest run, of any status."""
    newest = Run.objects.filter(report=OuterRef("pk")).order_by("-queued_at", "-id")
    return reports.annotate(last_run_id=Subquery(newest.values("pk")[:1]))


def last_runs_by_id(reports):
    """Run id -> run, for the ``last_run_id`` of already annotated reports (one query)."""
    ids = [report.last_run_id for report in reports if report.last_run_id]
    return Run.objects.in_bulk(ids)


def download_problem(run):
    """Why ``run`` has no output to download, or None if it has one."""
    if run.status in (RunStatus.QUEUED, RunStatus.RUNNING):
        return f"Run {run.pk} is {run.status}; its output is not ready yet."
    if run.status != RunStatus.SUCCEEDED:
        return f"Run {run.pk} {run.status} and has no output."
    if not run.output:
        return f"The output of run {run.pk} was deleted."
    return None


def worker_health(now=None):
    """What /healthz says about workers: count alive and the newest heartbeat's age."""
    now = now or timezone.now()
    max_age = timedelta(seconds=settings.HEALTH_WORKER_MAX_AGE_SECONDS)
    newest = WorkerHeartbeat.objects.order_by("-last_seen_at").first()
    age = (now - newest.last_seen_at).total_seconds() if newest else None
    return {
        "workers_alive": WorkerHeartbeat.objects.filter(last_seen_at__gte=now - max_age).count(),
        "newest_heartbeat_age_seconds": round(age, 1) if age is not None else None,
        "ok": age is not None and age <= max_age.total_seconds(),
    }
