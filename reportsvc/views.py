import functools

from django.conf import settings
from django.contrib.staticfiles import finders
from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponse, JsonResponse
from django.views import defaults
from django.views.decorators.http import require_safe

# Django's own error pages are HTML; under /api/ every error is JSON, as the API promises.


def _is_api(request):
    return request.path.startswith("/api/")


def bad_request(request, exception=None):
    if _is_api(request):
        if isinstance(exception, RequestDataTooBig):  # a body without a Content-Length
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            detail = f"The request body is over {limit:,} bytes, the most the API accepts."
            return JsonResponse({"detail": detail}, status=413)
        return JsonResponse({"detail": "Bad request."}, status=400)
    return defaults.bad_request(request, exception)


def permission_denied(request, exception=None):
    if _is_api(request):
        return JsonResponse({"detail": "You do not have permission to do this."}, status=403)
    return defaults.permission_denied(request, exception)


def not_found(request, exception=None):
    """JSON 404s under /api/, the usual page elsewhere."""
    if _is_api(request):
        return JsonResponse({"detail": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request):
    if _is_api(request):
        return JsonResponse({"detail": "Internal server error; it has been logged."}, status=500)
    return defaults.server_error(request)


@functools.cache
def _favicon_bytes():
    with open(finders.find("reportsvc/favicon.ico"), "rb") as icon:
        return icon.read()


@require_safe
def favicon(request):
    """/favicon.ico, which browsers ask for on every page of the admin and the API docs."""
    response = HttpResponse(_favicon_bytes(), content_type="image/vnd.microsoft.icon")
    response["Cache-Control"] = "public, max-age=86400"
    return response
