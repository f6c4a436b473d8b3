"""Who may do what, for the API (and the admin's run-now controls).

Reading reports, runs and outputs needs ``reports.view_report``; triggering a run needs
``reports.run_report``; writing reports needs the model's add/change/delete permissions.
The SQL text is shown to staff and to holders of ``reports.view_report_sql`` only.
Notification targets and the webhook secret are shown in full only to those who may
change the report (``reports.change_report``); others see them redacted.
"""

from rest_framework.permissions import BasePermission, DjangoModelPermissions

VIEW_REPORTS = "reports.view_report"
RUN_REPORTS = "reports.run_report"
VIEW_SQL = "reports.view_report_sql"
CHANGE_REPORTS = "reports.change_report"


def can_view_reports(user):
    return user.is_active and user.has_perm(VIEW_REPORTS)


def can_run_reports(user):
    return can_view_reports(user) and user.has_perm(RUN_REPORTS)


def can_view_sql(user):
    return user.is_active and (user.is_staff or user.has_perm(VIEW_SQL))


def can_change_reports(user):
    """May change reports, and so see their notification targets and webhook secret."""
    return can_view_reports(user) and user.has_perm(CHANGE_REPORTS)


class ReportModelPermissions(DjangoModelPermissions):
    """Model permissions, with reading guarded by the view permission too."""

    perms_map = {
        **DjangoModelPermissions.perms_map,
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "OPTIONS": ["%(app_label)s.view_%(model_name)s"],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
    }


class CanViewReports(BasePermission):
    def has_permission(self, request, view):
        return bool(request.user and request.user.is_authenticated) and can_view_reports(
            request.user
        )


class CanRunReports(BasePermission):
    message = "You may view this report but not run it (needs the run_report permission)."

    def has_permission(self, request, view):
        return bool(request.user and request.user.is_authenticated) and can_run_reports(
            request.user
        )


class CanChangeReports(BasePermission):
    message = "You may view this report but not change it (needs the change_report permission)."

    def has_permission(self, request, view):
        return bool(request.user and request.user.is_authenticated) and can_change_reports(
            request.user
        )
