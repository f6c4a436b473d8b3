"""What a report must pass to be saved, whoever saves it: the admin, the API, a revert.

First the model's rules across fields (``Report.clean``, which also normalises the
declared parameters), then the database's own verdict on the SQL on its data source
(reports.services.sql_check). Each field's own checks (lengths, choices, validators)
are the caller's form's or serializer's, as Django and DRF run them.
"""

from django.core.exceptions import ValidationError

from reports.services.sql_check import check_sql
from reports.services.statements import declared_of
from reports.zones import report_zone


def check_report(report, *, model_checked=False):
    """Check ``report`` as a save does; return the SQL check's warning (saved, but
    checked less than usual) or None. Raises ValidationError by field.

    ``model_checked``: the caller ran ``Report.clean()`` already (a ModelForm, or
    ``full_clean()``), and found nothing wrong with the SQL, its parameters or its data
    source.
    """
    if not model_checked:
        report.clean()
    check = check_sql(report.data_source, report.sql, declared_of(report), report_zone(report))
    if check.problem:
        raise ValidationError({"sql": check.problem})
    return check.warning
