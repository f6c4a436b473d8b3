from django.db import DatabaseError, connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache

from runs.selectors import scheduler_health, worker_health


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
