"""What a newcomer meets first in the API: Swagger's examples work, the description names
every format, the favicon is there, and the reports list comes in pages on request
without changing what clients made before pages existed get."""

import re

import pytest
from django.core.cache import cache

from reports.models import Report
from runs.services.formats import output_formats
from runs.services.runtime.runner import run_report_now
from tests.api_helpers import client_for, make_user

pytestmark = pytest.mark.django_db(databases="__all__")


@pytest.fixture(autouse=True)
def fresh_throttles():
    cache.clear()


def schema(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return response.json()


# --- Swagger UI's examples ------------------------------------------------------------


def test_swaggers_example_for_run_is_an_empty_body_every_report_accepts():
    client = client_for(make_user("runner", "run"))
    operation = schema(client)["paths"]["/api/reports/{slug}/run/"]["post"]
    examples = operation["requestBody"]["content"]["application/json"]["examples"]
    first = next(iter(examples.values()))  # what "Try it out" fills in
    assert first["value"] == {}
    declared = Report.objects.create(
        name="Declared",
        slug="declared",
        sql="SELECT {{ status }} AS status",
        parameters=[
            {
                "name": "status",
                "type": "choice",
                "label": "Status",
                "choices": ["paid", "refunded"],
                "default": "paid",
            }
        ],
    )
    plain = Report.objects.create(name="Plain", slug="plain", sql="SELECT 1 AS one")
    for report in (declared, plain):
        response = client.post(f"/api/reports/{report.slug}/run/", first["value"], format="json")
        assert response.status_code == 202, response.json()
    # The other example says which report its names belong to, and works there.
    with_values = examples["WithValues"]["value"]
    assert "daily-revenue" in examples["WithValues"]["description"]
    assert with_values["parameters"]["status"] == "refunded"
    response = client.post("/api/reports/declared/run/", with_values, format="json")
    assert response.status_code == 202, response.json()


def test_no_request_example_names_a_parameter_no_report_declares():
    text = str(schema(client_for(make_user("reader", "view"))))
    assert "region" not in text


def test_the_description_names_every_format():
    description = schema(client_for(make_user("reader", "view")))["info"]["description"]
    assert "CSV download" not in description
    for output_format in output_formats().values():
        assert re.search(rf"\b{re.escape(output_format.extension)}\b", description, re.I), (
            output_format.name
        )
    assert "Excel" in description and "gzip" in description


# --- the favicon ----------------------------------------------------------------------


def test_the_favicon_is_served_to_anyone(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/vnd.microsoft.icon"
    assert response.content[:4] == b"\x00\x00\x01\x00"  # an ICO with one image
    assert "max-age" in response["Cache-Control"]
    assert client.head("/favicon.ico").status_code == 200


def test_the_favicon_takes_no_writes(client):
    assert client.post("/favicon.ico", {"x": "y"}).status_code == 405


# --- the reports list in pages ----------------------------------------------------------


def make_reports(count):
    # Names that sort differently from their ids, and two with the same name.
    Report.objects.bulk_create(
        Report(name=f"Report {(index * 7) % count:03d}", slug=f"report-{index}", sql="SELECT 1")
        for index in range(count)
    )
    Report.objects.create(name="Report 005", slug="report-twin", sql="SELECT 1")


def pages_of(client, url):
    seen = []
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.json()
        assert isinstance(response.json(), list)  # the same shape as without pages
        seen.append(response.json())
        link = response.headers.get("Link")
        url = re.fullmatch(r'<(.+)>; rel="next"', link).group(1) if link else None
    return seen


def test_without_page_size_the_list_is_every_report_as_before():
    make_reports(30)
    client = client_for(make_user("reader", "view"))
    response = client.get("/api/reports/")
    assert response.status_code == 200
    assert "Link" not in response.headers
    assert len(response.json()) == 31


def test_pages_cover_every_report_once_in_order():
    make_reports(30)
    run_report_now(Report.objects.get(slug="report-3"))
    client = client_for(make_user("reader", "view"))
    whole = client.get("/api/reports/").json()
    pages = pages_of(client, "/api/reports/?page_size=7")
    assert [len(page) for page in pages] == [7, 7, 7, 7, 3]
    assert [report for page in pages for report in page] == whole  # last runs included
    assert pages_of(client, "/api/reports/?page_size=31") == [whole]  # no Link: no more


def test_a_page_size_past_the_most_gives_the_most():
    make_reports(3)
    client = client_for(make_user("reader", "view"))
    assert len(client.get("/api/reports/?page_size=100000").json()) == 4


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("page_size=0", "page_size"),
        ("page_size=-3", "page_size"),
        ("page_size=ten", "page_size"),
        ("page_size=" + "9" * 5000, "page_size"),
        ("page_size=5&cursor=bm90LWpzb24", "cursor"),
        ("page_size=5&cursor=WyJhIiwgIngiXQ", "cursor"),  # ["a", "x"]: no id
        ("page_size=5&cursor=%00%FF", "cursor"),
        ("cursor=" + "A" * 100000, "cursor"),
    ],
)
def test_bad_pages_are_refused_with_the_field_and_change_nothing(query, field):
    make_reports(3)
    client = client_for(make_user("reader", "view"))
    response = client.get(f"/api/reports/?{query}")
    assert response.status_code == 400
    assert field in response.json()
    assert Report.objects.count() == 4


def test_a_cursor_with_a_hostile_name_is_only_a_position():
    make_reports(3)
    import base64
    import json

    cursor = base64.urlsafe_b64encode(
        json.dumps(["'; DROP TABLE reports_report; --", 0]).encode()
    ).decode()
    client = client_for(make_user("reader", "view"))
    response = client.get(f"/api/reports/?page_size=2&cursor={cursor}")
    assert response.status_code == 200
    assert Report.objects.count() == 4


def test_pages_need_the_same_permission_as_the_list():
    make_reports(3)
    assert client_for(make_user("nobody")).get("/api/reports/?page_size=2").status_code == 403
    assert client_for().get("/api/reports/?page_size=2").status_code == 401
