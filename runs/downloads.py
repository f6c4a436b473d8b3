"""Serving run outputs: only ever from storage, by the run's recorded file name."""

from django.core.exceptions import SuspiciousFileOperation
from django.core.files.storage import default_storage
from django.http import FileResponse, HttpResponseNotModified
from django.utils.http import parse_etags
from rest_framework import status
from rest_framework.response import Response

from runs.naming import download_file_stem
from runs.selectors import download_problem


def download_file_name(run):
    return f"{download_file_stem(run)}.csv"


def download_content_type(request):
    """text/csv, or application/octet-stream for clients whose Accept header prefers it."""
    preferred = request.get_preferred_type(["text/csv", "application/octet-stream"])
    if preferred == "application/octet-stream":
        return preferred
    return "text/csv; charset=utf-8"


def csv_download_response(request, run):
    """The run's CSV as a streamed attachment; 304 for a matching ETag; 409 if none.

    For DRF views: errors are DRF responses, rendered as the client accepts.
    """
    problem = download_problem(run)
    if problem:
        return Response({"detail": problem}, status=status.HTTP_409_CONFLICT)
    etag = f'"{run.output_sha256}"'
    # If-None-Match compares weakly (RFC 9110 13.1.2): W/"x" matches "x".
    if_none_match = [
        tag.removeprefix("W/") for tag in parse_etags(request.headers.get("If-None-Match", ""))
    ]
    if etag in if_none_match or "*" in if_none_match:
        response = HttpResponseNotModified()
        response["ETag"] = etag
        return response
    try:
        file = default_storage.open(run.output.name, "rb")
    except (FileNotFoundError, SuspiciousFileOperation):
        return Response(
            {"detail": f"The output file of run {run.pk} is missing from storage."},
            status=status.HTTP_409_CONFLICT,
        )
    response = FileResponse(
        file,
        as_attachment=True,
        filename=download_file_name(run),
        content_type=download_content_type(request),
    )
    response["ETag"] = etag
    return response
