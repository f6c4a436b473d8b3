"""OpenAPI pieces the endpoints of both apps declare: errors and file downloads."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, inline_serializer
from rest_framework import serializers

ERROR = inline_serializer("Error", fields={"detail": serializers.CharField()})
# The component is added by reportsvc.openapi (a map drf-spectacular cannot derive).
VALIDATION_ERROR = OpenApiResponse(
    {"$ref": "#/components/schemas/ValidationError"},
    description="Invalid input: each field (or header) with its messages.",
)


CSV_FILE = OpenApiResponse(
    OpenApiTypes.BINARY,
    description="The CSV file (UTF-8, a header row first), streamed. `text/csv; "
    "charset=utf-8`, or `application/octet-stream` to clients whose Accept header "
    "prefers that; the bytes are the same.",
)
# Binary first: clients that read the first listed type (openapi-python-client) then
# read bytes; text/* would make them decode the file as text.
CSV_DOWNLOAD_RESPONSES = {
    (200, "application/octet-stream"): CSV_FILE,
    (200, "text/csv"): CSV_FILE,
    304: OpenApiResponse(description="Not modified: If-None-Match matched the ETag."),
    404: ERROR,
    409: OpenApiResponse(ERROR, description="There is no output (yet, or any more)."),
}
ETAG = OpenApiParameter(
    "ETag",
    str,
    OpenApiParameter.HEADER,
    response=[200, 304],
    required=True,
    description='The SHA-256 of the file (the run\'s `output_sha256`) in double quotes: `"<hex>"`.',
)
CSV_DOWNLOAD_PARAMETERS = [
    OpenApiParameter(
        "format",
        str,
        OpenApiParameter.QUERY,
        enum=["json", "csv"],
        description="Only changes how errors are written: `json` (the default) or "
        "`csv` (the one-row CSV that clients accepting only text/csv get). The file is "
        "the same either way.",
    ),
    OpenApiParameter(
        "If-None-Match",
        str,
        OpenApiParameter.HEADER,
        description="ETags of copies you have (or `*`): if one is the file's, the answer "
        "is 304 with no body.",
    ),
    ETAG,
    OpenApiParameter(
        "Content-Disposition",
        str,
        OpenApiParameter.HEADER,
        response=[200],
        required=True,
        description="`attachment`, with a readable file name: "
        '`attachment; filename="<report>_<YYYY-MM-DD_HHMM>_run<id>.csv"`.',
    ),
    OpenApiParameter(
        "Content-Length", int, OpenApiParameter.HEADER, response=[200], description="Bytes."
    ),
]
