from django.contrib import admin
from django.contrib.auth.decorators import login_required
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from reports.api import ReportViewSet
from reportsvc.web.renderers import DOWNLOAD_VIEW_OPTIONS
from runs.api import RunViewSet
from runs.views import healthz

router = DefaultRouter()
router.register("reports", ReportViewSet, basename="report")
router.register("runs", RunViewSet, basename="run")

# Routed by hand: a router would add a trailing slash to ".csv".
latest_csv = ReportViewSet.as_view({"get": "latest_csv"}, **DOWNLOAD_VIEW_OPTIONS)

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("api/reports/<slug:slug>/latest.csv", latest_csv, name="report-latest-csv"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # A browser page: people without a session log in to the admin first.
    path(
        "api/docs/",
        login_required(
            SpectacularSwaggerView.as_view(url_name="api-schema"), login_url="admin:login"
        ),
        name="api-docs",
    ),
    path("api/", include(router.urls)),
]

handler400 = "reportsvc.views.bad_request"
handler403 = "reportsvc.views.permission_denied"
handler404 = "reportsvc.views.not_found"
handler500 = "reportsvc.views.server_error"
