"""The admin at 800 and 1400 px, in Chromium (see tests/test_browser.py): the lists keep
status, last run and the error without scrolling sideways, a report's page fits with
its SQL editor, parameter rows and times named by zone, under the Content-Security-
Policy; without JavaScript the SQL is a textarea."""

import io
import re
from datetime import UTC, datetime

from django.core.management import call_command

from reports.models import Report
from runs.services.domain.transitions import transition_run
from tests.api_helpers import make_user
from tests.conftest import enqueue_run
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, OUTPUT_DIR, RECORD_CSP_VIOLATIONS
from tests.test_browser import pytestmark as browser_marks

pytestmark = browser_marks

ERROR = 'relation "reporting.orders_by_currency_and_country" does not exist'
SQL = (
    "SELECT {{ region }} AS region, count(*) AS orders\nFROM demo_orders\n"
    "WHERE ordered_at >= {{ interval_start }} AND ordered_at < {{ interval_end }}\n"
    "GROUP BY 1"
)
OVERFLOW = "document.documentElement.scrollWidth - document.documentElement.clientWidth"


def log_in(page, base):
    page.goto(f"{base}/admin/login/")
    page.fill("#id_username", "ops")
    page.fill("#id_password", "a-long-password-1")
    page.click("input[type=submit]")
    page.wait_for_url(f"{base}/admin/")


def assert_fits(page, name, width):
    page.screenshot(path=OUTPUT_DIR / f"width-{name}-{width}.png", full_page=True)
    overflow = page.evaluate(OVERFLOW)
    assert overflow <= 0, f"{name} at {width} px scrolls sideways by {overflow} px"
    assert page.evaluate("window.cspViolations") == [], (name, width)


def assert_in_view(locator, width):
    box = locator.bounding_box()
    assert box is not None and box["width"] > 0, locator
    assert box["x"] >= 0 and box["x"] + box["width"] <= width + 0.5, (locator, box)


def test_the_admin_at_800_and_1400_px(live_server, monkeypatch):
    from playwright.sync_api import expect, sync_playwright

    call_command("seed_demo", "--no-admin", stdout=io.StringIO())
    user = make_user("ops", staff=True)
    user.is_superuser = True
    user.set_password("a-long-password-1")
    user.save()
    report = Report.objects.create(
        name="Orders by region, in Berlin time, for the whole of last week",
        slug="regions",
        sql=SQL,
        schedule="0 6 * * mon",
        timezone="Europe/Berlin",
        parameters=[
            {
                "name": "region",
                "type": "choice",
                "label": "Region",
                "default": "EU",
                "choices": ["EU", "US"],
            }
        ],
    )
    Report.objects.filter(pk=report.pk).update(next_run_at=datetime(2026, 12, 7, 5, tzinfo=UTC))
    run = enqueue_run(report, "manual")
    transition_run(run, "running", worker="a1b2c3d4e5f6:12345")
    transition_run(run, "failed", error=f"{ERROR}\nLINE 1: SELECT * FROM reporting.orders")
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    base = live_server.url

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        for width in (800, 1400):
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.set_default_timeout(20_000)
            page.add_init_script(RECORD_CSP_VIOLATIONS)
            log_in(page, base)

            # The reports list: status, last run (with the error's first line), next run.
            page.goto(f"{base}/admin/reports/report/")
            row = page.locator("#result_list tbody tr", has_text=report.name)
            for column in ("name", "next_run", "last_run"):
                assert_in_view(page.locator(f"#result_list th.column-{column}"), width)
            assert_in_view(row.locator(".rs-badge"), width)
            expect(row.locator(".rs-last-error")).to_have_text(ERROR)
            assert_in_view(row.locator(".rs-last-error"), width)
            results = page.locator("#changelist-form .results")
            assert results.evaluate("e => e.scrollWidth - e.clientWidth") <= 0, f"{width} px"
            assert_fits(page, "reports-list", width)

            # The runs list: status, started, the error's first line.
            page.goto(f"{base}/admin/runs/run/")
            for column in ("badge", "started", "error_summary"):
                assert_in_view(page.locator(f"#result_list th.column-{column}"), width)
            error_cell = page.locator("td.field-error_summary", has_text="reporting.").first
            expect(error_cell).to_have_text(ERROR)
            assert_in_view(error_cell, width)
            assert results.evaluate("e => e.scrollWidth - e.clientWidth") <= 0
            assert_fits(page, "runs-list", width)

            # The report's page: the editor, the rows, the zone, the buttons.
            page.goto(f"{base}/admin/reports/report/{report.pk}/change/")
            editor = page.locator(".rs-sql-editor .cm-editor")
            expect(editor).to_be_visible()
            expect(page.locator("textarea#id_sql")).to_be_hidden()
            expect(editor.locator(".cm-lineNumbers .cm-gutterElement", has_text="4")).to_have_count(
                1
            )
            expect(editor.locator(".cm-content")).to_contain_text("GROUP BY 1")
            assert editor.locator(".cm-content span[class]").count() > 3  # highlighted
            assert_in_view(editor, width)
            rows = page.locator("#parameter-rows tr.rs-parameter-row")
            expect(rows).to_have_count(2)  # the declared one and a blank one
            expect(rows.first.locator("input[name='parameters-0-name']")).to_have_value("region")
            assert_in_view(rows.first.locator(".rs-row-delete input"), width)
            expect(page.locator(".field-next_run_at_moment")).to_contain_text(
                "2026-12-07 06:00:00 CET (Europe/Berlin)"
            )
            expect(page.locator(".field-next_fire_times")).to_contain_text("in Europe/Berlin")
            expect(page.locator("#data_source, select[name=data_source]").first).to_be_visible()
            tools = page.locator(".object-tools")
            expect(tools.locator("#run-now")).to_be_visible()
            expect(tools.locator("#rotate-webhook-secret")).to_have_count(0)
            danger = page.locator("#danger-zone")
            expect(danger.locator("#rotate-webhook-secret")).to_be_visible()
            run_now, rotate = (
                page.locator(selector).bounding_box()
                for selector in ("#run-now", "#rotate-webhook-secret")
            )
            assert rotate["y"] > run_now["y"] + 300  # far apart
            # One button style: the object tools' pills share their shape and type.
            styles = page.eval_on_selector_all(
                ".object-tools li > a, .object-tools li button",
                "els => els.map(e => [getComputedStyle(e).borderRadius,"
                " getComputedStyle(e).textTransform, getComputedStyle(e).fontSize])",
            )
            assert len(styles) >= 4 and len({tuple(style) for style in styles}) == 1, styles
            # "Add a parameter" adds a row without a round trip.
            page.click("#add-parameter-row")
            expect(rows).to_have_count(3)
            expect(page.locator("input[name='parameters-TOTAL_FORMS']")).to_have_value("3")
            assert_fits(page, "report", width)

            # Run with parameters: times in the report's zone, wide enough to read.
            page.goto(f"{base}/admin/reports/report/{report.pk}/run-with-parameters/")
            start = page.locator("input[name=interval_start]")
            assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", start.input_value())
            assert start.evaluate("e => e.scrollWidth <= e.clientWidth")
            expect(page.locator("#content-main")).to_contain_text(
                "A date and time in Europe/Berlin"
            )
            assert_fits(page, "run-with-parameters", width)

            # The backfill preview: fire times in the zone the form names.
            page.goto(f"{base}/admin/reports/report/{report.pk}/backfill/")
            page.fill("input[name=start]", "2026-11-02")
            page.fill("input[name=end]", "2026-11-17")
            page.click("#preview-backfill")
            plan = page.locator("#backfill-plan")
            expect(plan).to_contain_text("times in Europe/Berlin")
            expect(plan).to_contain_text("2026-11-02 06:00:00 CET")
            assert_fits(page, "backfill", width)
            page.close()

        # The editor writes into the form: an edit is saved.
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(20_000)
        log_in(page, base)
        page.goto(f"{base}/admin/reports/report/{report.pk}/change/")
        page.locator(".cm-content").click()
        page.keyboard.press("Control+End")
        page.keyboard.type("\nORDER BY 1")
        page.click("input[name=_continue]")
        expect(page.locator(".messagelist")).to_contain_text("was changed successfully")
        page.close()

        # Without JavaScript: the SQL is a textarea, the rows are there.
        context = browser.new_context(
            java_script_enabled=False, viewport={"width": 800, "height": 900}
        )
        page = context.new_page()
        log_in(page, base)
        page.goto(f"{base}/admin/reports/report/{report.pk}/change/")
        expect(page.locator("textarea#id_sql")).to_be_visible()
        expect(page.locator(".cm-editor")).to_have_count(0)
        expect(page.locator("#parameter-rows tr.rs-parameter-row")).to_have_count(2)
        expect(page.locator("#add-parameter-row")).to_be_hidden()
        page.screenshot(path=OUTPUT_DIR / "width-report-no-js-800.png", full_page=True)
        assert page.evaluate(OVERFLOW) <= 0
        context.close()
        browser.close()
    monkeypatch.delenv("DJANGO_ALLOW_ASYNC_UNSAFE")
    report.refresh_from_db()
    assert report.sql.replace("\r\n", "\n") == f"{SQL}\nORDER BY 1"  # a form sends CRLF
