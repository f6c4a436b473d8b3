from django.http import JsonResponse
from django.views.defaults import page_not_found


def not_found(request, exception=None):
    """JSON 404s under /api/, the usual page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    return page_not_found(request, exception)
