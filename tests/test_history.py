"""Report history: every change to a report is a version (who, when, how, what), from the
admin, the API or a command; the admin and the API show what each changed, as the user
may see it; the admin reverts to a version; every run names the version it ran. The
history keeps no secret, and what the service moves on by itself makes no version."""

import html
import io
import threading
import time
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.db import connection, connections
from django.test import Client
from django.utils import timezone

from reports.models import Report
from reports.services.history import (
    DIFF_SHOWN_LINES,
    HistoricalReport,
)
from reports.services.schedules import save_report
from reports.services.webhook_secrets import rotate_webhook_secret
from runs.models import Run, RunStatus
from runs.services.domain.queue import claim_runs
from runs.services.domain.transitions import transition_run
from runs.services.runtime.fires import fire_due_reports
from runs.services.runtime.runner import perform_run, run_report_now
from tests.api_helpers import client_for, make_user
from tests.conftest import enqueue_run, needs_commits
from tests.test_admin import form_data

pytestmark = pytest.mark.django_db(databases="__all__")

SQL_V1 = "SELECT 1 AS n,\n       'first' AS label"
SQL_V2 = "SELECT 2 AS n,\n       'second' AS label"
HIDDEN_SQL_NOTE = "The SQL changed. Hidden: the SQL needs the view_report_sql permission."


def user_with(name, *codenames, staff=True):
    user = make_user(name, staff=staff)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return user


def superuser(name="root"):
    user = make_user(name, staff=True)
    user.is_superuser = True
    user.save()
    return user


def browser_for(user):
    browser = Client()
    browser.force_login(user)
    return browser


def versions(report):
    return list(HistoricalReport.objects.filter(id=report.pk).order_by("history_version"))


def page_text(response):
    assert response.status_code == 200, response.status_code
    return html.unescape(response.content.decode())


@pytest.fixture
def author():
    """May change reports and read their SQL."""
    return user_with(
        "author", "view_report", "add_report", "change_report", "view_report_sql", "view_run"
    )


@pytest.fixture
def report():
    return Report.objects.create(name="Orders", slug="orders", sql=SQL_V1)


# --- Who, when and what: the API, the admin, a command ------------------------------------


def test_an_api_change_is_a_version_with_who_when_and_the_sql_diff(report, author):
    api = client_for(author)
    before = timezone.now()
    response = api.patch(
        "/api/reports/orders/", {"sql": SQL_V2, "schedule": "0 6 * * *"}, format="json"
    )
    assert response.status_code == 200, response.content

    history = api.get("/api/reports/orders/history/").json()
    newest, first = history["results"]
    assert (newest["version"], first["version"]) == (2, 1)
    assert first["kind"] == "created" and first["changed_by"] is None
    assert newest["kind"] == "changed"
    assert newest["changed_by"] == "author" and newest["via"] == "API"
    changed_at = timezone.datetime.fromisoformat(newest["changed_at"])
    assert before <= changed_at <= timezone.now()
    assert newest["changed_fields"] == ["sql", "schedule"]
    sql, schedule = newest["changes"]
    assert sql["diff"].splitlines() == [
        "@@ -1,2 +1,2 @@",
        "-SELECT 1 AS n,",
        "-       'first' AS label",
        "+SELECT 2 AS n,",
        "+       'second' AS label",
    ]
    assert (sql["before"], sql["after"], sql["note"]) == (SQL_V1, SQL_V2, "")
    assert (schedule["before"], schedule["after"], schedule["diff"]) == ("", "0 6 * * *", None)
    assert newest["url"] == "http://testserver/api/reports/orders/history/2/"

    detail = api.get("/api/reports/orders/history/2/").json()
    assert detail["settings"]["sql"] == SQL_V2 and detail["settings"]["schedule"] == "0 6 * * *"
    assert "webhook_secret" not in detail["settings"]
    assert detail["changes"] == newest["changes"]
    old = api.get("/api/reports/orders/history/1/").json()
    assert old["settings"]["sql"] == SQL_V1


def test_reports_created_and_deleted_through_the_api_are_versions(author):
    user_with_delete = user_with("remover", "view_report", "delete_report")
    api = client_for(author)
    created = api.post(
        "/api/reports/",
        {"name": "Refunds", "slug": "refunds", "sql": "SELECT 1 AS n", "max_rows": 50},
        format="json",
    )
    assert created.status_code == 201, created.content
    report_id = Report.objects.get(slug="refunds").pk
    first = api.get("/api/reports/refunds/history/1/").json()
    assert (first["kind"], first["changed_by"], first["via"]) == ("created", "author", "API")
    assert {"field": "max_rows", "after": "50"}.items() <= first["changes"][
        first["changed_fields"].index("max_rows")
    ].items()
    assert client_for(user_with_delete).delete("/api/reports/refunds/").status_code == 204
    gone = HistoricalReport.objects.filter(id=report_id).order_by("history_version")
    assert [(v.history_type, v.history_user.username, v.history_change_reason) for v in gone] == [
        ("+", "author", "API"),
        ("-", "remover", "API"),
    ]


def test_an_admin_change_is_a_version_and_its_page_shows_the_diff(report):
    root = superuser()
    browser = browser_for(root)
    response = browser.post(
        f"/admin/reports/report/{report.pk}/change/",
        form_data(name="Orders", slug="orders", sql=SQL_V2, max_retries="2"),
    )
    assert response.status_code == 302
    first, second = versions(report)
    assert (second.history_user, second.history_change_reason) == (root, "admin")
    assert second.history_changes == ["sql", "max_retries"]
    assert (first.sql, second.sql) == (SQL_V1, SQL_V2)

    page = page_text(browser.get(f"/admin/reports/report/{report.pk}/history/"))
    assert page.index("Version 2") < page.index("Version 1")  # newest first
    assert "root · admin" in page
    assert '<div class="rs-diff-remove">-SELECT 1 AS n,</div>' in page
    assert "<div class=\"rs-diff-add\">+       'second' AS label</div>" in page
    assert '<span class="rs-before">0</span> → <span class="rs-after">2</span>' in page
    assert "Created with these settings:" in page
    # The report's page names its version and links to the history.
    change_page = page_text(browser.get(f"/admin/reports/report/{report.pk}/change/"))
    assert f'href="/admin/reports/report/{report.pk}/history/2/">Version 2</a>' in change_page


def test_the_admins_actions_and_deletions_are_versions_by_the_admin_user(report):
    root = superuser()
    browser = browser_for(root)
    secret = report.webhook_secret
    browser.post(f"/admin/reports/report/{report.pk}/rotate-webhook-secret/")
    report.refresh_from_db()
    assert report.webhook_secret != secret
    rotation = versions(report)[-1]
    assert (rotation.history_changes, rotation.history_user) == (["webhook_secret"], root)
    response = browser.post(
        "/admin/reports/report/",
        {"action": "delete_selected", "_selected_action": [report.pk], "post": "yes"},
    )
    assert response.status_code == 302
    deletion = HistoricalReport.objects.filter(id=report.pk).order_by("history_version").last()
    assert (deletion.history_type, deletion.history_user, deletion.history_change_reason) == (
        "-",
        root,
        "admin",
    )


@needs_commits
def test_seed_demo_records_the_reports_it_creates_and_seeding_again_records_nothing(
    scratch_tables,
):
    scratch_tables.extend(["demo_orders", "demo_customers"])
    call_command("seed_demo", "--no-admin", stdout=io.StringIO())
    demo = Report.objects.order_by("slug")
    assert demo.count() == 5
    firsts = HistoricalReport.objects.filter(id__in=demo.values("pk"))
    assert sorted((v.history_type, v.history_version, v.history_change_reason) for v in firsts) == (
        [("+", 1, "manage.py seed_demo")] * 5
    )
    assert {v.history_user_id for v in firsts} == {None}
    call_command("seed_demo", "--no-admin", stdout=io.StringIO())
    assert HistoricalReport.objects.count() == 5


def test_reports_that_existed_before_history_get_a_first_version_from_the_migration():
    from importlib import import_module

    from django.apps import apps

    report = Report.objects.create(
        name="Old", slug="old", sql="SELECT 1", notify_webhooks="https://u:pw@hooks.example.com/T"
    )
    HistoricalReport.objects.all().delete()  # as before the history existed
    migration = import_module("reports.migrations.0009_report_history_baseline")
    migration.record_first_versions(apps, None)
    (first,) = versions(report)
    assert (first.history_version, first.history_type, first.history_changes) == (1, "~", [])
    assert first.history_change_reason == "history began"
    assert first.sql == "SELECT 1" and first.notify_webhooks == "https://hooks.example.com/…"
    assert first.history_date == report.updated_at
    migration.record_first_versions(apps, None)  # again: nothing more
    assert len(versions(report)) == 1


# --- Revert -------------------------------------------------------------------------------


def test_revert_restores_a_version_checked_and_recorded_as_a_new_version(report):
    save_report(report, {"sql": SQL_V2, "max_rows": 10, "notify_webhooks": "https://a.example/x"})
    secret = report.webhook_secret
    root = superuser()
    browser = browser_for(root)
    page = page_text(browser.get(f"/admin/reports/report/{report.pk}/history/1/"))
    assert ">version 2</a> now." in page
    assert 'id="revert-button"' in page
    revert = page[page.index('id="revert"') :]
    assert '<span class="rs-before">10</span> → <span class="rs-after">(empty)</span>' in revert
    assert "The webhook URLs stay as they are now" in revert

    response = browser.post(f"/admin/reports/report/{report.pk}/history/1/revert/")
    assert response.status_code == 302
    assert response["Location"] == f"/admin/reports/report/{report.pk}/history/"
    report.refresh_from_db()
    assert (report.sql, report.max_rows) == (SQL_V1, None)
    # What the history does not keep stays as it is.
    assert report.notify_webhooks == "https://a.example/x" and report.webhook_secret == secret
    third = versions(report)[-1]
    assert third.history_version == 3 and third.history_user == root
    assert third.history_change_reason == "reverted to version 1 (admin)"
    assert third.history_changes == ["sql", "max_rows"]
    messages = page_text(browser.get(f"/admin/reports/report/{report.pk}/history/"))
    assert "Reverted “Orders” to the settings of version 1: this is version 3." in messages
    # Reverting to what the report already is changes nothing and records nothing.
    browser.post(f"/admin/reports/report/{report.pk}/history/3/revert/")
    assert len(versions(report)) == 3


def test_a_revert_that_fails_todays_checks_says_why_and_changes_nothing(report):
    save_report(report, {"slug": "orders-2024"})
    Report.objects.create(name="Another", slug="orders", sql="SELECT 1")  # the old slug's taken
    browser = browser_for(superuser())
    response = browser.post(f"/admin/reports/report/{report.pk}/history/1/revert/")
    page = page_text(response)
    assert "The report was not reverted" in page
    assert "Slug: Report with this Slug already exists." in page
    report.refresh_from_db()
    assert report.slug == "orders-2024" and len(versions(report)) == 2


@needs_commits
def test_a_revert_is_refused_when_its_sql_no_longer_passes_the_database_check(
    source_sql, scratch_tables
):
    scratch_tables.append("history_scratch")
    source_sql("CREATE TABLE history_scratch (amount integer)")
    report = Report.objects.create(
        name="Amounts", slug="amounts", sql="SELECT amount FROM history_scratch"
    )
    save_report(report, {"sql": "SELECT 1 AS amount"})
    source_sql("DROP TABLE history_scratch")
    response = browser_for(superuser()).post(f"/admin/reports/report/{report.pk}/history/1/revert/")
    page = page_text(response)
    assert "The report was not reverted" in page and "history_scratch" in page
    report.refresh_from_db()
    assert report.sql == "SELECT 1 AS amount" and len(versions(report)) == 2


def test_without_change_report_there_is_no_revert(report):
    save_report(report, {"sql": SQL_V2})
    viewer = user_with("viewer", "view_report", "view_report_sql")
    browser = browser_for(viewer)
    page = page_text(browser.get(f"/admin/reports/report/{report.pk}/history/1/"))
    assert 'id="version-settings"' in page and "revert-button" not in page
    response = browser.post(f"/admin/reports/report/{report.pk}/history/1/revert/")
    assert response.status_code == 403
    assert browser.get(f"/admin/reports/report/{report.pk}/history/1/revert/").status_code == 403
    report.refresh_from_db()
    assert report.sql == SQL_V2 and len(versions(report)) == 2
    # Without view_report the history is not readable at all.
    nobody = browser_for(user_with("run-reader", "view_run"))
    assert nobody.get(f"/admin/reports/report/{report.pk}/history/").status_code == 403
    assert nobody.get(f"/admin/reports/report/{report.pk}/history/1/").status_code == 403
    outsider = client_for(user_with("no-perms", staff=False))
    assert outsider.get("/api/reports/orders/history/").status_code == 403


# --- Runs name their version --------------------------------------------------------------


def test_a_claimed_run_records_the_version_it_ran_with_its_sql(report, author):
    first_run = enqueue_run(report, "manual")
    (claimed,) = claim_runs(1, "worker-1")
    assert claimed.pk == first_run.pk
    perform_run(claimed)
    save_report(report, {"sql": SQL_V2}, by=author, via="API")
    second = run_report_now(report)  # runreport's way: born running
    first_run.refresh_from_db()
    second.refresh_from_db()
    v1, v2 = versions(report)
    assert (first_run.report_version_id, first_run.sql) == (v1.history_id, v1.sql)
    assert (second.report_version_id, second.sql) == (v2.history_id, v2.sql)
    assert enqueue_run(report, "manual").report_version_id is None  # set when it starts

    api = client_for(author)
    data = api.get(f"/api/runs/{first_run.pk}/").json()
    assert data["report_version"] == 1
    assert data["report_version_url"] == "http://testserver/api/reports/orders/history/1/"
    assert api.get(data["report_version_url"]).json()["settings"]["sql"] == SQL_V1
    listed = {run["id"]: run for run in api.get("/api/runs/").json()["results"]}
    assert (listed[first_run.pk]["report_version"], listed[second.pk]["report_version"]) == (1, 2)

    page = page_text(browser_for(author).get(f"/admin/runs/run/{first_run.pk}/change/"))
    assert f'href="/admin/reports/report/{report.pk}/history/1/" id="report-version">Version 1' in (
        page
    )
    assert "changed since: now" in page
    page = page_text(browser_for(author).get(f"/admin/runs/run/{second.pk}/change/"))
    assert "the current version" in page and "by author" in page


@needs_commits
def test_runs_claimed_while_the_report_is_saved_name_the_version_whose_sql_they_ran():
    """The claim reads the report's SQL and its newest version in one statement, and a
    save writes the report and its version in one transaction: they always agree."""
    report = Report.objects.create(name="Busy", slug="busy", sql="SELECT 0 AS n")
    stop = threading.Event()

    def keep_saving():
        try:
            number = 0
            while not stop.is_set():
                number += 1
                save_report(Report.objects.get(pk=report.pk), {"sql": f"SELECT {number} AS n"})
        finally:
            connections.close_all()

    saver = threading.Thread(target=keep_saving)
    saver.start()
    try:
        for _ in range(40):
            enqueue_run(report, "manual")
            for run in claim_runs(1, "worker-1"):
                transition_run(run, RunStatus.FAILED, error="done")
            time.sleep(0.005)  # let the saver in
    finally:
        stop.set()
        saver.join(timeout=30)
    runs = Run.objects.filter(report=report).select_related("report_version")
    assert len(runs) == 40 and len(versions(report)) > 2
    assert [
        (run.sql, run.report_version.sql) for run in runs if run.sql != run.report_version.sql
    ] == []
    assert len({run.report_version_id for run in runs}) > 1  # the saves went on meanwhile


def test_runs_from_before_reports_had_versions_say_so(report, author):
    run = run_report_now(report)
    Run.objects.filter(pk=run.pk).update(report_version=None)
    assert client_for(author).get(f"/api/runs/{run.pk}/").json()["report_version"] is None
    page = page_text(browser_for(author).get(f"/admin/runs/run/{run.pk}/change/"))
    assert "not recorded: the run started before the report had versions" in page


# --- Who sees what ------------------------------------------------------------------------


def test_without_view_report_sql_a_user_sees_that_the_sql_changed_not_the_sql(report):
    save_report(report, {"sql": SQL_V2, "description": "Now the second"})
    viewer = user_with("viewer", "view_report", "view_run")
    reader = user_with("reader", "view_report", "view_report_sql", "view_run")
    for user, sees in ((viewer, False), (reader, True)):
        api = client_for(user)
        listed = api.get("/api/reports/orders/history/").content.decode()
        detail = api.get("/api/reports/orders/history/2/").json()
        browser = browser_for(user)
        pages = page_text(browser.get(f"/admin/reports/report/{report.pk}/history/")) + page_text(
            browser.get(f"/admin/reports/report/{report.pk}/history/2/")
        )
        for text in (listed, pages):
            assert ("'second'" in text) is sees
            assert ("'first'" in text) is sees
            assert ("Now the second" in text) is True  # the rest is for every reader
            assert (HIDDEN_SQL_NOTE in text) is not sees
        assert ("sql" in detail["settings"]) is sees
        (sql_change,) = [change for change in detail["changes"] if change["field"] == "sql"]
        if not sees:
            assert sql_change == {
                "field": "sql",
                "label": "SQL",
                "before": None,
                "after": None,
                "diff": None,
                "note": HIDDEN_SQL_NOTE,
            }


def test_the_history_keeps_no_secret(report):
    """Looked up in the historical table itself, every column of every row."""
    webhook = "https://hook-user:hook-pw@hooks.example.com/services/T000/B000/XXXX?token=tok123"
    author = user_with("author", "view_report", "change_report")
    save_report(report, {"notify_webhooks": webhook, "notify_emails": "ops@corp.example"})
    rotate_webhook_secret(report, by=author, via="API")
    # Only the secret part of the URL changes: still a version, saying so.
    save_report(report, {"notify_webhooks": webhook.replace("XXXX", "YYYY")}, by=author)
    secrets = [report.webhook_secret, "hook-user", "hook-pw", "XXXX", "YYYY", "tok123", "T000"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM reports_historicalreport")
        columns = [column[0] for column in cursor.description]
        rows = cursor.fetchall()
    assert len(rows) == 4 and "webhook_secret" not in columns
    stored = "\n".join(str(value) for row in rows for value in row)
    assert [secret for secret in secrets if secret in stored] == []
    assert "https://hooks.example.com/…" in stored and "ops@corp.example" in stored

    rotation, url_change = versions(report)[2:]
    assert rotation.history_changes == ["webhook_secret"] and rotation.history_user == author
    assert url_change.history_changes == ["targets", "notify_webhooks"]  # one view of the other
    changes = client_for(author).get("/api/reports/orders/history/").json()["results"]
    assert changes[0]["changes"][0]["note"].startswith("A URL's user, password, path or query")
    assert changes[1]["changes"] == [
        {
            "field": "webhook_secret",
            "label": "Webhook secret",
            "before": None,
            "after": None,
            "diff": None,
            "note": "Replaced by a new random secret. Secrets are never kept in the history.",
        }
    ]
    # Those who may not change the report see addresses as their domain, as elsewhere.
    viewer = client_for(user_with("viewer", "view_report"))
    assert "ops@corp.example" not in viewer.get("/api/reports/orders/history/").content.decode()
    assert "…@corp.example" in viewer.get("/api/reports/orders/history/2/").content.decode()


def test_bookkeeping_saves_make_no_version(report, lease):
    save_report(report, {"schedule": "* * * * *", "alert_condition": "has_rows"})
    assert len(versions(report)) == 2
    report.next_run_at = timezone.now() - timedelta(minutes=1)
    report.save()  # a whole save that changes no setting
    report.alert_active = True
    report.save(update_fields=["alert_active"])
    report.name = "Renamed in memory only"
    report.save(update_fields=["next_run_at", "updated_at"])  # the name is not saved
    Report.objects.filter(pk=report.pk).update(alert_active=False)
    assert fire_due_reports(lease) == 1  # the leader moves next_run_at on
    (run,) = claim_runs(1, "worker-1")
    perform_run(run)
    assert run_report_now(Report.objects.get(pk=report.pk)).status == RunStatus.SUCCEEDED
    report = Report.objects.get(pk=report.pk)
    assert report.alert_active  # the alert flipped on (notification_reason)
    assert report.next_run_at > timezone.now()
    save_report(report)  # the admin's save with nothing changed
    assert len(versions(report)) == 2


# --- Hostile input ------------------------------------------------------------------------


def test_a_huge_sql_diff_stays_bounded_and_says_what_it_left_out(report):
    many_lines = "\n".join(f"SELECT {number} AS n UNION ALL" for number in range(20_000))
    one_long_line = "SELECT '" + "x" * 1_000_000 + "' AS wide"
    for sql in (one_long_line, many_lines + "\nSELECT 0"):
        report.sql = sql
        report.save()
    browser = browser_for(superuser())
    started = time.monotonic()
    history = browser.get(f"/admin/reports/report/{report.pk}/history/")
    version = browser.get(f"/admin/reports/report/{report.pk}/history/2/")
    api = client_for(superuser("api-root")).get("/api/reports/orders/history/").json()
    assert time.monotonic() - started < 10
    for response in (history, version):
        assert len(response.content) < 400_000, len(response.content)
    page = page_text(history)
    assert "20,001 lines changed: only the first 1,000 of them are compared." in page
    assert "more diff lines not shown: see the versions in full." in page
    assert "(1,000,018 characters)" in page  # the diff line: "+" and the SQL
    assert page.count('class="rs-diff-add"') <= 3 * DIFF_SHOWN_LINES
    assert "cut: 1,000,017 characters in all" in page_text(
        browser.get(f"/admin/reports/report/{report.pk}/history/2/")
    )
    sql_change = api["results"][0]["changes"][0]
    assert len(sql_change["diff"].splitlines()) == DIFF_SHOWN_LINES + 1
    assert len(sql_change["after"]) < 3000


def test_an_edit_deep_in_a_long_sql_shows_just_that_line_with_its_number(report):
    lines = [f"SELECT {number} AS n UNION ALL" for number in range(20_000)]
    save_report(report, {"sql": "\n".join(lines)})
    lines[12_344] = "SELECT -1 AS n UNION ALL"
    save_report(report, {"sql": "\n".join(lines)})
    sql = client_for(superuser()).get("/api/reports/orders/history/3/").json()["changes"][0]
    assert sql["diff"].splitlines() == [
        "@@ -12343,5 +12343,5 @@",
        " SELECT 12342 AS n UNION ALL",
        " SELECT 12343 AS n UNION ALL",
        "-SELECT 12344 AS n UNION ALL",
        "+SELECT -1 AS n UNION ALL",
        " SELECT 12345 AS n UNION ALL",
        " SELECT 12346 AS n UNION ALL",
    ]


def test_a_page_of_many_huge_versions_stays_quick_and_says_what_it_did_not_compare(report):
    """Comparing costs up to the square of the changed lines: a page shares a budget."""
    for version in range(12):
        # Lines that recur, in another order each time: the slowest kind to compare.
        report.sql = "\n".join(f"SELECT {(line * (version + 2)) % 150}" for line in range(1000))
        report.save()
    browser = browser_for(superuser())
    started = time.monotonic()
    page = page_text(browser.get(f"/admin/reports/report/{report.pk}/history/"))
    api = client_for(superuser("api-root")).get("/api/reports/orders/history/").json()
    assert time.monotonic() - started < 10
    not_compared = "Not compared on this page, which shows much changed text already"
    assert 0 < page.count(not_compared) < 12
    assert not_compared in api["results"][-2]["changes"][0]["diff"]
    # The version's own page compares it.
    version = page_text(browser.get(f"/admin/reports/report/{report.pk}/history/2/"))
    assert not_compared not in version and 'class="rs-diff-add"' in version


def test_markup_in_the_sql_and_settings_is_shown_as_text(report):
    save_report(
        report,
        {
            "sql": "SELECT '<script>alert(1)</script>' AS x",
            "description": '<img src=x onerror="alert(2)">',
        },
    )
    browser = browser_for(superuser())
    for url in (
        f"/admin/reports/report/{report.pk}/history/",
        f"/admin/reports/report/{report.pk}/history/2/",
    ):
        page = browser.get(url).content.decode()
        assert "<script>alert(1)" not in page and "<img src=x" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert "&lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in page


def test_the_history_api_pages_and_answers_404_for_versions_it_does_not_have(report, author):
    for number in range(2, 6):
        save_report(report, {"max_rows": number})
    api = client_for(author)
    first = api.get("/api/reports/orders/history/?page_size=2").json()
    assert [version["version"] for version in first["results"]] == [5, 4]
    # The diff of the last version on a page still compares it with the one before.
    assert first["results"][1]["changes"][0]["before"] == "3"
    second = api.get(first["next"]).json()
    assert [version["version"] for version in second["results"]] == [3, 2]
    for number in (0, 6, 2**31, 10**30):
        response = api.get(f"/api/reports/orders/history/{number}/")
        assert response.status_code == 404, number
    assert api.get("/api/reports/orders/history/6/").json() == {
        "detail": "Report 'orders' has no version 6."
    }
    assert api.get("/api/reports/orders/history/?cursor=bogus").status_code == 400
    assert api.get("/api/reports/missing/history/").status_code == 404
    browser = browser_for(author)
    for number in (99, 10**30):
        response = browser.get(f"/admin/reports/report/{report.pk}/history/{number}/")
        assert response.status_code == 302, number
    response = browser.post(f"/admin/reports/report/{report.pk}/history/{10**30}/revert/")
    assert response.status_code == 302


def test_the_history_is_in_the_openapi_schema():
    schema = (
        client_for(superuser())
        .get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
        .json()
    )
    listed = schema["paths"]["/api/reports/{slug}/history/"]["get"]
    assert "200" in listed["responses"] and "404" in listed["responses"]
    assert {parameter["name"] for parameter in listed["parameters"]} >= {"cursor", "page_size"}
    one = schema["paths"]["/api/reports/{slug}/history/{number}/"]["get"]
    assert one["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ReportVersionDetail"
    }
    components = schema["components"]["schemas"]
    assert "sql" not in components["ReportVersionSettings"]["required"]
    assert "webhook_secret" not in components["ReportVersionSettings"]["properties"]
    assert set(components["Run"]["required"]) >= {"report_version", "report_version_url"}
