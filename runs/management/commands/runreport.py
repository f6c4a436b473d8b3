import json

from django.core.management.base import BaseCommand, CommandError

from reports.models import Report
from reports.parameters import INTERVAL_END, ParameterError
from reportsvc.text import shown, storage_problem
from runs.models import RunStatus, RunTrigger
from runs.services.domain.queue import validated_request
from runs.services.domain.summaries import describe_run, run_summary
from runs.services.runtime.runner import run_report_now


class Command(BaseCommand):
    help = "Run a report now, in this process, and record the run (trigger 'cli')."

    def add_arguments(self, parser):
        parser.add_argument("slug", help="the report's slug")
        parser.add_argument(
            "--json", action="store_true", help="print one JSON object on the last line"
        )
        parser.add_argument(
            "--param",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="a parameter's value (repeat for more); interval_start=ISO works too",
        )
        parser.add_argument(
            "--interval-end",
            metavar="ISO",
            help="the end of the data interval (e.g. a fire time, 2026-11-26T06:00:00Z); "
            "its start is the schedule's fire before it. Default: the latest complete interval",
        )

    def handle(self, *args, slug, **options):
        # Arguments are text as the terminal's bytes decode: undecodable bytes become
        # lone surrogates, which no database can compare with.
        report = None if storage_problem(slug) else Report.objects.filter(slug=slug).first()
        if report is None:
            known = ", ".join(Report.objects.values_list("slug", flat=True)[:20]) or "none"
            raise CommandError(f"No report with slug '{shown(slug)}'. Known reports: {known}.")
        given = {}
        for item in options["param"]:
            name, equals, value = item.partition("=")
            if not equals or not name.strip():
                raise CommandError(
                    f"--param '{shown(item)}': write NAME=VALUE, e.g. --param region=EU."
                )
            given[name.strip()] = value
        if options["interval_end"]:
            given[INTERVAL_END] = options["interval_end"]
        try:
            parameters, interval = validated_request(report, given)
        except ParameterError as error:
            raise CommandError(f"Parameter {error.field}: {error.message}") from None
        run = run_report_now(
            report, trigger=RunTrigger.CLI, parameters=parameters, interval=interval
        )
        run.refresh_from_db()
        if options["json"]:
            self.stdout.write(json.dumps(run_summary(run)))
        else:
            self.stdout.write(describe_run(run))
        if run.status != RunStatus.SUCCEEDED:
            raise CommandError(f"Run {run.pk} failed: {run.error}")
