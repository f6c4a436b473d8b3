from http import HTTPStatus

from django.db import DatabaseError, connection
from django.http import Http404, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from access.metrics_access import metrics_refusal
from runs.selectors import worker_health
from runs.services.metrics import CONTENT_TYPE, metrics_text


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
@require_safe
def metrics(request):
    """Prometheus metrics, read from the database now (runs.services.metrics), for a
    scraper with the token or from an allowed network; a refusal shows nothing."""
    refusal = metrics_refusal(request)
    if refusal == HTTPStatus.NOT_FOUND:
        raise Http404  # off: the same answer as any unknown address
    if refusal == HTTPStatus.UNAUTHORIZED:
        return HttpResponse(status=refusal, headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    if refusal is not None:
        return HttpResponse(status=refusal)
    return HttpResponse(metrics_text(), content_type=CONTENT_TYPE)
