"""What the API's queuing endpoints share (run, backfill, rerun): the Idempotency-Key
and the 202 answer (their errors: reportsvc.web.errors)."""

from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.reverse import reverse

from reports.throttling import RUN_TRIGGER_SCOPE, SharedScopedRateThrottle
from reportsvc.text import storage_problem
from reportsvc.web.permissions import CanRunReports
from reportsvc.web.schema import ERROR
from runs.serializers import RunSerializer

# Every endpoint that queues runs: a POST on one object, needing run_report, counted by
# the run-trigger throttle all web processes share.
QUEUING_ACTION_OPTIONS = {
    "detail": True,
    "methods": ["post"],
    "permission_classes": [CanRunReports],
    "throttle_classes": [SharedScopedRateThrottle],
    "throttle_scope": RUN_TRIGGER_SCOPE,
}
THROTTLED = OpenApiResponse(
    ERROR, description="Too many triggers from this user (API_RUN_THROTTLE_RATE)."
)
QUEUE_FULL = OpenApiResponse(
    ERROR, description="The report has REPORT_MAX_QUEUED_RUNS runs waiting already."
)

IDEMPOTENCY_KEY_MAX_LENGTH = 255
# Swagger UI's "Try it out" sends the first example: one that every report accepts.
RUN_EXAMPLES = [
    OpenApiExample(
        "Defaults",
        value={},
        request_only=True,
        description="The declared parameters' defaults, over the latest complete interval.",
    ),
    OpenApiExample(
        "With values",
        value={"parameters": {"status": "refunded", "interval_end": "2026-11-26T06:00:00+01:00"}},
        request_only=True,
        description="Values by name (the demo's daily-revenue report declares `status`) "
        "and the end of the data interval; other reports declare other names.",
    ),
]

RUN_PARAMETERS = [
    OpenApiParameter(
        "Idempotency-Key",
        {"type": "string", "maxLength": IDEMPOTENCY_KEY_MAX_LENGTH},
        OpenApiParameter.HEADER,
        description="Makes retrying safe. A key already used for this report in the last "
        "24 hours (by anyone) gets the run it queued back, with `Idempotent-Replayed: "
        "true`, instead of a new run. At most 255 characters; spaces around it are "
        "ignored; without a key every request queues a run.",
    ),
    OpenApiParameter(
        "Location",
        {"type": "string", "format": "uri"},
        OpenApiParameter.HEADER,
        response=[202],
        required=True,
        description="The run's URL (`/api/runs/{id}/`, absolute): poll it.",
    ),
    OpenApiParameter(
        "Idempotent-Replayed",
        {"type": "string", "enum": ["true"]},
        OpenApiParameter.HEADER,
        response=[202],
        description="`true` when the Idempotency-Key was used before and the run is the "
        "one that request queued; absent for a new run.",
    ),
    OpenApiParameter(
        "Retry-After",
        int,
        OpenApiParameter.HEADER,
        response=[429],
        description="Seconds to wait before asking again.",
    ),
]
BACKFILL_PARAMETERS = [
    RUN_PARAMETERS[0],
    OpenApiParameter(
        "Location",
        {"type": "string", "format": "uri"},
        OpenApiParameter.HEADER,
        response=[202],
        required=True,
        description="The runs list filtered to this backfill's runs "
        "(`/api/runs/?report=…&backfill=…`, absolute).",
    ),
    *RUN_PARAMETERS[2:],
]


def idempotency_key(request):
    key = request.headers.get("Idempotency-Key", "").strip()
    if len(key) > IDEMPOTENCY_KEY_MAX_LENGTH:
        raise ValidationError({"Idempotency-Key": ["Use at most 255 characters."]})
    if problem := storage_problem(key):
        raise ValidationError({"Idempotency-Key": [problem]})
    return key


def queued_run_response(request, run, created, context):
    """202 with the queued run, Location its URL; Idempotent-Replayed for a replay."""
    location = reverse("run-detail", args=[run.pk], request=request)
    response = Response(
        RunSerializer(run, context=context).data,
        status=status.HTTP_202_ACCEPTED,
        headers={"Location": location},
    )
    if not created:
        response["Idempotent-Replayed"] = "true"
    return response
