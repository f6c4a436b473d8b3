"""End to end in a real browser: Debian's Chromium driven by Playwright.

Log in, open a demo report, run it, watch it succeed, open the run, see the preview,
download the CSV. Screenshots go to var/test-output/browser/. Without Chromium the test
is skipped, unless REQUIRE_BROWSER_TESTS=1 (CI sets it), when it fails instead.
"""

import csv
import io
import os
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connections
from django.utils import timezone

from reports.models import Report
from runs.models import Run, RunStatus, WorkerHeartbeat
from runs.services.runtime.leadership import acquire_lease
from tests.api_helpers import make_user
from tests.workers import WorkerProcess, process_environment

CHROMIUM = "/usr/bin/chromium"
OUTPUT_DIR = Path(__file__).resolve().parent.parent / "var" / "test-output" / "browser"
REQUIRED = os.environ.get("REQUIRE_BROWSER_TESTS") == "1"

pytestmark = [
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.long_running,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists() and not REQUIRED,
        reason=f"{CHROMIUM} is not installed (apt-get install chromium)",
    ),
]

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def worker(tmp_path, outputs_dir):
    process = WorkerProcess(tmp_path / "worker.log", process_environment(outputs_dir))
    yield process
    process.kill()


def test_run_a_report_from_the_admin_and_download_it(live_server, worker, monkeypatch):
    from playwright.sync_api import expect, sync_playwright

    call_command("seed_demo", "--no-admin", stdout=io.StringIO())
    user = make_user("ops", staff=True)
    user.is_superuser = True
    user.set_password("a-long-password-1")
    user.save()
    report = Report.objects.get(slug="daily-revenue-by-currency")
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    # Playwright's sync API runs an event loop; the ORM is only used before and after.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1400, "height": 900}, accept_downloads=True)
        page.set_default_timeout(20_000)

        page.goto(f"{live_server.url}/admin/login/")
        page.fill("#id_username", "ops")
        page.fill("#id_password", "a-long-password-1")
        page.click("input[type=submit]")
        expect(page.locator("#worker-status")).to_be_visible()

        page.goto(f"{live_server.url}/admin/reports/report/")
        expect(page.get_by_text("Daily revenue by currency")).to_be_visible()
        expect(page.get_by_text("At 06:00 (UTC)")).to_be_visible()
        page.screenshot(path=OUTPUT_DIR / "reports-list.png", full_page=True)

        page.get_by_role("link", name="Daily revenue by currency").click()
        page.click("#run-now")
        expect(page.locator(".messagelist")).to_contain_text("Queued")

        first_status = page.locator("#recent-runs tbody tr").first.locator(".run-status")
        for _ in range(60):
            if "succeeded" in first_status.inner_text().lower():
                break
            page.wait_for_timeout(500)
            page.reload()
        expect(first_status).to_contain_text("succeeded", ignore_case=True)

        page.locator("#recent-runs tbody tr").first.locator("a").first.click()
        expect(page.locator("#preview-table")).to_be_visible()
        preview_rows = page.locator("#preview-table tbody tr").count()
        header = page.locator("#preview-table thead th").all_inner_texts()
        page.screenshot(path=OUTPUT_DIR / "run-page.png", full_page=True)

        with page.expect_download() as download_info:
            page.get_by_text("Download CSV").click()
        download = download_info.value
        downloaded = Path(download.path()).read_text(encoding="utf-8")
        suggested_name = download.suggested_filename
        browser.close()

    monkeypatch.delenv("DJANGO_ALLOW_ASYNC_UNSAFE")
    run = Run.objects.filter(report=report).latest("queued_at")
    assert run.status == RunStatus.SUCCEEDED
    rows = list(csv.reader(io.StringIO(downloaded, newline="")))
    assert rows[0] == ["day", "currency", "orders", "revenue"] == [h.lower() for h in header]
    assert len(rows) - 1 == run.row_count > 0
    assert preview_rows == min(50, run.row_count)
    assert suggested_name.startswith("daily-revenue-by-currency_")
    assert (OUTPUT_DIR / "reports-list.png").stat().st_size > 10_000
    assert worker.stop() == 0


def test_admin_layout_at_1400_px_with_the_sidebar_open(live_server, monkeypatch):
    """The index keeps Recent actions beside the workers panel; the runs list shows
    every column, the error included, without scrolling sideways."""
    from playwright.sync_api import expect, sync_playwright

    from runs.services.domain.transitions import transition_run
    from tests.conftest import enqueue_run

    user = make_user("ops", staff=True)
    user.is_superuser = True
    user.set_password("a-long-password-1")
    user.save()
    report = Report.objects.create(
        name="Revenue by currency and country, last 30 days", slug="wide", sql="SELECT 1"
    )
    for number in range(3):
        run = enqueue_run(
            report, "schedule", scheduled_for=timezone.now() - timedelta(hours=number)
        )
        transition_run(run, RunStatus.RUNNING, worker="a1b2c3d4e5f6:12345")
        transition_run(
            run,
            RunStatus.FAILED,
            error='relation "reporting.orders_by_currency_and_country" does not exist\n'
            "LINE 1: SELECT * FROM reporting.orders_by_currency_and_country",
        )
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(20_000)
        page.goto(f"{live_server.url}/admin/login/")
        page.fill("#id_username", "ops")
        page.fill("#id_password", "a-long-password-1")
        page.click("input[type=submit]")

        # Without a worker: the hint wraps inside the panel.
        workers = page.locator("#worker-status").bounding_box()
        recent = page.locator("#recent-actions-module").bounding_box()
        page.screenshot(path=OUTPUT_DIR / "index-no-worker.png", full_page=True)
        assert abs(recent["y"] - workers["y"]) < 40  # side by side, at the top
        assert recent["x"] >= workers["x"] + workers["width"]
        # With one: its row stays one line high.
        WorkerHeartbeat.objects.create(
            name="a1b2c3d4e5f6:12345",
            host="a1b2c3d4e5f6",
            pid=12345,
            version="1",
            started_at=timezone.now(),
            last_seen_at=timezone.now(),
        )
        acquire_lease("a1b2c3d4e5f6:12345", 60)  # the scheduler: its badge on the same line
        connections.close_all()  # the ORM here runs in Playwright's event-loop context
        page.reload()
        row = page.locator("#worker-status tr:has(th:has-text('a1b2c3d4e5f6:12345'))")
        scheduler = page.locator("#scheduler-status").bounding_box()
        page.screenshot(path=OUTPUT_DIR / "index.png", full_page=True)
        assert row.bounding_box()["height"] < 50 and scheduler["height"] < 50, scheduler
        workers = page.locator("#worker-status").bounding_box()
        assert recent["x"] >= workers["x"] + workers["width"]
        expect(page.get_by_text("Django job")).to_have_count(0)

        page.goto(f"{live_server.url}/admin/runs/run/")
        expect(page.locator("#nav-sidebar")).to_be_visible()
        results = page.locator("#changelist-form .results")
        overflow = results.evaluate("element => element.scrollWidth - element.clientWidth")
        error_cell = page.locator("td.field-error_summary").first
        expect(error_cell).to_have_text(
            'relation "reporting.orders_by_currency_and_country" does not exist'
        )
        cell = error_cell.bounding_box()
        page.screenshot(path=OUTPUT_DIR / "runs-list.png", full_page=True)
        assert overflow <= 0, f"the runs list scrolls sideways by {overflow} px"
        assert cell["x"] + cell["width"] <= 1400

        page.locator("#result_list tbody tr").first.locator("th a, td a").first.click()
        expect(page.locator("h2").first).to_contain_text(
            "of Revenue by currency and country, last 30 days (failed)"
        )
        page.screenshot(path=OUTPUT_DIR / "run-page-failed.png", full_page=True)
        browser.close()
    monkeypatch.delenv("DJANGO_ALLOW_ASYNC_UNSAFE")


# Reports every Content-Security-Policy violation of the page, from before its first script.
RECORD_CSP_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.cspViolations.push(
    `${event.violatedDirective} blocked ${event.blockedURI || "inline"} ` +
    `(${event.sourceFile}:${event.lineNumber}) ${event.sample}`
  );
});
"""


def test_pages_work_under_the_content_security_policy_at_800_and_1400_px(live_server, monkeypatch):
    """The admin index, a report, a run with its preview and the API docs: no violation
    of the policy, and the scripts they need (confirm dialogs, Swagger UI) run."""
    from playwright.sync_api import expect, sync_playwright

    from runs.services.runtime.runner import run_report_now

    call_command("seed_demo", "--no-admin", stdout=io.StringIO())
    user = make_user("ops", staff=True)
    user.is_superuser = True
    user.set_password("a-long-password-1")
    user.save()
    report = Report.objects.get(slug="daily-revenue-by-currency")
    run = run_report_now(report)
    assert run.status == RunStatus.SUCCEEDED and run.row_count > 0
    secret = report.webhook_secret
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        for width in (800, 1400):
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.set_default_timeout(20_000)
            page.add_init_script(RECORD_CSP_VIOLATIONS)
            console = []
            page.on("console", lambda message, seen=console: seen.append(message.text))
            dialogs = []

            def dismiss(dialog, seen=dialogs):
                seen.append(dialog.message)
                dialog.dismiss()

            page.on("dialog", dismiss)
            page.goto(f"{live_server.url}/admin/login/")
            page.fill("#id_username", "ops")
            page.fill("#id_password", "a-long-password-1")
            page.click("input[type=submit]")
            expect(page.locator("#worker-status")).to_be_visible()

            def check(name, path, ready, page=page, width=width, console=console):
                response = page.goto(f"{live_server.url}{path}")
                assert "script-src 'self'" in response.headers["content-security-policy"]
                expect(page.locator(ready).first).to_be_visible()
                page.wait_for_load_state("networkidle")
                page.screenshot(path=OUTPUT_DIR / f"csp-{name}-{width}.png", full_page=True)
                violations = page.evaluate("window.cspViolations")
                refused = [text for text in console if "Content Security Policy" in text]
                assert violations == [] and refused == [], (name, width, violations, refused)

            check("index", "/admin/", "#worker-status")
            check("report", f"/admin/reports/report/{report.pk}/change/", "#recent-runs")
            # The confirm question comes from a script file; dismissed, nothing is sent.
            page.click("#rotate-webhook-secret")
            assert dialogs == [
                "Replace the webhook secret? Receivers that check signatures need the new one."
            ]
            check("run", f"/admin/runs/run/{run.pk}/change/", "#preview-table")
            assert page.locator("#preview-table tbody tr").count() == min(50, run.row_count)
            check("api-docs", "/api/docs/", ".opblock")
            # Swagger UI calls the API from the page (session and CSRF header included).
            operation = page.locator(".opblock-get", has_text="/api/reports/").first
            operation.locator(".opblock-summary").click()
            operation.get_by_role("button", name="Try it out").click()
            operation.get_by_role("button", name="Execute").click()
            expect(
                operation.locator(".live-responses-table tbody .response-col_status").first
            ).to_have_text("200")
            violations = page.evaluate("window.cspViolations")
            assert violations == [], violations
            # The check sees a violation when there is one: an inline script is refused.
            page.evaluate(
                "() => { const script = document.createElement('script');"
                " script.textContent = 'window.injected = true'; document.body.append(script); }"
            )
            page.wait_for_timeout(100)
            assert page.evaluate("window.injected") is None
            assert page.evaluate("window.cspViolations")[0].startswith(
                "script-src-elem blocked inline"
            )
            page.close()
        browser.close()
    monkeypatch.delenv("DJANGO_ALLOW_ASYNC_UNSAFE")
    report.refresh_from_db()
    assert report.webhook_secret == secret


def test_history_pages_and_the_failures_at_a_glance_fit_800_and_1400_px(live_server, monkeypatch):
    """The index with the last day's failures, a report's history, a version with its
    revert, and a failed run's page: no sideways scrolling, whatever the lines' length,
    and no violation of the Content-Security-Policy. Reverting asks first, then works."""
    from playwright.sync_api import expect, sync_playwright

    from reports.services.schedules import save_report
    from runs.services.domain.transitions import transition_run
    from tests.conftest import enqueue_run

    user = make_user("ops", staff=True)
    user.is_superuser = True
    user.set_password("a-long-password-1")
    user.save()
    wide = "x" * 400  # no place to break a line
    report = Report.objects.create(
        name="Revenue by currency and country, last 30 days",
        slug="wide",
        sql=f"SELECT 1 AS n, '{wide}' AS long_value",
    )
    save_report(
        report,
        {
            "sql": f"SELECT 2 AS n,\n  '{wide}' AS long_value,\n  '<b>markup</b>' AS tag",
            "description": f"Changed: {wide}",
            "notify_emails": "ops@example.com",
            "max_rows": 1000,
        },
        by=user,
        via="admin",
    )
    run = enqueue_run(report, "manual")
    transition_run(run, RunStatus.RUNNING, worker="a1b2c3d4e5f6:12345")
    transition_run(run, RunStatus.FAILED, error=f"relation {wide} does not exist\nLINE 1: …")
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

    pages = {
        "index": ("/admin/", "#recent-failures"),
        "history": (f"/admin/reports/report/{report.pk}/history/", "#version-2"),
        "version": (f"/admin/reports/report/{report.pk}/history/1/", "#revert"),
        "failed-run": (f"/admin/runs/run/{run.pk}/change/", "pre.rs-error"),
    }
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        for width in (800, 1400):
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.set_default_timeout(20_000)
            page.add_init_script(RECORD_CSP_VIOLATIONS)
            page.goto(f"{live_server.url}/admin/login/")
            page.fill("#id_username", "ops")
            page.fill("#id_password", "a-long-password-1")
            page.click("input[type=submit]")
            expect(page.locator("#worker-status")).to_be_visible()
            for name, (path, ready) in pages.items():
                page.goto(f"{live_server.url}{path}")
                expect(page.locator(ready).first).to_be_visible()
                page.screenshot(path=OUTPUT_DIR / f"{name}-{width}.png", full_page=True)
                overflow = page.evaluate(
                    "document.documentElement.scrollWidth - document.documentElement.clientWidth"
                )
                assert overflow <= 0, f"{name} at {width} px scrolls sideways by {overflow} px"
                assert page.evaluate("window.cspViolations") == [], (name, width)
            # The failed run's page: the error above the timings.
            error_box = page.locator("pre.rs-error").bounding_box()
            timing = page.get_by_text("Queued at").first.bounding_box()
            assert error_box["y"] < timing["y"]
            if width == 1400:
                page.goto(f"{live_server.url}/admin/reports/report/{report.pk}/history/1/")
                questions = []

                def accept(dialog, seen=questions):
                    seen.append(dialog.message)
                    dialog.accept()

                page.on("dialog", accept)
                page.click("#revert-button")
                expect(page.locator(".messagelist")).to_contain_text("this is version 3")
                assert questions == [f"Revert “{report.name}” to version 1?"]
            page.close()
        browser.close()
    monkeypatch.delenv("DJANGO_ALLOW_ASYNC_UNSAFE")
    report.refresh_from_db()
    assert report.sql.startswith("SELECT 1 AS n") and report.max_rows is None
    assert report.notify_emails == ""
