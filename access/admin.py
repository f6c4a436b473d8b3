from axes.models import AccessFailureLog, AccessLog
from django.conf import settings
from django.contrib import admin
from django.template.response import TemplateResponse

from access.models import ApiToken, TokenFailureWindow
from access.services.tokens import issue_key
from reportsvc.web.display import moment

# django-axes keeps neither log here (AXES_DISABLE_ACCESS_LOG, no failure log): its
# access attempts, the locks, are what the admin shows.
admin.site.unregister(AccessLog)
admin.site.unregister(AccessFailureLog)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are personal: superusers make and see everyone's, other users with the
    token permissions only their own. The key is shown once, on the page after Save."""

    list_display = ("__str__", "user", "created_at")
    list_select_related = ("user",)
    search_fields = ("name", "user__username")

    @admin.display(description="created", ordering="created")
    def created_at(self, token):
        return moment(token.created)

    def get_queryset(self, request):
        tokens = super().get_queryset(request)
        return tokens if request.user.is_superuser else tokens.filter(user=request.user)

    def get_fields(self, request, obj=None):
        if obj is not None:
            return ("user", "name", "created_at")
        return ("user", "name") if request.user.is_superuser else ("name",)

    def get_readonly_fields(self, request, obj=None):
        return ("user", "created_at") if obj is not None else ()

    def save_model(self, request, obj, form, change):
        if not change:
            if not request.user.is_superuser:
                obj.user = request.user
            obj.new_key = issue_key(obj)
        super().save_model(request, obj, form, change)

    def response_add(self, request, obj, post_url_continue=None):
        """The key, once: it is not kept, so this page is the only place it appears (the
        admin's pages are never cached)."""
        context = {
            **self.admin_site.each_context(request),
            "title": "API token made",
            "opts": self.opts,
            "token": obj,
            "key": obj.new_key,
            "api_url": f"{settings.PUBLIC_BASE_URL}/api/reports/",
        }
        return TemplateResponse(request, "admin/access/apitoken/key_once.html", context)


@admin.register(TokenFailureWindow)
class TokenFailureWindowAdmin(admin.ModelAdmin):
    """Addresses that sent invalid tokens; deleting one lifts its pause now."""

    list_display = ("address", "failures", "window_started", "paused")
    ordering = ("-started_at",)

    @admin.display(description="window started", ordering="started_at")
    def window_started(self, window):
        return moment(window.started_at)

    @admin.display(boolean=True, description="tokens refused")
    def paused(self, window):
        return window.failures >= settings.TOKEN_FAILURE_LIMIT

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
