"""Serving run outputs: only ever from storage, by the run's recorded file name.

What a download is called and what it is (file name, media type) is runs.naming's
and runs.services.formats' to say, for any way of serving it. On the filesystem the
web sends the file itself; on S3 it answers with a redirect to a short-lived
presigned URL, and the storage sends the bytes. A storage that cannot answer gives a
503 saying why, at once or within a few seconds (runs.services.infrastructure.output_storage bounds
the wait).
"""

from django.contrib import admin
from django.core.exceptions import SuspiciousFileOperation, SuspiciousOperation
from django.core.files.storage import default_storage
from django.http import FileResponse, HttpResponseNotModified, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import parse_etags
from rest_framework import status
from rest_framework.response import Response

from runs.naming import download_file_name, output_format_of
from runs.selectors import download_problem
from runs.services.formats import OCTET_STREAM, output_media_type
from runs.services.infrastructure import output_storage


def download_content_type(request, output_format):
    """The format's media type, or application/octet-stream for clients whose Accept
    header prefers that."""
    preferred = request.get_preferred_type([output_format.media_type, OCTET_STREAM])
    if preferred == OCTET_STREAM:
        return preferred
    return output_media_type(output_format)


def output_download_response(request, run):
    """The run's file as a streamed attachment (on S3 a redirect to it); 304 for a
    matching ETag; 409 if none.

    For DRF views: errors are DRF responses, rendered as the client accepts.
    """
    problem = download_problem(run)
    if problem:
        return download_error(request, run, problem, status.HTTP_409_CONFLICT)
    etag = f'"{run.output_sha256}"'
    # If-None-Match compares weakly (RFC 9110 13.1.2): W/"x" matches "x".
    if_none_match = [
        tag.removeprefix("W/") for tag in parse_etags(request.headers.get("If-None-Match", ""))
    ]
    if etag in if_none_match or "*" in if_none_match:
        response = HttpResponseNotModified()
        response["ETag"] = etag
        return response
    file_name = download_file_name(run)
    content_type = download_content_type(request, output_format_of(run))
    if output_storage.on_object_storage():
        return redirect_to_stored_output(request, run, etag, file_name, content_type)
    try:
        file = default_storage.open(run.output.name, "rb")
    except (FileNotFoundError, SuspiciousFileOperation):
        return missing_output_response(request, run)
    response = FileResponse(file, as_attachment=True, filename=file_name, content_type=content_type)
    response["ETag"] = etag
    return response


def redirect_to_stored_output(request, run, etag, file_name, content_type):
    """302 to a presigned URL of the run's object, valid for OUTPUTS_S3_URL_EXPIRE_SECONDS,
    at which the storage serves it as the attachment ``file_name`` of ``content_type``.

    One HEAD request first, so a missing object gets the same clear 409 as a missing
    file rather than the storage's XML error after the redirect. It waits a few seconds
    at most, and only a few requests of a process wait at once: a storage that is
    unreachable, refuses or is slow gives a 503 with the reason and Retry-After.
    """
    try:
        if not output_storage.output_exists_now(run.output.name):
            return missing_output_response(request, run)
        url = output_storage.download_url(
            run.output.name, file_name=file_name, content_type=content_type
        )
    except SuspiciousOperation:
        return missing_output_response(request, run)
    except output_storage.StorageUnavailable as error:
        return download_error(
            request,
            run,
            f"The output file of run {run.pk} cannot be fetched now: {error}. Try again "
            f"in {output_storage.RETRY_AFTER_SECONDS} s.",
            status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(output_storage.RETRY_AFTER_SECONDS)},
        )
    response = HttpResponseRedirect(url)
    response["ETag"] = etag
    # The URL is a credential for a while: for this user only, never kept.
    response["Cache-Control"] = "private, no-store"
    return response


def missing_output_response(request, run):
    return download_error(
        request,
        run,
        f"The output file of run {run.pk} is missing from storage.",
        status.HTTP_409_CONFLICT,
    )


def download_error(request, run, detail, status_code, headers=None):
    """Why the run's file cannot be served: ``{"detail": …}`` as the client accepts
    (JSON, or CSV), or a page for a browser (one that prefers HTML, as when following
    the admin's download link or a link in a mail)."""
    if request.get_preferred_type(["application/json", "text/html"]) != "text/html":
        return Response({"detail": detail}, status=status_code, headers=headers)
    request = getattr(request, "_request", request)  # Django's own, under DRF's
    context = {
        **admin.site.each_context(request),
        "title": f"Download of run {run.pk}",
        "detail": detail,
        "run_page": reverse("admin:runs_run_change", args=[run.pk]),
    }
    response = render(request, "runs/download_problem.html", context, status=status_code)
    for name, value in (headers or {}).items():
        response[name] = value
    return response
