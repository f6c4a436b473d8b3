"""What each kind of user sees of a run, everywhere: every admin and API page of a run,
and the report pages that show its runs, rows, downloads, SQL and deliveries.

Output rows (previews, downloads) need view_report; the SQL (the report's, the run's,
the statement a database error quotes) needs view_report_sql, whatever else the user
is; notification targets and delivery errors are in full only for those who may change
the report. The run's deliveries failed for real: a mail server on loopback refused
the address, a webhook receiver answered 500 with a URL and an address in its reason.
"""

import html
import json
import re

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client

from reports.models import Report
from runs.models import Delivery, RunStatus
from runs.services.domain.transitions import transition_run
from runs.services.runtime.runner import run_report_now
from tests.api_helpers import client_for, make_user
from tests.conftest import enqueue_run, postgres_only
from tests.receivers import Receiver, RefusingMailServer

pytestmark = pytest.mark.django_db(databases="__all__")

# Each is staff, so each reaches the admin; admin run pages need runs.view_run.
PERSONAS = {
    "superuser": ["*"],
    "author": ["view_report", "change_report", "view_run"],
    "sql reader": ["view_report", "view_report_sql", "view_run"],
    "runner": ["view_report", "run_report", "view_run"],
    "viewer": ["view_report", "view_run"],
    "run-only staff": ["view_run"],
    "no permission": [],
}
SEES_ROWS = {"superuser", "author", "sql reader", "runner", "viewer"}  # view_report
SEES_SQL = {"superuser", "sql reader"}  # view_report_sql: staff status is not enough
SEES_TARGETS = {"superuser", "author"}  # change_report
RUNS_REPORTS = {"superuser", "runner"}  # run_report
CHANGES_REPORTS = SEES_TARGETS
OPENS_RUNS = set(PERSONAS) - {"no permission"}  # runs.view_run

SQL = "SELECT upper('rows-shown-here') AS shout"
ROWS = "ROWS-SHOWN-HERE"  # only in the output: the SQL has it in lower case
SQL_MARKER = "rows-shown-here"
ERROR = (
    'relation "hidden_table" does not exist\n'
    "LINE 1: SELECT upper('rows-shown-here') AS shout FROM hidden_table\n"
    "                                                      ^"
)
ERROR_FIRST_LINE = 'relation "hidden_table" does not exist'
WEBHOOK_REASON = (
    "Down: see https://status.example/incident/42?key=k-123 or oncall.person@corp.example"
)
# In full only for those who may change the report: the refused address (target and
# error), the webhook's path (target), the URL and address in the webhook's error.
FULL_TARGETS = ["private.name@corp.example", "secret-path", "incident/42", "k-123", "oncall.person"]
REDACTED = ["…@corp.example", "https://status.example/…"]


@pytest.fixture
def history(settings):
    """A report whose succeeded run notified and failed to (mail refused, webhook 500),
    and a failed run whose error quotes the statement as PostgreSQL does."""
    mail, receiver = RefusingMailServer(), Receiver(statuses=(500,), reason=WEBHOOK_REASON)
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", mail.port, 5
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.NOTIFY_WEBHOOK_BLOCKED_NETWORKS = []  # the receiver listens on 127.0.0.1
    settings.NOTIFY_WEBHOOK_RETRIES = 0
    report = Report.objects.create(
        name="Quarterly figures",
        slug="quarterly",
        sql=SQL,
        schedule="0 6 * * *",
        notify_emails="private.name@corp.example",
        notify_webhooks=receiver.url,
        notify_when="always",
    )
    try:
        succeeded = run_report_now(report)
    finally:
        mail.close()
        receiver.close()
    assert succeeded.status == RunStatus.SUCCEEDED, succeeded.error
    failed = enqueue_run(report, "manual")
    transition_run(failed, RunStatus.FAILED, error=ERROR)
    return report, succeeded, failed


def test_the_deliveries_failed_for_real_and_quote_what_must_be_hidden(history):
    _, succeeded, _ = history
    email, webhook = (succeeded.deliveries.get(channel=c) for c in ("email", "webhook"))
    assert email.last_error.startswith("SMTPRecipientsRefused: {'private.name@corp.example':")
    assert "<private.name@corp.example>: Recipient address rejected" in email.last_error
    assert webhook.last_error == f"HTTP 500 {WEBHOOK_REASON}"


def persona(name):
    username = name.replace(" ", "-")
    existing = get_user_model().objects.filter(username=username).first()
    if existing is not None:
        return existing
    user = make_user(username, staff=True)
    codenames = PERSONAS[name]
    if codenames == ["*"]:
        user.is_superuser = True
        user.save()
    else:
        user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return user


def admin_pages(report, succeeded, failed):
    runs = [f"/admin/runs/run/{run.pk}/" for run in (succeeded, failed)]
    reports = f"/admin/reports/report/{report.pk}/"
    return {
        "/admin/": 200,
        "/admin/runs/run/": "runs",
        "/admin/runs/run/?status__exact=failed": "runs",
        "/admin/runs/run/?status__exact=failed&finished=24h": "runs",
        **{f"{run}change/": "runs" for run in runs},
        **{f"{run}history/": "runs" for run in runs},
        "/admin/reports/report/": "reports",
        f"{reports}change/": "reports",
        f"{reports}history/": "reports",
        f"{reports}history/1/": "reports",
        f"{reports}run-with-parameters/": "run",
        f"{reports}backfill/": "run",
    }


def api_pages(report, succeeded, failed):
    return [
        "/api/runs/",
        f"/api/runs/?report={report.slug}",
        f"/api/runs/{succeeded.pk}/",
        f"/api/runs/{failed.pk}/",
        "/api/reports/",
        f"/api/reports/{report.slug}/",
        f"/api/reports/{report.slug}/history/",
        f"/api/reports/{report.slug}/history/1/",
    ]


def expected_status(kind, name):
    if kind == "runs":
        return 200 if name in OPENS_RUNS else 403
    if kind == "reports":
        return 200 if name in SEES_ROWS else 403
    if kind == "run":  # the pages that queue runs send others back to the report
        return 200 if name in RUNS_REPORTS else 302
    return kind


@pytest.mark.parametrize("name", PERSONAS)
def test_each_kind_of_user_sees_what_their_permissions_allow_on_every_page(history, name):
    report, succeeded, failed = history
    user = persona(name)
    browser = Client()
    browser.force_login(user)
    seen = {}
    for url, kind in admin_pages(report, succeeded, failed).items():
        response = browser.get(url)
        assert response.status_code == expected_status(kind, name), url
        if response.status_code == 200:
            seen[url] = html.unescape(response.content.decode())
    api = client_for(user)
    for url in api_pages(report, succeeded, failed):
        response = api.get(url)
        assert response.status_code == (200 if name in SEES_ROWS else 403), url
        seen[url] = response.content.decode()
    everything = "\n".join(seen.values())
    admin = "\n".join(page for url, page in seen.items() if url.startswith("/admin/"))

    # Rows: the preview, the download buttons and links, the downloads themselves.
    assert (ROWS in everything) is (name in SEES_ROWS)
    assert (f"/api/runs/{succeeded.pk}/download/" in admin) is (name in SEES_ROWS)
    assert ("Download CSV" in admin) is (name in SEES_ROWS)
    for url in (f"/api/runs/{succeeded.pk}/download/", f"/api/reports/{report.slug}/latest.csv"):
        response = api.get(url)
        assert response.status_code == (200 if name in SEES_ROWS else 403), url
        if response.status_code == 200:
            assert b"".join(response.streaming_content) == b"shout\nROWS-SHOWN-HERE\n"
    if name == "run-only staff":
        run_page = seen[f"/admin/runs/run/{succeeded.pk}/change/"]
        assert "Hidden: output rows and downloads need the view_report permission." in run_page
        assert 'id="preview-table"' not in run_page

    # SQL: the report's, the run's, and the statement quoted in the error.
    assert (SQL_MARKER in everything) is (name in SEES_SQL)
    assert ("LINE 1:" in everything) is (name in SEES_SQL)
    if name in OPENS_RUNS:
        assert ERROR_FIRST_LINE in everything  # the error itself is for every reader
        if name not in SEES_SQL:
            assert "Hidden: the SQL needs the view_report_sql permission." in admin

    # Targets and delivery errors: in full for authors, redacted for everyone else.
    for part in FULL_TARGETS:
        assert (part in everything) is (name in SEES_TARGETS), part
    if name in OPENS_RUNS:
        assert "SMTPRecipientsRefused" in everything and "HTTP 500 Down: see" in everything
        for part in REDACTED:
            assert (part in everything) is (name not in SEES_TARGETS), part

    # Buttons: running needs run_report, changing change_report.
    report_page = seen.get(f"/admin/reports/report/{report.pk}/change/", "")
    run_page = seen.get(f"/admin/runs/run/{succeeded.pk}/change/", "")
    for button in ('id="run-now"', 'id="run-with-parameters"', 'id="backfill"'):
        assert (button in report_page) is (name in RUNS_REPORTS), button
    assert ('id="rerun"' in run_page) is (name in RUNS_REPORTS)
    assert ('value="run_now"' in seen.get("/admin/reports/report/", "")) is (name in RUNS_REPORTS)
    assert ('name="_save"' in report_page) is (name in CHANGES_REPORTS)
    assert ('id="rotate-webhook-secret"' in report_page) is (name in CHANGES_REPORTS)


@pytest.mark.parametrize("name", sorted(OPENS_RUNS))
def test_searching_runs_by_error_or_reports_by_sql_needs_the_sql_permission(history, name):
    """A search in hidden text would tell, one guess at a time, what the text says."""
    report, _, failed = history
    browser = Client()
    browser.force_login(persona(name))
    # "shout" is in the statement the error quotes, and in the report's SQL only.
    runs = browser.get("/admin/runs/run/?q=shout").content.decode()
    assert (f'href="/admin/runs/run/{failed.pk}/change/' in runs) is (name in SEES_SQL)
    if name in SEES_ROWS:
        reports = browser.get("/admin/reports/report/?q=shout").content.decode()
        assert (f'href="/admin/reports/report/{report.pk}/change/' in reports) is (name in SEES_SQL)
    # The error's first line is no secret, but a search cannot stop at it: searching
    # errors is for those who may see them whole. The other searches work for everyone.
    runs = browser.get("/admin/runs/run/?q=hidden_table").content.decode()
    assert (f'href="/admin/runs/run/{failed.pk}/change/' in runs) is (name in SEES_SQL)
    runs = browser.get(f"/admin/runs/run/?q={failed.pk}").content.decode()
    assert f'href="/admin/runs/run/{failed.pk}/change/' in runs


def test_the_report_page_lists_recent_runs_with_errors_as_the_user_may_see_them(history):
    report, _, _ = history
    browser = Client()
    browser.force_login(persona("viewer"))
    page = html.unescape(browser.get(f"/admin/reports/report/{report.pk}/change/").content.decode())
    assert ERROR_FIRST_LINE in page and "LINE 1" not in page and SQL_MARKER not in page
    browser.force_login(persona("sql reader"))
    page = html.unescape(browser.get(f"/admin/reports/report/{report.pk}/change/").content.decode())
    assert f"{ERROR_FIRST_LINE} LINE 1: SELECT"[:77] in page.replace("\n", " ")


# --- an author without view_report_sql changes the report without seeing its SQL ---------


def author_form(report, **changes):
    from tests.test_admin import form_data

    changes.setdefault("sql", "")  # empty: the author keeps the SQL they cannot see
    return form_data(
        name=report.name,
        slug=report.slug,
        schedule=report.schedule,
        notify_emails=report.notify_emails,
        notify_webhooks=report.notify_webhooks,
        notify_when=report.notify_when,
        **changes,
    )


def test_an_author_without_the_sql_permission_changes_settings_but_never_sees_the_sql(history):
    """As in the API: the SQL may be replaced, not read."""
    report, _, _ = history
    browser = Client()
    browser.force_login(persona("author"))
    url = f"/admin/reports/report/{report.pk}/change/"
    page = browser.get(url).content.decode()
    assert SQL_MARKER not in page
    assert re.search(r'<textarea name="sql"[^>]*>\s*</textarea>', page)  # empty
    assert "Hidden: the SQL needs the view_report_sql permission." in page
    # Left empty, the stored SQL stays and the other changes are saved.
    response = browser.post(url, author_form(report, description="by the author", sql=""))
    assert response.status_code == 302, response.content.decode()[:2000]
    report.refresh_from_db()
    assert (report.sql, report.description) == (SQL, "by the author")
    # A statement typed in replaces it, checked like any other.
    response = browser.post(url, author_form(report, sql="SELECT * FROM no_such_table"))
    assert "The database rejects this SQL" in response.content.decode()
    response = browser.post(url, author_form(report, sql="SELECT 2 AS n"))
    assert response.status_code == 302
    report.refresh_from_db()
    assert report.sql == "SELECT 2 AS n"
    api = client_for(persona("author"))
    response = api.patch(f"/api/reports/{report.slug}/", {"sql": "SELECT 3 AS n"}, format="json")
    assert response.status_code == 200 and "sql" not in response.json()
    assert Report.objects.get(pk=report.pk).sql == "SELECT 3 AS n"


def test_an_author_without_the_sql_permission_sees_what_breaks_the_sql_not_the_sql(history):
    report, _, _ = history
    Report.objects.filter(pk=report.pk).update(
        sql="SELECT upper({{ word }}) AS shout",
        parameters=[{"name": "word", "type": "text", "default": "rows-shown-here"}],
    )
    report.refresh_from_db()
    browser = Client()
    browser.force_login(persona("author"))
    # The SQL uses {{ word }}: declaring no parameters breaks it, and the author hears so.
    response = browser.post(
        f"/admin/reports/report/{report.pk}/change/", author_form(report, parameters="[]")
    )
    assert response.status_code == 200
    page = html.unescape(response.content.decode())
    assert "Unknown parameter in {{ word }}" in page
    assert "upper(" not in page and SQL_MARKER not in page
    report.refresh_from_db()
    assert report.parameters == [{"name": "word", "type": "text", "default": "rows-shown-here"}]


@postgres_only
@pytest.mark.parametrize("where", ["admin", "api"])
def test_the_databases_objection_reaches_an_author_without_the_statement(history, where):
    """PostgreSQL quotes the statement (LINE 1: …) when EXPLAIN refuses it."""
    report, _, _ = history
    Report.objects.filter(pk=report.pk).update(
        sql="SELECT upper({{ word }}) AS shout",
        parameters=[{"name": "word", "type": "text", "default": "rows-shown-here"}],
    )
    report.refresh_from_db()
    integer = [{"name": "word", "type": "integer", "default": "7"}]
    author = persona("author")
    if where == "admin":
        browser = Client()
        browser.force_login(author)
        response = browser.post(
            f"/admin/reports/report/{report.pk}/change/",
            author_form(report, parameters=json.dumps(integer)),
        )
        assert response.status_code == 200
        text = html.unescape(response.content.decode())
    else:
        response = client_for(author).patch(
            f"/api/reports/{report.slug}/", {"parameters": integer}, format="json"
        )
        assert response.status_code == 400
        text = response.content.decode()
    assert "The database rejects this SQL: function upper(bigint) does not exist" in text
    assert "LINE 1" not in text and "upper($1" not in text
    report.refresh_from_db()
    assert report.parameters[0]["type"] == "text"
    # Someone who may see the SQL gets the whole objection.
    sql_author = persona("superuser")
    response = client_for(sql_author).patch(
        f"/api/reports/{report.slug}/", {"parameters": integer}, format="json"
    )
    assert "LINE 1" in response.content.decode()


def test_a_delivery_error_is_whole_for_authors_and_redacted_for_others_in_the_api(history):
    _, succeeded, _ = history
    Delivery.objects.filter(run=succeeded, channel="webhook").update(
        last_error="HTTP 403 ask https://user:pw@help.example/desk?ticket=9 or a.b@corp.example"
    )
    for name, expected in [
        ("author", "HTTP 403 ask https://user:pw@help.example/desk?ticket=9 or a.b@corp.example"),
        ("runner", "HTTP 403 ask https://help.example/… or …@corp.example"),
    ]:
        body = client_for(persona(name)).get(f"/api/runs/{succeeded.pk}/").json()
        [webhook] = [d for d in body["deliveries"] if d["channel"] == "webhook"]
        assert webhook["last_error"] == expected, name
