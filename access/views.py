from django.conf import settings
from django.contrib import admin
from django.shortcuts import render


def login_paused(request, original_response=None, credentials=None):
    """django-axes' answer to a login for a locked username and address: the admin's
    login page layout, saying why and for how long (AXES_LOCKOUT_CALLABLE)."""
    context = {
        **admin.site.each_context(request),
        "title": "Login paused",
        "username": (credentials or {}).get("username") or request.POST.get("username", ""),
        "failure_limit": settings.AXES_FAILURE_LIMIT,
        "minutes": max(1, round(settings.AXES_COOLOFF_TIME.total_seconds() / 60)),
    }
    return render(request, "admin/login_paused.html", context, status=429)
