from django.contrib import admin

from reports.models import Report


@admin.register(Report)
class ReportAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "data_source", "schedule", "timezone", "enabled")
    list_filter = ("enabled", "data_source")
    search_fields = ("name", "slug", "sql")
    prepopulated_fields = {"slug": ("name",)}
    readonly_fields = ("created_at", "updated_at")
