import logging
import time

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
