"""Every error under /api/ is JSON: oversized bodies (413), bad requests, server errors."""

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission

from reports.api import ReportViewSet
from reports.models import Report
from reports.parameters import ParameterError
from runs.models import Run
from runs.services.domain.backfill import BackfillRangeError
from runs.services.domain.queue import QueueFull
from runs.services.domain.transitions import RunNotCancellable
from tests.api_helpers import client_for, make_user

pytestmark = pytest.mark.django_db(databases="__all__")

LIMIT = settings.DATA_UPLOAD_MAX_MEMORY_SIZE


@pytest.fixture
def report():
    return Report.objects.create(name="Numbers", slug="numbers", sql="SELECT 1 AS n")


@pytest.fixture
def staff():
    user = make_user("staff", "editor", staff=True)
    user.user_permissions.add(Permission.objects.get(codename="run_report"))
    return client_for(user)


def huge_json(size):
    return b'{"name": "' + b"x" * size + b'"}'


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/reports/"),
        ("PUT", "/api/reports/numbers/"),
        ("PATCH", "/api/reports/numbers/"),
        ("POST", "/api/reports/numbers/run/"),
        ("GET", "/api/runs/"),
    ],
)
def test_a_30_mb_body_gets_a_json_413(report, staff, method, path):
    response = staff.generic(method, path, huge_json(30 << 20), content_type="application/json")
    assert response.status_code == 413
    assert response["Content-Type"] == "application/json"
    size = len(huge_json(30 << 20))
    assert response.json() == {
        "detail": f"The request body is {size:,} bytes; the API accepts at most {LIMIT:,}."
    }
    assert Report.objects.count() == 1 and Report.objects.get().name == "Numbers"
    assert not Run.objects.exists()


def test_a_body_at_the_limit_is_read_as_usual(report, staff):
    body = huge_json(LIMIT - len(huge_json(0)))
    assert len(body) == LIMIT
    response = staff.generic("POST", "/api/reports/", body, content_type="application/json")
    assert response.status_code == 400  # read and validated: the name is too long
    assert "name" in response.json()


def test_anonymous_oversized_bodies_get_413_before_anything_reads_them(report):
    response = client_for().generic("POST", "/api/reports/", huge_json(LIMIT + 1))
    assert response.status_code == 413 and "detail" in response.json()


def test_a_content_length_that_is_not_a_number_gets_a_json_400(report, staff):
    response = staff.generic(
        "POST", "/api/reports/", b"{}", content_type="application/json", CONTENT_LENGTH="12abc"
    )
    assert response.status_code == 400
    assert response.json() == {"detail": "Content-Length must be a number of bytes, not '12abc'."}


def test_a_disallowed_host_gets_a_json_400(report, staff):
    response = staff.get("/api/reports/", HTTP_HOST="evil.example.com")
    assert response.status_code == 400
    assert response.json() == {"detail": "Bad request."}


def test_an_unexpected_error_gets_a_json_500(report, staff, monkeypatch):
    def broken(self, request, *args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(ReportViewSet, "list", broken)
    staff.raise_request_exception = False
    response = staff.get("/api/reports/")
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error; it has been logged."}


def test_the_admin_keeps_html_error_pages(admin_client):
    response = admin_client.post(
        "/admin/reports/report/add/",
        b"name=" + b"x" * (30 << 20),
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.parametrize(
    ("refusal", "status", "body"),
    [
        (ParameterError("region", "Use EU or US."), 400, {"parameters.region": ["Use EU or US."]}),
        (ParameterError("parameters", "Not an object."), 400, {"parameters": ["Not an object."]}),
        (BackfillRangeError("end", "Too late."), 400, {"end": ["Too late."]}),
        (QueueFull("Too many runs waiting."), 409, {"detail": "Too many runs waiting."}),
        (RunNotCancellable("Run 7 has ended."), 409, {"detail": "Run 7 has ended."}),
    ],
)
def test_a_service_refusal_gets_the_same_answer_from_any_view(
    report, staff, monkeypatch, refusal, status, body
):
    def refusing(self, request, *args, **kwargs):
        raise refusal

    monkeypatch.setattr(ReportViewSet, "list", refusing)
    response = staff.get("/api/reports/")
    assert response.status_code == status
    assert response.json() == body
