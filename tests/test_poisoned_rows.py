"""Rows stored before values were checked (or written past the service: a shell, raw
SQL) cannot make a page answer 500: every list and detail page of the admin and the API
shows them, writing what cannot be shown as escaped text."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test import override_settings

from reports.models import Report
from reports.zones import UTC_ZONE, report_zone
from reportsvc.moments import named_zone
from runs.models import Delivery, Run, RunStatus
from runs.services.runtime.runner import writer_options
from tests.api_helpers import client_for, make_user
from tests.conftest import ON_POSTGRES

pytestmark = pytest.mark.django_db(databases="__all__")

YEAR_1 = datetime(1, 1, 1, tzinfo=UTC)
YEAR_9999 = datetime(9999, 12, 31, 12, tzinfo=UTC)
SURROGATE = "a\ud800b"


@pytest.fixture
def superuser():
    user = make_user("root", staff=True)
    user.is_superuser = True
    user.save()
    return user


def write_output(outputs_dir, name):
    path = outputs_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("s\n1\n")
    return name


def make_run(report, **fields):
    now = datetime(2026, 11, 26, 6, tzinfo=UTC)
    values = {
        "trigger": "schedule",
        "status": RunStatus.SUCCEEDED,
        "queued_at": now,
        "started_at": now,
        "finished_at": now + timedelta(seconds=1),
        **fields,
    }
    return Run.objects.create(report=report, **values)


@pytest.fixture
def poisoned(outputs_dir):
    """Reports and runs no check would let in today, on both databases."""
    new_york = Report.objects.create(
        name="New York",
        slug="ny",
        sql="SELECT {{ interval_start }} AS s",
        schedule="0 6 * * *",
        timezone="America/New_York",
        next_run_at=YEAR_1,
    )
    kiritimati = Report.objects.create(
        name="Kiritimati",
        slug="kiritimati",
        sql="SELECT {{ interval_end }} AS e",
        schedule="0 0 29 2 *",
        timezone="Pacific/Kiritimati",
        next_run_at=YEAR_9999,
    )
    broken = Report.objects.create(
        name="Broken",
        slug="broken",
        sql="SELECT {{ x }}",
        timezone="Mars/Olympus",
        parameters={"not": "a list"},
    )
    odd = Report.objects.create(
        name="Odd", slug="odd", sql="SELECT 1", parameters=[{"name": "x", "type": "bogus"}]
    )
    runs = {
        "year 1": make_run(
            new_york,
            scheduled_for=YEAR_1,
            interval_start=YEAR_1,
            interval_end=YEAR_1 + timedelta(days=1),
            parameters={"interval_start": "0001-01-01T00:00:00Z"},
            output=write_output(outputs_dir, "ny/ny_year1_run.csv"),
            output_sha256="0" * 64,
        ),
        "year 9999": make_run(
            kiritimati,
            status=RunStatus.RUNNING,
            finished_at=None,
            scheduled_for=YEAR_9999,
            interval_start=YEAR_9999,
            interval_end=datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
            heartbeat_at=YEAR_9999,
            parameters={"interval_end": "9999-12-31T23:59:59.999999Z"},
            worker="host:1",
        ),
        "backwards": make_run(
            new_york,
            status=RunStatus.FAILED,
            interval_start=YEAR_9999,
            interval_end=YEAR_1,
            error="backwards",
        ),
        "list values": make_run(broken, status=RunStatus.QUEUED, parameters=[1, "two"]),
        "text values": make_run(broken, status=RunStatus.QUEUED, parameters="text"),
        "number values": make_run(odd, status=RunStatus.QUEUED, parameters=5),
        "nothing": make_run(
            odd,
            status=RunStatus.FAILED,
            queued_at=YEAR_1,
            started_at=None,
            finished_at=YEAR_9999,
        ),
    }
    Delivery.objects.create(
        run=runs["year 1"], channel="email", target="a@corp.example", reason="failed",
        status="failed", attempts=1, last_error="refused", sent_at=YEAR_9999,
    )  # fmt: skip
    if not ON_POSTGRES:
        # PostgreSQL refuses these: SQLite stores JSON escapes and bytes as given.
        runs["surrogates"] = make_run(
            new_york,
            status=RunStatus.FAILED,
            parameters={SURROGATE: SURROGATE, "nul": "x\x00y", "list": [SURROGATE]},
        )
        Report.objects.filter(pk=odd.pk).update(
            parameters=[{"name": "x", "type": "choice", "label": SURROGATE, "choices": [SURROGATE]}]
        )
        with connection.cursor() as cursor:
            # char(55296) is U+D800 as SQLite writes it: bytes that are not UTF-8.
            cursor.execute(
                "UPDATE runs_run SET error = 'bad ' || char(55296) || ' end', "
                "sql = 'SELECT ' || char(0) || char(56320) WHERE id = %s",
                [runs["surrogates"].pk],
            )
            cursor.execute(
                "UPDATE reports_report SET description = char(55296), "
                "name = 'Odd ' || char(56319) WHERE id = %s",
                [odd.pk],
            )
            cursor.execute("UPDATE runs_delivery SET last_error = char(55296)")
    return {"reports": (new_york, kiritimati, broken, odd), "runs": runs}


def admin_pages(poisoned):
    pages = ["/admin/", "/admin/reports/report/", "/admin/runs/run/", "/admin/runs/run/?q=a"]
    for report in poisoned["reports"]:
        base = f"/admin/reports/report/{report.pk}"
        pages += [f"{base}/change/", f"{base}/run-with-parameters/", f"{base}/backfill/"]
        pages += [f"{base}/history/", f"{base}/delete/"]
    for run in poisoned["runs"].values():
        pages += [f"/admin/runs/run/{run.pk}/change/", f"/admin/runs/run/{run.pk}/delete/"]
    return pages


def api_pages(poisoned):
    pages = ["/api/reports/", "/api/runs/", "/api/runs/?page_size=500"]
    for report in poisoned["reports"]:
        pages += [f"/api/reports/{report.slug}/", f"/api/runs/?report={report.slug}"]
    pages += [f"/api/runs/{run.pk}/" for run in poisoned["runs"].values()]
    pages += [f"/api/runs/{poisoned['runs']['year 1'].pk}/download/", "/api/reports/ny/latest.csv"]
    return pages


ZONES = ["UTC", "America/New_York", "Pacific/Kiritimati", "America/St_Johns"]


@pytest.mark.parametrize("zone", ZONES)
def test_no_admin_page_breaks_on_them(client, superuser, poisoned, zone):
    client.force_login(superuser)
    with override_settings(TIME_ZONE=zone):
        for page in admin_pages(poisoned):
            response = client.get(page)
            assert response.status_code in (200, 302), (page, response.content[:300])
    page = client.get(f"/admin/runs/run/{poisoned['runs']['year 1'].pk}/change/").content.decode()
    assert "0001-01-01 00:00:00 UTC" in page  # New York's calendar does not reach it
    if not ON_POSTGRES:
        run = poisoned["runs"]["surrogates"]
        page = client.get(f"/admin/runs/run/{run.pk}/change/").content.decode()
        assert "a\\ud800b" in page and "x\\u0000y" in page
        assert "bad \\xed\\xa0\\x80 end" in page
        odd = poisoned["reports"][3]
        form = client.get(f"/admin/reports/report/{odd.pk}/change/").content.decode()
        assert "Odd \\xed\\xaf\\xbf" in form and "a\\ud800b" in form


@pytest.mark.parametrize("zone", ZONES)
def test_no_api_page_breaks_on_them(superuser, poisoned, zone):
    viewer = make_user("viewer", "view")
    with override_settings(TIME_ZONE=zone):
        for client in (client_for(superuser), client_for(viewer)):
            for page in api_pages(poisoned):
                response = client.get(page)
                assert response.status_code in (200, 302), (page, response.content[:300])
    api = client_for(superuser)
    year_1 = api.get(f"/api/runs/{poisoned['runs']['year 1'].pk}/").json()
    assert year_1["interval_start"] == "0001-01-01T00:00:00Z"
    download = api.get(f"/api/runs/{poisoned['runs']['year 1'].pk}/download/")
    assert 'filename="ny_0001-01-01.csv"' in download["Content-Disposition"]  # in UTC
    if not ON_POSTGRES:
        run = api.get(f"/api/runs/{poisoned['runs']['surrogates'].pk}/").json()
        assert run["parameters"]["a\\ud800b"] == "a\\ud800b"
        assert run["parameters"]["list"] == ["a\\ud800b"]
        assert run["error"] == "bad \\xed\\xa0\\x80 end"
        [odd] = [report for report in api.get("/api/reports/").json() if report["slug"] == "odd"]
        assert odd["parameters"][0]["label"] == "a\\ud800b"
        assert odd["name"] == "Odd \\xed\\xaf\\xbf"


def test_acting_on_them_is_refused_with_a_message(client, superuser, poisoned):
    """Rerunning a run whose values a run cannot use is refused, not queued to fail."""
    api = client_for(superuser)
    year_1 = poisoned["runs"]["year 1"]
    response = api.post(f"/api/runs/{year_1.pk}/rerun/")
    assert response.status_code == 400
    assert (
        "'0001-01-01T00:00:00Z' is out of range" in response.json()["parameters.interval_start"][0]
    )
    values = poisoned["runs"]["list values"]
    response = api.post(f"/api/runs/{values.pk}/rerun/")
    assert response.status_code == 400
    client.force_login(superuser)
    page = client.post(f"/admin/runs/run/{year_1.pk}/rerun/", follow=True)
    assert "Cannot rerun: parameter interval_start" in page.content.decode()
    assert Run.objects.count() == len(poisoned["runs"])


@pytest.mark.parametrize("name", ["Mars/Olympus", "", None, "../../etc/passwd"])
def test_a_stored_zone_that_is_no_zone_is_read_as_utc_everywhere(name):
    report = Report(name="Broken", slug="broken", sql="SELECT 1", timezone=name)
    assert named_zone(name) is None
    assert report_zone(report) is UTC_ZONE
    assert writer_options(report).timezone is UTC_ZONE  # the outputs' time stamps
    assert named_zone("Europe/Berlin").key == "Europe/Berlin"
