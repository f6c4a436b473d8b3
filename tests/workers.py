"""Start real `manage.py runapscheduler` processes against the test database."""

import os
import signal
import subprocess
import sys
from pathlib import Path

from django.db import connection, connections
from django.db.models.functions import Now

from datasources.registry import DEFAULT_SOURCE, alias_for_source
from runs.models import SchedulerLease

PROJECT_DIR = Path(__file__).resolve().parent.parent

# Lets a test find the worker's PostgreSQL sessions (and only those).
WORKER_APPLICATION_NAME = "reportsvc-test-process"

FAST_WORKER_SETTINGS = {
    "WORKER_POLL_SECONDS": "0.1",
    "WORKER_HEARTBEAT_SECONDS": "0.5",
    "WORKER_LOST_AFTER_SECONDS": "3",
    "SCHEDULE_SYNC_SECONDS": "1",
    "SCHEDULE_LEADER_LEASE_SECONDS": "4",
    "WORKER_SHUTDOWN_GRACE_SECONDS": "10",
}


def leader_pid():
    """The pid of the worker that holds the scheduler lease now, or None."""
    lease = SchedulerLease.objects.filter(expires_at__gt=Now()).first()
    return int(lease.holder.rsplit(":", 1)[1]) if lease else None


def database_url_of_test_run(port=None, application_name=WORKER_APPLICATION_NAME):
    """A DATABASE_URL for the database the test run created (PostgreSQL: at ``port``
    instead of the server's, e.g. a tests.faults.FaultProxy's)."""
    settings_dict = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings_dict['NAME']}"
    password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
    host = "127.0.0.1" if port else settings_dict["HOST"]
    return (
        f"postgres://{settings_dict['USER']}{password}@{host}:"
        f"{port or settings_dict['PORT'] or 5432}/{settings_dict['NAME']}"
        f"?application_name={application_name}"
    )


def reporting_environment_of_test_run():
    """On SQLite the demo source is a file of its own: the process must use the test's."""
    demo = connections[alias_for_source(DEFAULT_SOURCE)]
    if demo.vendor == "sqlite":
        return {"REPORTING_DATABASE_URL": f"sqlite:///{demo.settings_dict['NAME']}"}
    return {}


def process_environment(outputs_dir, **overrides):
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("REPORTING_DATABASE_URL", "WORKER_", "SCHEDULE_"))
    }
    environment.update(
        DATABASE_URL=database_url_of_test_run(),
        OUTPUTS_DIR=str(outputs_dir),
        SECRET_KEY="test",
        PYTHONUNBUFFERED="1",
        **FAST_WORKER_SETTINGS,
        **reporting_environment_of_test_run(),
    )
    environment.update({key: str(value) for key, value in overrides.items()})
    return environment


class WorkerProcess:
    def __init__(self, log_path, environment, *arguments):
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()/kill()
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "runapscheduler", *arguments],
            cwd=PROJECT_DIR,
            env=environment,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.pid = self.process.pid

    def log(self):
        return Path(self.log_path).read_text()

    def running(self):
        return self.process.poll() is None

    def stop(self, timeout=30):
        """SIGTERM, then wait; returns the exit status."""
        if self.running():
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            self._log.close()

    def kill(self):
        """kill -9: no cleanup of any kind."""
        if self.running():
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self._log.close()
