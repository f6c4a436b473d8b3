"""Webhook targets recorded before redaction covered user, password and query strings.

Earlier deliveries kept ``user:password@`` and, for URLs without a path, the query
string (``?token=…``). They are rewritten to scheme and host, as new ones are stored.
"""

from django.db import migrations
from django.db.models import Q

from reports.targets import redact_url

BATCH = 1000


def redact_stored_targets(apps, schema_editor):
    Delivery = apps.get_model("runs", "Delivery")
    exposed = Delivery.objects.filter(channel="webhook").filter(
        Q(target__contains="@") | Q(target__contains="?") | Q(target__contains="#")
    )
    changed = []
    for delivery in exposed.only("id", "target").iterator(chunk_size=BATCH):
        delivery.target = redact_url(delivery.target)
        changed.append(delivery)
        if len(changed) == BATCH:
            Delivery.objects.bulk_update(changed, ["target"])
            changed = []
    if changed:
        Delivery.objects.bulk_update(changed, ["target"])


class Migration(migrations.Migration):
    dependencies = [("runs", "0003_leaner_run_indexes")]

    operations = [migrations.RunPython(redact_stored_targets, migrations.RunPython.noop)]
