"""Plain-data summaries of runs for terminals and machines."""

from runs.models import RunStatus
from runs.services.infrastructure.output_storage import output_location


def run_summary(run):
    duration = run.duration_seconds
    location = output_location(run.output.name if run.output else "")
    return {
        "run_id": run.pk,
        "report": run.report.slug,
        "status": run.status,
        "trigger": run.trigger,
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "duration_s": round(duration, 3) if duration is not None else None,
        "interval_start": run.interval_start.isoformat() if run.interval_start else None,
        "interval_end": run.interval_end.isoformat() if run.interval_end else None,
        "parameters": run.parameters,
        "row_count": run.row_count,
        "storage": location["storage"],
        "output_path": location["output_path"],
        "output_bucket": location["bucket"],
        "output_key": location["key"],
        "output_bytes": run.output_bytes,
        "output_sha256": run.output_sha256 or None,
        "error": run.error or None,
    }


def describe_run(run):
    """A short human summary, a few lines long."""
    summary = run_summary(run)
    duration = summary["duration_s"]
    if run.status == RunStatus.SUCCEEDED:
        return (
            f"Run {run.pk} of '{run.report.slug}' succeeded in {duration:.2f} s: "
            f"{run.row_count:,} rows, {run.output_bytes:,} bytes.\n"
            f"Output: {_where(summary) or run.output.name}\n"
            f"SHA-256: {run.output_sha256}"
        )
    return f"Run {run.pk} of '{run.report.slug}' {run.status}: {run.error}"


def _where(summary):
    if summary["output_key"]:
        return f"s3://{summary['output_bucket']}/{summary['output_key']}"
    return summary["output_path"]
