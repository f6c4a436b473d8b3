"""Production behaviour: logs, health checks, start-up failures."""

import json
import logging
import os
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from reportsvc.logging import JsonFormatter
from runs.models import WorkerHeartbeat
from tests.api_helpers import client_for, make_user

PROJECT_DIR = Path(__file__).resolve().parent.parent


def test_json_log_lines_carry_the_event_fields():
    record = logging.LogRecord("reportsvc.events", logging.INFO, __file__, 1, "run %s", (7,), None)
    record.event, record.run_id, record.status = "run_finished", 7, "succeeded"
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "run 7"
    assert (line["event"], line["run_id"], line["status"]) == ("run_finished", 7, "succeeded")
    assert line["level"] == "INFO" and line["logger"] == "reportsvc.events"


@pytest.mark.django_db
def test_api_requests_are_logged_without_query_or_token(caplog):
    user = make_user("viewer", "view")
    with caplog.at_level(logging.INFO, logger="reportsvc.requests"):
        client_for(user).get("/api/runs/?report=secret-slug")
    [record] = [r for r in caplog.records if r.name == "reportsvc.requests"]
    assert (record.method, record.path, record.status) == ("GET", "/api/runs/", 200)
    assert record.user_id == user.pk
    assert "secret-slug" not in record.getMessage() and "Token" not in record.getMessage()


@pytest.mark.django_db
def test_healthz_for_the_web_checks_only_the_database(client):
    assert client.get("/healthz").status_code == 503  # no worker
    response = client.get("/healthz?scope=web")
    assert response.status_code == 200
    assert response.json()["database"] == "ok"


@pytest.mark.django_db
def test_workerhealth_checks_this_host_s_heartbeat():
    with pytest.raises(CommandError, match="No recent heartbeat from a worker on"):
        call_command("workerhealth")
    host = socket.gethostname()
    WorkerHeartbeat.objects.create(
        name=f"{host}:1",
        host=host,
        pid=1,
        version="x",
        started_at=timezone.now(),
        last_seen_at=timezone.now() - timedelta(seconds=3),
    )
    call_command("workerhealth")


def test_a_worker_that_cannot_reach_the_database_exits_1():
    environment = {
        **os.environ,
        "SECRET_KEY": "test",
        "DATABASE_URL": "postgres://nobody@127.0.0.1:9/nothing?connect_timeout=2",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "runapscheduler"],
        cwd=PROJECT_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "Cannot reach the database:" in result.stderr
