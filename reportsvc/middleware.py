import logging
import time

from django.conf import settings
from django.http import JsonResponse

logger = logging.getLogger("reportsvc.requests")


class APIRequestLogMiddleware:
    """One log line per API request: method, path, status, time, user - never the query
    string or headers, which can carry tokens."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        if request.path.startswith("/api/"):
            duration_ms = round((time.perf_counter() - started) * 1000, 1)
            user = getattr(request, "user", None)
            user_id = user.pk if user is not None and user.is_authenticated else None
            logger.info(
                "api_request %s %s %s %sms user=%s",
                request.method,
                request.path,
                response.status_code,
                duration_ms,
                user_id,
                extra={
                    "event": "api_request",
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": duration_ms,
                    "user_id": user_id,
                },
            )
        return response


class APIRequestBodyLimitMiddleware:
    """Answer an API request whose body is over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` with a
    JSON 413, from its Content-Length, before anything reads the body.

    Django would read the limit's worth and then raise RequestDataTooBig, which ends as
    an HTML 400 page; API clients are promised JSON errors.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path.startswith("/api/"):
            declared = request.META.get("CONTENT_LENGTH") or "0"
            if not declared.isdigit():
                return JsonResponse(
                    {"detail": f"Content-Length must be a number of bytes, not {declared[:40]!r}."},
                    status=400,
                )
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            if limit is not None and int(declared) > limit:
                return JsonResponse(
                    {
                        "detail": f"The request body is {int(declared):,} bytes; "
                        f"the API accepts at most {limit:,}."
                    },
                    status=413,
                )
        return self.get_response(request)
