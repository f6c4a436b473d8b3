"""The report page's form: parameters as rows, the data source as a choice of configured
sources, a report's times in its zone, and the dangerous actions apart."""

import html as html_module
import re
from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import Permission

from reports.models import Report
from runs.models import Run
from tests.api_helpers import make_user
from tests.test_admin import form_data

pytestmark = pytest.mark.django_db(databases="__all__")

SQL = "SELECT {{ region }} AS region, {{ day }} AS day, {{ min_rows }} AS n"
DECLARED = [
    {
        "name": "region",
        "type": "choice",
        "label": "Region",
        "default": "EU",
        "choices": ["EU", "US", "Asia, Pacific"],
    },
    {"name": "day", "type": "date", "label": "Day", "default": "interval_start"},
    {"name": "min_rows", "type": "integer", "label": "Fewest rows", "default": "10"},
]


@pytest.fixture
def admin_client(client):
    user = make_user("ops", staff=True)
    user.is_superuser = True
    user.save()
    client.force_login(user)
    return client


def rows_data(rows, initial=0):
    """The POST fields of parameter rows, as the page sends them."""
    data = {
        "parameters-TOTAL_FORMS": str(len(rows)),
        "parameters-INITIAL_FORMS": str(initial),
        "parameters-MIN_NUM_FORMS": "0",
        "parameters-MAX_NUM_FORMS": "50",
    }
    for index, row in enumerate(rows):
        for key in ("name", "type", "label", "default", "choices"):
            data[f"parameters-{index}-{key}"] = row.get(key, "text" if key == "type" else "")
        if row.get("DELETE"):
            data[f"parameters-{index}-DELETE"] = "on"
    return data


def row_html(page, number):
    """The HTML of row ``number`` (1-based) of the parameter table."""
    match = re.search(
        rf'<tr class="rs-parameter-row[^"]*" data-row="{number}">(.*?)</tr>', page, re.S
    )
    assert match, f"no row {number}"
    return match[1]


def cell(row, key):
    match = re.search(rf'<td class="rs-row-{key}">(.*?)</td>', row, re.S)
    return match[1]


def text_of(fragment):
    return html_module.unescape(re.sub(r"<[^>]+>", " ", fragment))


def report_with_parameters(**fields):
    fields = {"sql": SQL, "parameters": list(DECLARED), **fields}
    return Report.objects.create(name="Regions", slug="regions", **fields)


def test_the_page_shows_parameters_as_rows_not_json(admin_client):
    report = report_with_parameters()
    page = admin_client.get(f"/admin/reports/report/{report.pk}/change/").content.decode()
    assert 'id="parameter-rows"' in page
    assert '"choices": [' not in page and "&quot;choices&quot;" not in page  # no JSON box
    first = row_html(page, 1)
    assert 'value="region"' in cell(first, "name")
    assert '<option value="choice" selected>' in cell(first, "type")
    assert 'value="Region"' in cell(first, "label") and 'value="EU"' in cell(first, "default")
    assert "EU\nUS\nAsia, Pacific</textarea>" in cell(first, "choices")
    assert 'value="interval_start"' in cell(row_html(page, 2), "default")
    assert 'value="10"' in cell(row_html(page, 3), "default")
    # A blank row to add one, and a template row for the script's "Add a parameter".
    blank = cell(row_html(page, 4), "name")
    assert 'name="parameters-3-name"' in blank and "value=" not in blank
    assert 'aria-label="Name"' in blank
    assert 'id="parameter-row-template"' in page and "parameters-__prefix__-name" in page
    # Each type says what its default looks like.
    assert "<dt>date</dt><dd>YYYY-MM-DD, or interval_start / interval_end</dd>" in page


def test_rows_round_trip_to_the_stored_json(admin_client):
    report = report_with_parameters()
    url = f"/admin/reports/report/{report.pk}/change/"
    rows = [{**item, "choices": "\n".join(item.get("choices", []))} for item in DECLARED]
    body = {**form_data(name="Regions", slug="regions", sql=SQL), **rows_data([*rows, {}], 3)}
    response = admin_client.post(url, body)
    assert response.status_code == 302, response.content.decode()[-3000:]
    report.refresh_from_db()
    assert report.parameters == [
        {**DECLARED[0]},
        {**DECLARED[1]},
        {**DECLARED[2]},
    ]
    # Saved again as shown: nothing changes, and no new version is recorded.
    versions = report.history.count()
    assert admin_client.post(url, body).status_code == 302
    report.refresh_from_db()
    assert report.parameters == DECLARED and report.history.count() == versions


def test_rows_add_change_and_delete_parameters(admin_client):
    report = report_with_parameters(sql="SELECT {{ region }} AS region", parameters=[DECLARED[0]])
    url = f"/admin/reports/report/{report.pk}/change/"
    rows = [
        {"name": "region", "type": "choice", "choices": "EU\n US \n\n", "default": "US"},
        {"name": "note", "type": "text", "label": "", "default": "  spaced  "},
        {"name": "gone", "type": "integer", "DELETE": True},
        {},  # the blank row the page offers
    ]
    body = {
        **form_data(name="Regions", slug="regions", sql="SELECT {{ region }}, {{ note }}"),
        **rows_data(rows, 1),
    }
    response = admin_client.post(url, body)
    assert response.status_code == 302, response.content.decode()[-3000:]
    report.refresh_from_db()
    assert report.parameters == [
        {
            "name": "region",
            "type": "choice",
            "label": "Region",
            "default": "US",
            "choices": ["EU", "US"],
        },
        {"name": "note", "type": "text", "label": "Note", "default": "  spaced  "},
    ]


@pytest.mark.parametrize(
    ("row", "number", "key", "message"),
    [
        ({"name": "a b"}, 1, "name", "A parameter's name is letters, digits and underscores"),
        ({"name": "interval_start"}, 1, "name", "is built in"),
        ({"name": "n", "type": "integer", "default": "ten"}, 1, "default", "is not a whole number"),
        ({"name": "n", "type": "text", "choices": "a\nb"}, 1, "choices", "Only choice parameters"),
        ({"name": "n", "type": "choice", "default": "x"}, 1, "choices", "lists its allowed values"),
        (
            {"name": "n", "type": "choice", "choices": "EU", "default": "US"},
            1,
            "default",
            "not allowed",
        ),
        (
            {"name": "n", "type": "text", "default": "interval_end"},
            1,
            "default",
            "Only date and timestamp",
        ),
        ({"label": "A label, no name"}, 1, "name", "Name the parameter"),
        ({"name": "n", "type": "money"}, 1, "type", "Select a valid choice"),
        ({"name": "n" * 64}, 1, "name", "at most 63 characters"),
        ({"name": "n", "label": "x" * 201}, 1, "label", "at most 200 characters"),
        ({"name": "n", "default": "a\x00b"}, 1, "default", "Null characters are not allowed"),
        ({"name": "n", "default": "x" * 10_001}, 1, "default", "at most 10000 characters"),
    ],
)
def test_a_bad_row_is_marked_and_nothing_is_saved(admin_client, row, number, key, message):
    report = Report.objects.create(name="Plain", slug="plain", sql="SELECT 1 AS one")
    body = {**form_data(name="Plain", slug="plain", sql="SELECT 1 AS one"), **rows_data([row, {}])}
    response = admin_client.post(f"/admin/reports/report/{report.pk}/change/", body)
    assert response.status_code == 200
    page = response.content.decode()
    marked = row_html(page, number)
    assert message in text_of(cell(marked, key)), text_of(marked)
    assert f"parameter row {number}" in text_of(page).lower()  # the field's summary
    report.refresh_from_db()
    assert report.parameters == []
    # What was typed is still there to fix.
    if row.get("name") and len(row["name"]) < 64:
        assert f'value="{html_module.escape(row["name"])}"' in cell(marked, "name")


def test_the_second_of_two_rows_named_alike_is_marked(admin_client):
    rows = [{"name": "n"}, {"name": "n"}]
    response = admin_client.post("/admin/reports/report/add/", {**form_data(), **rows_data(rows)})
    page = response.content.decode()
    assert "declared twice" in text_of(cell(row_html(page, 2), "name"))
    assert "declared twice" not in text_of(row_html(page, 1))
    assert "Parameter row 2 (n), name: 'n' is declared twice." in text_of(page)
    assert not Report.objects.exists()


def test_a_scheduled_report_needs_a_default_in_the_row(admin_client):
    rows = [{"name": "n", "type": "integer", "default": "1"}, {"name": "m", "type": "integer"}]
    body = {**form_data(sql="SELECT {{ n }}, {{ m }}", schedule="0 6 * * *"), **rows_data(rows)}
    page = admin_client.post("/admin/reports/report/add/", body).content.decode()
    assert "needs a default" in text_of(cell(row_html(page, 2), "default"))
    assert not Report.objects.exists()


def test_too_many_rows_are_refused(admin_client):
    rows = [{"name": f"p{number}", "default": "x"} for number in range(51)]
    page = admin_client.post("/admin/reports/report/add/", {**form_data(), **rows_data(rows)})
    assert "A report has at most 50 parameters." in page.content.decode()
    assert not Report.objects.exists()


def test_a_huge_row_count_is_refused_without_building_the_rows(admin_client):
    body = {**form_data(), **rows_data([]), "parameters-TOTAL_FORMS": "100000000"}
    page = admin_client.post("/admin/reports/report/add/", body)
    assert page.status_code == 200
    assert "A report has at most 50 parameters." in page.content.decode()
    assert not Report.objects.exists()


def test_a_post_without_rows_may_send_the_list_as_json(admin_client):
    """Scripts that post the form keep working: the list as JSON, as before."""
    body = form_data(sql="SELECT {{ n }} AS n", parameters='[{"name": "n", "type": "integer"}]')
    assert admin_client.post("/admin/reports/report/add/", body).status_code == 302
    assert Report.objects.get().parameters == [
        {"name": "n", "type": "integer", "label": "N", "default": None}
    ]


def test_rows_need_the_change_permission(client):
    report = report_with_parameters()
    viewer = make_user("viewer", staff=True)
    viewer.user_permissions.set(
        Permission.objects.filter(codename__in=["view_report", "view_report_sql"])
    )
    client.force_login(viewer)
    page = client.get(f"/admin/reports/report/{report.pk}/change/").content.decode()
    assert 'id="parameter-rows"' not in page
    table = page.split('id="parameters-table"')[1].split("</table>")[0]
    assert "<td><code>region</code></td><td>choice</td><td>Region</td><td>EU</td>" in table
    assert "<td>EU, US, Asia, Pacific</td>" in table
    body = {**form_data(name="Regions", slug="regions", sql=SQL), **rows_data([{"name": "x"}])}
    assert client.post(f"/admin/reports/report/{report.pk}/change/", body).status_code == 403
    report.refresh_from_db()
    assert report.parameters == DECLARED


# --- The data source ---------------------------------------------------------------------


def test_the_data_source_is_a_choice_of_configured_sources(admin_client, settings):
    page = admin_client.get("/admin/reports/report/add/").content.decode()
    select = re.search(r'<select name="data_source"[^>]*>(.*?)</select>', page, re.S)
    assert select, "the data source is not a choice"
    values = re.findall(r'<option value="([^"]*)"', select[1])
    assert values == sorted(settings.REPORT_DATA_SOURCES)
    assert "(demo, " in select[1]  # the demo source says so, and its vendor


def test_a_source_not_configured_is_refused(admin_client):
    body = form_data(data_source="elsewhere")
    page = admin_client.post("/admin/reports/report/add/", body).content.decode()
    assert "Select a valid choice. elsewhere is not one of the available choices." in page
    assert not Report.objects.exists()


def test_a_stored_source_no_longer_configured_is_named_and_must_be_replaced(admin_client):
    report = Report.objects.create(name="Old", slug="old", sql="SELECT 1 AS one")
    Report.objects.filter(pk=report.pk).update(data_source="warehouse")  # its URL was removed
    url = f"/admin/reports/report/{report.pk}/change/"
    page = admin_client.get(url).content.decode()
    assert '<option value="warehouse" selected>warehouse (no longer configured)</option>' in page
    message = (
        "The data source &#x27;warehouse&#x27; is no longer configured "
        "(REPORTING_DATABASE_URL_WAREHOUSE is not set): choose one of default"
    )
    assert message in page
    # Kept as it is, the save is refused with that message, nothing changed.
    body = form_data(name="Old", slug="old", sql="SELECT 2 AS two", data_source="warehouse")
    response = admin_client.post(url, body)
    assert response.status_code == 200
    assert 'class="errorlist' in response.content.decode()
    assert message in response.content.decode()
    report.refresh_from_db()
    assert (report.data_source, report.sql) == ("warehouse", "SELECT 1 AS one")
    # A configured one fixes it.
    response = admin_client.post(url, {**body, "data_source": "default"})
    assert response.status_code == 302
    report.refresh_from_db()
    assert (report.data_source, report.sql) == ("default", "SELECT 2 AS two")


def test_a_source_name_is_escaped_in_the_page(admin_client):
    report = Report.objects.create(name="Odd", slug="odd", sql="SELECT 1 AS one")
    Report.objects.filter(pk=report.pk).update(data_source="<b>x</b>")
    page = admin_client.get(f"/admin/reports/report/{report.pk}/change/").content.decode()
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page


# --- Times in the report's zone, buttons ---------------------------------------------------


def test_a_reports_times_are_in_its_zone_and_say_so(admin_client):
    report = report_with_parameters(schedule="0 6 * * *", timezone="Europe/Berlin")
    Report.objects.filter(pk=report.pk).update(
        next_run_at=datetime(2026, 12, 8, 5, 0, tzinfo=UTC),
        created_at=datetime(2026, 7, 1, 10, 0, tzinfo=UTC),
    )
    page = admin_client.get(f"/admin/reports/report/{report.pk}/change/").content.decode()
    assert '2026-12-08 06:00:00 CET <span class="rs-zone">(Europe/Berlin)</span>' in page
    assert '2026-07-01 12:00:00 CEST <span class="rs-zone">(Europe/Berlin)</span>' in page
    assert "At 06:00, in Europe/Berlin:" in page  # the next five runs
    assert "2026-12-08 05:00:00 UTC" not in page


def test_run_with_parameters_fills_in_times_as_its_inputs_ask_for_them(admin_client):
    report = report_with_parameters(schedule="0 6 * * *", timezone="Europe/Berlin")
    page = admin_client.get(
        f"/admin/reports/report/{report.pk}/run-with-parameters/"
    ).content.decode()
    start = re.search(r'<input type="text" name="interval_start" value="([^"]*)"[^>]*>', page)
    assert start and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", start[1]), start
    assert 'class="rs-moment"' in start[0] and 'placeholder="YYYY-MM-DD HH:MM"' in start[0]
    assert "A date and time in Europe/Berlin" in page
    assert "+01:00" not in re.sub(r"e\.g\.[^<]*", "", page.split('id="content-main"')[1])
    # Sent back as filled in, it queues a run over that interval in the report's zone.
    body = {
        "interval_start": "2026-11-26 06:00",
        "interval_end": "2026-11-27 06:00",
        "region": "US",
        "day": "",
        "min_rows": "10",
    }
    url = f"/admin/reports/report/{report.pk}/run-with-parameters/"
    assert admin_client.post(url, body).status_code == 302
    run = Run.objects.get()
    assert run.interval_start == datetime(2026, 11, 26, 5, 0, tzinfo=UTC)


def test_the_backfill_preview_lists_times_in_the_reports_zone(admin_client):
    report = Report.objects.create(
        name="Daily", slug="daily", sql="SELECT 1", schedule="0 6 * * *", timezone="Europe/Berlin"
    )
    url = f"/admin/reports/report/{report.pk}/backfill/"
    page = admin_client.get(url).content.decode()
    assert "a date, or a date and time, in Europe/Berlin" in page
    page = admin_client.post(url, {"start": "2026-11-16", "end": "2026-11-18"}).content.decode()
    assert "times in Europe/Berlin" in page
    shown = " ".join(text_of(page).split())
    assert "2026-11-16 06:00:00 CET" in shown and "05:00:00 UTC" not in shown


def test_dangerous_actions_stand_apart_from_run_now(admin_client):
    report = report_with_parameters()
    page = admin_client.get(f"/admin/reports/report/{report.pk}/change/").content.decode()
    tools = page.split('class="object-tools"')[1].split("</ul>")[0]
    assert 'id="run-now"' in tools and "rotate-webhook-secret" not in tools
    zone = page.split('id="danger-zone"')[1].split("</fieldset>")[0]
    assert 'form="rotate-webhook-secret-form"' in zone and 'id="delete-report"' in zone
    assert 'class="deletelink"' not in page  # one Delete, among the dangerous actions
    assert "🔑" not in page and "▶" not in page
    # The rotate form sits outside the change form: forms do not nest.
    change_form = page.split('id="report_form"')[1]
    assert 'id="rotate-webhook-secret-form"' not in change_form
    assert 'id="rotate-webhook-secret-form"' in page


def test_a_default_that_reads_like_sql_stays_one_value(admin_client):
    """A row's default never becomes SQL: the run quotes it as one text value."""
    from runs.services.infrastructure.preview import preview_rows
    from runs.services.runtime.runner import run_report_now

    smuggled = "x'); DROP TABLE demo_orders; SELECT ('"
    rows = [{"name": "note", "type": "text", "default": smuggled}, {}]
    body = {**form_data(sql="SELECT {{ note }} AS note"), **rows_data(rows)}
    assert admin_client.post("/admin/reports/report/add/", body).status_code == 302
    report = Report.objects.get()
    assert report.parameters[0]["default"] == smuggled
    run = run_report_now(report)
    assert run.status == "succeeded" and run.row_count == 1, run.error
    assert [cell.text for cell in preview_rows(run).rows[0]] == [smuggled]


def test_a_stored_type_no_longer_known_is_shown_and_refused_at_its_row(admin_client):
    report = Report.objects.create(name="Odd", slug="odd", sql="SELECT 1 AS one")
    Report.objects.filter(pk=report.pk).update(parameters=[{"name": "n", "type": "money"}])
    url = f"/admin/reports/report/{report.pk}/change/"
    page = admin_client.get(url).content.decode()
    assert '<option value="money" selected>money (unknown)</option>' in cell(
        row_html(page, 1), "type"
    )
    body = {
        **form_data(name="Odd", slug="odd", sql="SELECT 1 AS one"),
        **rows_data([{"name": "n", "type": "money"}], 1),
    }
    page = admin_client.post(url, body).content.decode()
    assert "Select a valid choice" in text_of(cell(row_html(page, 1), "type"))
    report.refresh_from_db()
    assert report.parameters == [{"name": "n", "type": "money"}]
