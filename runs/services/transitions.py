"""The one owner of Run.status: every status change goes through ``transition_run``."""

from django.utils import timezone

from runs.models import Run, RunStatus

# Target status -> the statuses a run may leave for it.
ALLOWED_SOURCES = {
    RunStatus.RUNNING: (RunStatus.QUEUED,),
    RunStatus.SUCCEEDED: (RunStatus.RUNNING,),
    RunStatus.FAILED: (RunStatus.QUEUED, RunStatus.RUNNING),
    RunStatus.SKIPPED: (RunStatus.QUEUED,),
}

TIMESTAMP_FIELD = {
    RunStatus.RUNNING: "started_at",
    RunStatus.SUCCEEDED: "finished_at",
    RunStatus.FAILED: "finished_at",
    RunStatus.SKIPPED: "finished_at",
}


def transition_run(run, status, **fields):
    """Move ``run`` to ``status`` (setting ``fields`` too) if its stored status allows it.

    A single conditional UPDATE, so two processes racing for the same run cannot both
    win: returns True when this call made the change (and updates ``run`` in memory),
    False when the stored run was no longer in a status it may leave.
    """
    fields.setdefault(TIMESTAMP_FIELD[status], timezone.now())
    changed = Run.objects.filter(pk=run.pk, status__in=ALLOWED_SOURCES[status]).update(
        status=status, **fields
    )
    if changed:
        run.status = status
        for name, value in fields.items():
            setattr(run, name, value)
    return bool(changed)
