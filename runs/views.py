from http import HTTPStatus

from django.db import DatabaseError, connection
from django.http import Http404, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.utils.cache import patch_vary_headers
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt

from access.metrics_access import metrics_refusal
from runs.selectors import scheduler_health, worker_health
from runs.services.infrastructure.metrics import CONTENT_TYPE, metrics_body


@never_cache
def healthz(request):
    """No authentication, no secrets: is the database reachable, is a worker alive, is
    a worker scheduling (runs.selectors.scheduler_health). A section that is not ok
    says why in its ``problem``.

    ``?scope=web`` checks the database only: the web container's own health, which
    should not turn bad because the workers are down or not scheduling.
    """
    web_only = request.GET.get("scope") == "web"
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        if web_only:
            sections = {"workers": {"ok": True}}
        else:
            sections = {"workers": worker_health(), "scheduler": scheduler_health()}
        database = "ok"
    except DatabaseError:
        database, sections = "unreachable", {"workers": {"ok": False}}
    healthy = database == "ok" and all(section["ok"] for section in sections.values())
    body = {"status": "ok" if healthy else "unhealthy", "database": database, **sections}
    return JsonResponse(body, status=200 if healthy else 503)


@never_cache
@csrf_exempt  # read-only; and a CSRF refusal would tell a POST that the address exists
def metrics(request):
    """Prometheus metrics, read from the database now (runs.services.infrastructure.metrics), for a
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
