from django.contrib import admin
from django.contrib.auth.decorators import login_required
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import DefaultRouter

from reports.api import ReportViewSet, latest_output_view
from reportsvc.views import favicon
from runs.api import RunViewSet
from runs.services.formats import output_formats
from runs.views import healthz, metrics

router = DefaultRouter()
router.register("reports", ReportViewSet, basename="report")
router.register("runs", RunViewSet, basename="run")

# Routed by hand, one per format: a router would add a trailing slash to ".csv".
latest_outputs = [
    path(
        f"api/reports/<slug:slug>/latest{output_format.suffix}",
        latest_output_view(output_format),
        name=f"report-latest-{output_format.name}",
    )
    for output_format in output_formats().values()
]

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics, name="metrics"),
    path("favicon.ico", favicon, name="favicon"),
    *latest_outputs,
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # A browser page: people without a session log in to the admin first. The split
    # view loads its start-up script from ?script, so the page runs without inline
    # script under the Content-Security-Policy.
    path(
        "api/docs/",
        login_required(
            SpectacularSwaggerSplitView.as_view(
                url_name="api-schema", template_name="api/swagger_ui.html"
            ),
            login_url="admin:login",
        ),
        name="api-docs",
    ),
    path("api/", include(router.urls)),
]

handler400 = "reportsvc.views.bad_request"
handler403 = "reportsvc.views.permission_denied"
handler404 = "reportsvc.views.not_found"
handler500 = "reportsvc.views.server_error"
