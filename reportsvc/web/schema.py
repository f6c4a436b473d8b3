"""OpenAPI pieces the endpoints of both apps declare: errors and file downloads."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, inline_serializer
from rest_framework import serializers

from reportsvc.web.renderers import renders_csv_errors
from runs.services.formats import OCTET_STREAM, output_media_type

ERROR = inline_serializer("Error", fields={"detail": serializers.CharField()})
# The component is added by reportsvc.openapi (a map drf-spectacular cannot derive).
VALIDATION_ERROR = OpenApiResponse(
    {"$ref": "#/components/schemas/ValidationError"},
    description="Invalid input: each field (or header) with its messages.",
)


def _file_response(output_formats):
    kinds = "; ".join(
        f"{output_format.label}: `{output_media_type(output_format)}`"
        for output_format in output_formats
    )
    return OpenApiResponse(
        OpenApiTypes.BINARY,
        description=f"The file, a header row first, streamed ({kinds}); or "
        f"`{OCTET_STREAM}` to clients whose Accept header prefers that: the bytes are "
        "the same.",
    )


def download_responses(output_formats):
    """OpenAPI responses of a download that serves files of ``output_formats``."""
    file = _file_response(output_formats)
    # Binary first: clients that read the first listed type (openapi-python-client) then
    # read bytes; text/* would make them decode the file as text.
    files = {(200, OCTET_STREAM): file}
    files.update({(200, output_format.media_type): file for output_format in output_formats})
    return {
        **files,
        302: OpenApiResponse(
            description="The file is in S3-compatible object storage (`OUTPUTS_S3_BUCKET`): "
            "`Location` is a presigned URL, valid for `OUTPUTS_S3_URL_EXPIRE_SECONDS` (60 s by "
            "default), where the storage serves the same bytes with the same `Content-Type` "
            "and `Content-Disposition` as a 200 here. Follow it without the `Authorization` "
            "header (curl -L, requests and httpx drop it when the host changes)."
        ),
        304: OpenApiResponse(description="Not modified: If-None-Match matched the ETag."),
        404: ERROR,
        409: OpenApiResponse(ERROR, description="There is no output (yet, or any more)."),
        503: OpenApiResponse(
            ERROR,
            description="The file is in object storage, which cannot answer now "
            "(unreachable, refusing access, or slow: the web waits on it a few seconds at "
            "most): `detail` says which. Try again after `Retry-After` seconds.",
        ),
    }


ETAG = OpenApiParameter(
    "ETag",
    str,
    OpenApiParameter.HEADER,
    response=[200, 302, 304],
    required=True,
    description='The SHA-256 of the file (the run\'s `output_sha256`) in double quotes: `"<hex>"`.',
)
STORAGE_RETRY_AFTER = OpenApiParameter(
    "Retry-After",
    int,
    OpenApiParameter.HEADER,
    response=[503],
    required=True,
    description="Seconds to wait before asking again.",
)
PRESIGNED_LOCATION = OpenApiParameter(
    "Location",
    str,
    OpenApiParameter.HEADER,
    response=[302],
    required=True,
    description="The presigned URL of the file in object storage.",
)


def download_parameters(output_formats):
    """OpenAPI parameters of a download that serves files of ``output_formats``."""
    if renders_csv_errors(output_formats):
        error_format = OpenApiParameter(
            "format",
            str,
            OpenApiParameter.QUERY,
            enum=["json", "csv"],
            description="Only changes how errors are written: `json` (the default) or "
            "`csv` (the one-row CSV that clients accepting only text/csv get). The file is "
            "the same either way.",
        )
    else:
        error_format = OpenApiParameter(
            "format",
            str,
            OpenApiParameter.QUERY,
            enum=["json"],
            description="Only changes how errors are written: `json`, the only way here. "
            "The file is the same either way.",
        )
    extensions = " or ".join(f"`{output_format.suffix}`" for output_format in output_formats)
    return [
        error_format,
        OpenApiParameter(
            "If-None-Match",
            str,
            OpenApiParameter.HEADER,
            description="ETags of copies you have (or `*`): if one is the file's, the answer "
            "is 304 with no body.",
        ),
        ETAG,
        PRESIGNED_LOCATION,
        STORAGE_RETRY_AFTER,
        OpenApiParameter(
            "Content-Disposition",
            str,
            OpenApiParameter.HEADER,
            response=[200],
            required=True,
            description="`attachment`, with a readable file name: "
            '`attachment; filename="<report>_<YYYY-MM-DD_HHMM>_run<id><extension>"`, the '
            f"extension {extensions}.",
        ),
        OpenApiParameter(
            "Content-Length", int, OpenApiParameter.HEADER, response=[200], description="Bytes."
        ),
    ]
