"""Schemathesis against the live API: no server errors, nothing the schema does not say.

It runs as a superuser, as a user who may only view and run reports, and without a
token. Its JUnit report says, per operation, whether a check failed: every operation of
the schema must be there, and none may have failed.
"""

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from django.core.cache import cache
from django.db import connections

from reports.models import Report
from runs.services.runtime.runner import run_report_now
from tests.api_helpers import client_for, make_user, token_key
from tests.conftest import enqueue_run

pytestmark = [
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.long_running,
]

# The two shorter runs share one test process and Hypothesis's Unicode tables (built
# once per process); the superuser's, the longest test of the suite, runs beside them.
# Three st processes at once slowed the first minute for every other test.
shorter_runs = pytest.mark.xdist_group("schemathesis")

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)


def fetch_schema(token, path):
    """The schema as integrators fetch it: with a token (it may need a login)."""
    response = client_for().get(
        "/api/schema/",
        HTTP_ACCEPT="application/vnd.oai.openapi+json",
        HTTP_AUTHORIZATION=f"Token {token}",
    )
    assert response.status_code == 200
    path.write_bytes(response.content)
    return json.loads(response.content)


@pytest.fixture(scope="session")
def schemathesis_home(tmp_path_factory):
    """Where `st` runs. Hypothesis keeps its Unicode tables under the working directory:
    building them costs each run about 2 s of CPU, so the runs share one directory."""
    return tmp_path_factory.mktemp("schemathesis-home")


def schemathesis(live_server, tmp_path, home, schema_path, *headers, max_examples, phases):
    report = tmp_path / "junit.xml"
    command = [
        str(Path(sys.executable).parent / "st"),
        "run",
        str(schema_path),
        "--url",
        live_server.url,
        "--checks",
        CHECKS,
        "--max-examples",
        str(max_examples),
        "--seed",
        "20261126",
        # Every run starts afresh, as in a directory of its own: no examples saved by
        # an earlier run are replayed.
        "--generation-database",
        "none",
        "--request-timeout",
        "10",
        "--phases",
        phases,
        "--report",
        "junit",
        "--report-junit-path",
        str(report),
        *[part for header in headers for part in ("-H", header)],
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=home)
    return result, report


STATEFUL = "Stateful tests"  # the stateful phase's own entry, next to the operations


def operation_names(schema):
    return {
        f"{method.upper()} {path}"
        for path, path_item in schema["paths"].items()
        for method in path_item
    }


def assert_every_operation_passed(result, report, schema):
    """Every operation of the schema was exercised (none skipped), and no check failed."""
    output = result.stdout[-6000:] + result.stderr[-2000:]
    assert result.returncode == 0, output
    cases = ET.parse(report).getroot().iter("testcase")
    outcomes = {case.get("name"): [child.tag for child in case] for case in cases}
    assert set(outcomes) - {STATEFUL} == operation_names(schema), output
    problems = {
        name: tags for name, tags in outcomes.items() if {"failure", "error", "skipped"} & set(tags)
    }
    assert problems == {}, output


@pytest.fixture(autouse=True)
def connections_kept_per_client(monkeypatch):
    """The live server keeps a database connection for as long as st's connection lasts,
    as a production server keeps them (DATABASE_CONN_MAX_AGE), instead of opening one
    per request: on PostgreSQL that halves these tests. The server closes them when the
    client hangs up."""
    for alias in connections:
        monkeypatch.setitem(connections[alias].settings_dict, "CONN_MAX_AGE", None)


@pytest.fixture
def api_data():
    cache.clear()  # the run endpoint's throttle counts per user
    report = Report.objects.create(name="Numbers", slug="numbers", sql="SELECT 1 AS n")
    run_report_now(report)
    enqueue_run(report, "api")
    Report.objects.create(name="Never run", slug="never", sql="SELECT 2 AS n")
    superuser = make_user("root", staff=True)
    superuser.is_superuser = True
    superuser.save()
    return token_key(superuser)


def test_as_a_superuser_every_response_matches_the_schema(
    live_server, tmp_path, schemathesis_home, api_data
):
    schema = fetch_schema(api_data, tmp_path / "openapi.json")
    result, report = schemathesis(
        live_server,
        tmp_path,
        schemathesis_home,
        tmp_path / "openapi.json",
        f"Authorization: Token {api_data}",
        max_examples=8,
        phases="examples,coverage,fuzzing,stateful",
    )
    assert_every_operation_passed(result, report, schema)


@shorter_runs
def test_as_a_user_who_may_view_and_run_every_response_matches_the_schema(
    live_server, tmp_path, schemathesis_home, api_data
):
    # This user gets no `sql`, redacted targets, and 403 for every write. The coverage
    # phase's boundary values reach the same validation as the superuser's run, so this
    # run fuzzes every operation and leaves that phase to the superuser.
    runner = make_user("runner", "run")
    key = token_key(runner)
    schema = fetch_schema(key, tmp_path / "openapi.json")
    result, report = schemathesis(
        live_server,
        tmp_path,
        schemathesis_home,
        tmp_path / "openapi.json",
        f"Authorization: Token {key}",
        max_examples=10,
        phases="examples,fuzzing",
    )
    assert_every_operation_passed(result, report, schema)


@shorter_runs
def test_without_a_token_every_response_matches_the_schema(
    live_server, tmp_path, schemathesis_home, api_data
):
    # Every answer is a 401; the schema must say so for every operation.
    schema = fetch_schema(api_data, tmp_path / "openapi.json")
    result, report = schemathesis(
        live_server,
        tmp_path,
        schemathesis_home,
        tmp_path / "openapi.json",
        max_examples=4,
        phases="fuzzing",
    )
    assert_every_operation_passed(result, report, schema)
