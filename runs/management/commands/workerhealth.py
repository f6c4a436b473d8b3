import socket

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from runs.selectors import worker_is_alive


class Command(BaseCommand):
    help = (
        "Exit 0 if a worker on this host has sent a heartbeat within "
        "HEALTH_WORKER_MAX_AGE_SECONDS (the worker container's health check)."
    )

    def handle(self, *args, **options):
        host = socket.gethostname()
        try:
            alive = worker_is_alive(f"{host}:")
        except DatabaseError as error:
            raise CommandError(f"Cannot reach the database: {error}") from None
        if not alive:
            raise CommandError(f"No recent heartbeat from a worker on {host}.")
        self.stdout.write(f"worker on {host} is alive")
