"""Files follow their runs: a deleted run (by hand, or with its report) takes its output
(a file, or an object on S3)."""

from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from runs.models import Run
from runs.services.infrastructure.output_storage import remove_output


@receiver(post_delete, sender=Run)
def delete_output_file(sender, instance, **kwargs):
    name = instance.output.name if instance.output else ""
    if name:
        # Only once the deletion is committed: a rolled-back delete keeps its file.
        transaction.on_commit(lambda: remove_output(name))
