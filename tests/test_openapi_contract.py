"""The OpenAPI schema is a contract: what it says holds for every kind of user.

Responses are checked with a strict OpenAPI 3.0 validator (openapi-schema-validator)
against a closed copy of the schema: no property beyond those described, every required
one present, null only where the schema allows it the way OpenAPI 3.0 defines.
"""

import copy
import hashlib
import re

import pytest
from django.core.cache import cache
from openapi_schema_validator import OAS30ReadValidator, oas30_format_checker
from rest_framework.throttling import ScopedRateThrottle

from reports.models import Report
from runs.models import Delivery, Run
from runs.services.runtime.runner import run_report_now
from tests.api_helpers import client_for, make_user
from tests.conftest import enqueue_run, parse_csv_text

pytestmark = pytest.mark.django_db(databases="__all__")

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DOWNLOADS = ("/api/runs/{id}/download/", "/api/reports/{slug}/latest.csv")
GZIP, XLSX = "application/gzip", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
# Each download: the media types of its files (after application/octet-stream), and of
# its errors. Only downloads that can serve CSV write errors as CSV too.
DOWNLOAD_MEDIA_TYPES = {
    "/api/runs/{id}/download/": (["text/csv", GZIP, XLSX], ["application/json", "text/csv"]),
    "/api/reports/{slug}/latest.csv": (["text/csv"], ["application/json", "text/csv"]),
    "/api/reports/{slug}/latest.csv.gz": ([GZIP], ["application/json"]),
    "/api/reports/{slug}/latest.xlsx": ([XLSX], ["application/json"]),
}


@pytest.fixture(autouse=True)
def fresh_throttles():
    cache.clear()


def fetch_schema(user=None):
    """The live schema, fetched with a token (it may need a login)."""
    user = user or make_user("schema-reader")
    response = client_for(user).get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return response.json()


@pytest.fixture
def schema():
    return fetch_schema()


def operations(schema):
    for path, path_item in schema["paths"].items():
        for method, operation in path_item.items():
            yield path, method, operation


def closed(schema):
    """A copy of the schema in which objects may hold only the properties described."""
    result = copy.deepcopy(schema)

    def close(node):
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node:
                node["additionalProperties"] = False
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(result["components"])
    return result


def assert_matches(schema, path, method, response):
    """The response's status, required headers, media type and body are what the schema
    says."""
    documented = schema["paths"][path][method]["responses"]
    assert str(response.status_code) in documented, (path, method, response.status_code)
    headers = documented[str(response.status_code)].get("headers", {})
    required = [name for name, header in headers.items() if header.get("required")]
    assert [name for name in required if name not in response] == [], (path, method)
    content = documented[str(response.status_code)]["content"]
    media_type = response["Content-Type"].split(";")[0]
    body_schema = content[media_type]["schema"]
    validator = OAS30ReadValidator(
        {**body_schema, "components": closed(schema)["components"]},
        format_checker=oas30_format_checker,
    )
    errors = [
        f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(response.json())
    ]
    assert errors == [], (path, method, errors)


ROLES = {
    "view_report": lambda: make_user("viewer", "view"),
    "view_report+run_report": lambda: make_user("runner", "run"),
    "view_report+view_report_sql": lambda: make_user("sql-reader", "sql"),
    "editor": lambda: make_user("editor", "editor"),
    "staff with view_report": lambda: make_user("staff", "view", staff=True),
    "superuser": lambda: make_superuser("root"),
}


def make_superuser(name):
    user = make_user(name, staff=True)
    user.is_superuser = True
    user.save()
    return user


@pytest.fixture
def history():
    """A report never run, and one with a succeeded, a failed and a queued run."""
    Report.objects.create(name="Never run", slug="never", sql="SELECT 1 AS n")
    report = Report.objects.create(name="Numbers", slug="numbers", sql="SELECT 1 AS n")
    succeeded = run_report_now(report)
    Delivery.objects.create(
        run=succeeded, channel="email", target="ops@example.com", reason="finished", status="sent"
    )
    report.sql = "SELECT nope FROM missing_table"
    report.save()
    failed = run_report_now(report)
    queued = enqueue_run(report, "api")
    # Targets to redact, set after the runs so that no notification goes out.
    Report.objects.filter(pk=report.pk).update(
        notify_emails="ops@example.com", notify_webhooks="https://user:pw@hooks.example.com/T0/B0"
    )
    return report, [succeeded, failed, queued]


@pytest.mark.parametrize("role", ROLES)
def test_every_kind_of_user_gets_what_the_schema_says(role, history):
    _, runs = history
    user = ROLES[role]()
    schema = fetch_schema(user)
    api = client_for(user)
    reads = [
        ("/api/reports/", "/api/reports/"),
        ("/api/reports/{slug}/", "/api/reports/never/"),  # last_run: null
        ("/api/reports/{slug}/", "/api/reports/numbers/"),
        ("/api/runs/", "/api/runs/?page_size=2"),
        *[("/api/runs/{id}/", f"/api/runs/{run.pk}/") for run in runs],
        ("/api/reports/{slug}/history/", "/api/reports/numbers/history/"),
        ("/api/reports/{slug}/history/{number}/", "/api/reports/numbers/history/1/"),
        ("/api/reports/{slug}/history/{number}/", "/api/reports/numbers/history/2/"),
    ]
    for path, url in reads:
        response = api.get(url)
        assert response.status_code == 200, (url, response.content)
        assert_matches(schema, path, "get", response)
    # Staff status alone does not show the SQL: only view_report_sql (superusers hold it).
    sees_sql = role in ("view_report+view_report_sql", "superuser")
    assert ("sql" in api.get("/api/reports/numbers/").json()) is sees_sql
    assert api.get("/api/reports/never/").json()["last_run"] is None

    may_run = role in ("view_report+run_report", "superuser")
    triggered = api.post("/api/reports/numbers/run/", HTTP_IDEMPOTENCY_KEY="contract")
    assert triggered.status_code == (202 if may_run else 403)
    assert_matches(schema, "/api/reports/{slug}/run/", "post", triggered)
    for path, url in [(DOWNLOADS[0], f"/api/runs/{runs[2].pk}/download/")]:
        conflict = api.get(url)
        assert conflict.status_code == 409
        assert_matches(schema, path, "get", conflict)


def test_the_schema_is_the_same_for_every_user(history):
    assert fetch_schema(ROLES["view_report"]()) == fetch_schema(ROLES["superuser"]())


def test_fields_only_some_users_get_are_optional_and_the_rest_required(schema):
    components = schema["components"]["schemas"]
    for name in ("Report", "Run"):
        assert "sql" not in components[name]["required"]
        assert (
            "Sent only to holders of view_report_sql"
            in (components[name]["properties"]["sql"]["description"])
        )
        assert set(components[name]["required"]) == set(components[name]["properties"]) - {"sql"}
    assert "sql" in components["ReportRequest"]["required"]  # a report needs its SQL
    webhooks = components["Report"]["properties"]["notify_webhooks"]["description"]
    assert "In full only for users with change_report" in webhooks


def test_nullable_values_are_nullable_the_way_openapi_3_0_defines(schema):
    def walk(node, where):
        if isinstance(node, dict):
            if node.get("nullable"):
                # 3.0.3: nullable only adds null to a `type` in the same schema object.
                assert "type" in node, where
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{where}/{index}")

    walk(schema, "#")
    # A report's last run is a RunSummary or null: the component itself is nullable
    # (used nowhere else), which validators and generators all read that way.
    last_run = schema["components"]["schemas"]["Report"]["properties"]["last_run"]
    assert last_run == {"$ref": "#/components/schemas/RunSummary"}
    assert schema["components"]["schemas"]["RunSummary"]["nullable"] is True
    validator = OAS30ReadValidator({**last_run, "components": schema["components"]})
    assert validator.is_valid(None)
    assert not validator.is_valid({"id": "not a run"})


def test_request_bodies_are_json_only(schema):
    bodies = [
        (path, method, sorted(operation["requestBody"]["content"]))
        for path, method, operation in operations(schema)
        if "requestBody" in operation
    ]
    assert len(bodies) == 5  # create, update, partial update; run and backfill
    assert all(media_types == ["application/json"] for _, _, media_types in bodies), bodies
    for path, method, _ in bodies:
        assert "415" in schema["paths"][path][method]["responses"]


def test_operation_ids_are_plain_identifiers(schema):
    ids = [operation["operationId"] for _, _, operation in operations(schema)]
    assert all(IDENTIFIER.match(operation_id) for operation_id in ids), ids
    assert len(set(ids)) == len(ids)
    assert "reports_latest_csv_retrieve" in ids
    assert {"reports_latest_csv_gz_retrieve", "reports_latest_xlsx_retrieve"} <= set(ids)


def test_downloads_are_described_as_files_of_their_formats_and_their_errors(schema):
    for path, (file_types, error_types) in DOWNLOAD_MEDIA_TYPES.items():
        operation = schema["paths"][path]["get"]
        responses = operation["responses"]
        # Binary first: generated clients that pick the first type then read bytes.
        assert list(responses["200"]["content"]) == ["application/octet-stream", *file_types]
        for media_type in responses["200"]["content"].values():
            assert media_type["schema"] == {"type": "string", "format": "binary"}
        assert set(responses["200"]["headers"]) == {"ETag", "Content-Disposition", "Content-Length"}
        assert responses["304"]["headers"]["ETag"]["required"] is True
        # On object storage: a redirect to a presigned URL, with the ETag checked first.
        assert "presigned URL" in responses["302"]["description"]
        assert set(responses["302"]["headers"]) == {"ETag", "Location"}
        assert responses["302"]["headers"]["Location"]["required"] is True
        assert "content" not in responses["302"]
        for code in ("401", "403", "404", "409"):
            content = responses[code]["content"]
            assert list(content) == error_types, (path, code)
            assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
            if "text/csv" in error_types:
                assert content["text/csv"]["schema"]["type"] == "string"
                assert content["text/csv"]["schema"]["example"].startswith("detail\n")
        parameters = {parameter["name"]: parameter for parameter in operation["parameters"]}
        assert parameters["If-None-Match"]["in"] == "header"
        assert "Only changes how errors are written" in parameters["format"]["description"]
        assert sorted(parameters["format"]["schema"]["enum"]) == (
            ["csv", "json"] if "text/csv" in error_types else ["json"]
        )


def test_headers_are_documented(schema):
    run = schema["paths"]["/api/reports/{slug}/run/"]["post"]
    parameters = {parameter["name"]: parameter for parameter in run["parameters"]}
    assert parameters["Idempotency-Key"]["schema"] == {"type": "string", "maxLength": 255}
    assert "24 hours" in parameters["Idempotency-Key"]["description"]
    accepted = run["responses"]["202"]["headers"]
    assert accepted["Location"]["required"] is True
    assert accepted["Idempotent-Replayed"]["schema"]["enum"] == ["true"]
    assert "Retry-After" in run["responses"]["429"]["headers"]
    rotate = schema["paths"]["/api/reports/{slug}/rotate-webhook-secret/"]["post"]
    assert rotate["responses"]["200"]["headers"]["Cache-Control"]["schema"]["enum"] == ["no-store"]
    for path, _, operation in operations(schema):
        assert operation["responses"]["401"]["headers"]["WWW-Authenticate"]["required"], path
    token = schema["components"]["securitySchemes"]["tokenAuth"]
    assert token["name"] == "Authorization"
    assert "`Authorization: Token <key>`" in token["description"]
    runs = {
        parameter["name"]: parameter
        for parameter in schema["paths"]["/api/runs/"]["get"]["parameters"]
    }
    assert runs["page_size"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 500}
    listing = schema["components"]["schemas"]["PaginatedRunList"]
    assert listing["required"] == ["next", "previous", "results"]


# --- the server does what the schema says ------------------------------------------------


def test_a_form_body_is_refused_with_415_and_changes_nothing(history, schema):
    editor = client_for(make_superuser("root"))
    for form in ("multipart", "urlencoded"):
        if form == "multipart":
            response = editor.patch("/api/reports/numbers/", {"timeout_seconds": "None"})
        else:
            response = editor.generic(
                "PATCH",
                "/api/reports/numbers/",
                "timeout_seconds=None",
                content_type="application/x-www-form-urlencoded",
            )
        assert response.status_code == 415
        assert response.json()["detail"].startswith("Unsupported media type")
        assert_matches(schema, "/api/reports/{slug}/", "patch", response)
    assert Report.objects.get(slug="numbers").timeout_seconds is None


def test_a_body_that_is_not_json_gets_a_400_the_schema_describes(history, schema):
    editor = client_for(make_superuser("root"))
    response = editor.generic(
        "PATCH", "/api/reports/numbers/", "{not json", content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["detail"].startswith("JSON parse error")
    assert_matches(schema, "/api/reports/{slug}/", "patch", response)


def test_null_clears_a_nullable_setting(history):
    Report.objects.filter(slug="never").update(timeout_seconds=30)
    editor = client_for(make_superuser("root"))
    response = editor.patch("/api/reports/never/", {"timeout_seconds": None}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["timeout_seconds"] is None
    assert Report.objects.get(slug="never").timeout_seconds is None


def test_downloads_come_as_octet_stream_to_clients_that_prefer_it(history):
    _, (succeeded, _, queued) = history
    viewer = client_for(make_user("viewer", "view"))
    url = f"/api/runs/{succeeded.pk}/download/"
    as_csv = viewer.get(url)
    assert as_csv["Content-Type"] == "text/csv; charset=utf-8"
    body = b"".join(as_csv.streaming_content)
    assert hashlib.sha256(body).hexdigest() == succeeded.output_sha256
    for accept in ("application/octet-stream", "application/octet-stream, text/csv;q=0.5"):
        binary = viewer.get(url, HTTP_ACCEPT=accept)
        assert binary.status_code == 200
        assert binary["Content-Type"] == "application/octet-stream"
        assert b"".join(binary.streaming_content) == body
    for accept in ("text/csv, application/octet-stream;q=0.5", "*/*", "application/json"):
        assert viewer.get(url, HTTP_ACCEPT=accept)["Content-Type"] == "text/csv; charset=utf-8"
    # Errors to such a client are JSON (never a 406 for asking for bytes).
    conflict = viewer.get(
        f"/api/runs/{queued.pk}/download/", HTTP_ACCEPT="application/octet-stream"
    )
    assert conflict.status_code == 409
    assert conflict["Content-Type"] == "application/json"
    assert conflict.json() == {"detail": f"Run {queued.pk} is queued; its output is not ready yet."}
    odd = viewer.get(url, HTTP_ACCEPT="image/png")
    assert odd.status_code == 200 and odd["Content-Type"] == "text/csv; charset=utf-8"


def test_the_format_parameter_only_changes_how_errors_are_written(history):
    _, (succeeded, _, queued) = history
    viewer = client_for(make_user("viewer", "view"))
    as_csv = viewer.get(f"/api/runs/{queued.pk}/download/?format=csv")
    assert as_csv.status_code == 409
    assert as_csv["Content-Type"] == "text/csv; charset=utf-8"
    assert parse_csv_text(as_csv.content.decode()) == [
        ["detail"],
        [f"Run {queued.pk} is queued; its output is not ready yet."],
    ]
    for value in ("csv", "json"):
        file = viewer.get(f"/api/runs/{succeeded.pk}/download/?format={value}")
        assert file.status_code == 200
        assert hashlib.sha256(b"".join(file.streaming_content)).hexdigest() == (
            succeeded.output_sha256
        )
    assert viewer.get(f"/api/runs/{succeeded.pk}/download/?format=xml").status_code == 404


def test_a_replayed_trigger_says_so_in_its_headers(history, schema):
    report, _ = history
    runner = client_for(make_user("runner", "run"))
    first = runner.post("/api/reports/numbers/run/", HTTP_IDEMPOTENCY_KEY="nightly")
    again = runner.post("/api/reports/numbers/run/", HTTP_IDEMPOTENCY_KEY="nightly")
    assert first.status_code == again.status_code == 202
    assert first["Location"] == again["Location"] == first.json()["url"]
    assert "Idempotent-Replayed" not in first and again["Idempotent-Replayed"] == "true"
    too_long = runner.post("/api/reports/numbers/run/", HTTP_IDEMPOTENCY_KEY="k" * 256)
    assert too_long.status_code == 400
    assert too_long.json() == {"Idempotency-Key": ["Use at most 255 characters."]}
    assert_matches(schema, "/api/reports/{slug}/run/", "post", too_long)
    assert Run.objects.filter(report=report, idempotency_key="nightly").count() == 1


def test_a_throttled_trigger_says_when_to_ask_again(history, schema, monkeypatch):
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"report-runs": "1/minute"})
    runner = client_for(make_user("runner", "run"))
    assert runner.post("/api/reports/numbers/run/").status_code == 202
    throttled = runner.post("/api/reports/numbers/run/")
    assert throttled.status_code == 429
    assert 1 <= int(throttled["Retry-After"]) <= 60
    assert_matches(schema, "/api/reports/{slug}/run/", "post", throttled)


def test_downloads_from_object_storage_are_the_documented_redirect(s3_outputs):
    report = Report.objects.create(name="Numbers", slug="numbers", sql="SELECT 1 AS n")
    run = run_report_now(report)
    viewer = make_user("viewer", "view")
    schema = fetch_schema(viewer)
    for path, url in zip(
        DOWNLOADS, (f"/api/runs/{run.pk}/download/", "/api/reports/numbers/latest.csv"), strict=True
    ):
        response = client_for(viewer).get(url)
        assert response.status_code == 302
        documented = schema["paths"][path]["get"]["responses"]["302"]
        required = [name for name, header in documented["headers"].items() if header["required"]]
        assert [name for name in required if name not in response] == []
        assert response.content == b"" and "content" not in documented
        not_modified = client_for(viewer).get(url, HTTP_IF_NONE_MATCH=response["ETag"])
        assert not_modified.status_code == 304 and "Location" not in not_modified


def test_downloads_of_every_format_answer_as_documented(schema):
    viewer = client_for(make_user("format-viewer", "view"))
    for output_format, extension, media_type in (
        ("csv", ".csv", "text/csv"),
        ("csv_gz", ".csv.gz", GZIP),
        ("xlsx", ".xlsx", XLSX),
    ):
        slug = f"as-{output_format.replace('_', '-')}"
        report = Report.objects.create(
            name=slug, slug=slug, sql="SELECT 1 AS n", output_format=output_format
        )
        run = run_report_now(report)
        latest_path = f"/api/reports/{{slug}}/latest{extension}"
        for path, url in (
            ("/api/runs/{id}/download/", f"/api/runs/{run.pk}/download/"),
            (latest_path, f"/api/reports/{slug}/latest{extension}"),
        ):
            response = viewer.get(url)
            assert response.status_code == 200
            assert response["Content-Type"].split(";")[0] == media_type
            assert media_type in schema["paths"][path]["get"]["responses"]["200"]["content"]
            documented = schema["paths"][path]["get"]["responses"]["200"]["headers"]
            assert all(
                name in response for name, header in documented.items() if header.get("required")
            )
        # Another format's latest: 409, a documented Error.
        other = ".csv" if output_format != "csv" else ".xlsx"
        conflict = viewer.get(f"/api/reports/{slug}/latest{other}")
        assert conflict.status_code == 409
        assert_matches(schema, f"/api/reports/{{slug}}/latest{other}", "get", conflict)
