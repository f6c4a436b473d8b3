import os
import signal

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from runs.services.runtime.leadership import SecondWorkerRefused
from runs.services.runtime.worker import StopTimedOut, Worker


class Command(BaseCommand):
    help = (
        "Run the worker: schedule reports (one leader at a time), execute queued runs, "
        "detect lost runs. SIGTERM/SIGINT stop it gracefully."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--concurrency", type=int, help="runs executed at once (WORKER_CONCURRENCY)"
        )

    def handle(self, *args, **options):
        worker = Worker(concurrency=options["concurrency"])
        for signal_number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(
                signal_number,
                lambda number, frame: worker.request_stop(signal.Signals(number).name),
            )
        try:
            abandoned = worker.run()
        except SecondWorkerRefused as error:
            raise CommandError(str(error)) from None
        except DatabaseError as error:  # only at start; later outages are retried
            raise CommandError(f"Cannot reach the database: {error}") from None
        except StopTimedOut as error:
            self.stderr.write(str(error))
            self.stderr.flush()
            os._exit(1)  # threads wait on the database: do not wait for them
        if abandoned:
            self.stderr.write(f"{abandoned} run(s) did not finish in time and were failed.")
        if abandoned or worker.unsent_notifications:
            self.stdout.flush()
            self.stderr.flush()
            # Their threads are still inside the database driver or waiting on a
            # receiver; do not wait for them.
            os._exit(0)
