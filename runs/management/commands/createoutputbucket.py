from django.core.management.base import BaseCommand, CommandError

from runs.services.infrastructure.output_storage import OutputBucketError, create_output_bucket


class Command(BaseCommand):
    help = (
        "Create the bucket OUTPUTS_S3_BUCKET names, if it is missing (docker compose's "
        "s3 profile runs it once against MinIO). Objects in it stay private."
    )
    # It runs before the database may be up: the checks connect to the data sources.
    requires_system_checks = []

    def handle(self, *args, **options):
        try:
            created, bucket = create_output_bucket()
        except OutputBucketError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(f"bucket {bucket} {'created' if created else 'already exists'}")
