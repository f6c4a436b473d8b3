"""The worker heartbeat rows that /healthz and the admin read."""

import os
import socket

from django.utils import timezone

from reportsvc import __version__
from runs.models import WorkerHeartbeat


def worker_name():
    """How a process names itself in runs, heartbeats and locks: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def register_worker(name, host, pid):
    now = timezone.now()
    WorkerHeartbeat.objects.update_or_create(
        name=name,
        defaults={
            "host": host,
            "pid": pid,
            "version": __version__,
            "started_at": now,
            "last_seen_at": now,
            "running_runs": 0,
        },
    )


def beat(name, *, running_runs):
    updated = WorkerHeartbeat.objects.filter(name=name).update(
        last_seen_at=timezone.now(), running_runs=running_runs
    )
    return bool(updated)


def unregister_worker(name):
    WorkerHeartbeat.objects.filter(name=name).delete()
