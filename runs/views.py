from django.db import DatabaseError, connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache

from runs.selectors import worker_health


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
