from http import HTTPStatus

from django.db import DatabaseError, connection
from django.http import Http404, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.utils.cache import patch_vary_headers
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt

from access.metrics_access import metrics_refusal
from runs.selectors import worker_health
from runs.services.metrics import CONTENT_TYPE, metrics_body


@never_cache
def healthz(request):
    """No authentication, no secrets: is the database reachable, is a worker alive.

    ``?scope=web`` checks the database only: the web container's own health, which
    should not turn bad because the worker container is down.
    """
    web_only = request.GET.get("scope") == "web"
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        workers = {"ok": True} if web_only else worker_health()
        database = "ok"
    except DatabaseError:
        database, workers = "unreachable", {"ok": False}
    healthy = database == "ok" and workers["ok"]
    body = {"status": "ok" if healthy else "unhealthy", "database": database, "workers": workers}
    return JsonResponse(body, status=200 if healthy else 503)


@never_cache
@csrf_exempt  # read-only; and a CSRF refusal would tell a POST that the address exists
def metrics(request):
    """Prometheus metrics, read from the database now (runs.services.metrics), for a
    scraper with the token or from an allowed network; a refusal shows nothing."""
    refusal = metrics_refusal(request)
    if refusal == HTTPStatus.NOT_FOUND:
        raise Http404  # off: the same answer as any unknown address, whatever the method
    if refusal == HTTPStatus.UNAUTHORIZED:
        return HttpResponse(status=refusal, headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    if refusal is not None:
        return HttpResponse(status=refusal)
    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET", "HEAD"])
    body, encoding = metrics_body(request.headers.get("Accept-Encoding", ""))
    response = HttpResponse(body, content_type=CONTENT_TYPE)
    if encoding:
        response["Content-Encoding"] = encoding
    patch_vary_headers(response, ["Accept-Encoding"])
    return response
