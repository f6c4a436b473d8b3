import json

from django.core.management.base import BaseCommand, CommandError

from reports.models import Report
from runs.models import RunStatus, RunTrigger
from runs.services.runner import run_report_now
from runs.services.summaries import describe_run, run_summary


class Command(BaseCommand):
    help = "Run a report now, in this process, and record the run (trigger 'cli')."

    def add_arguments(self, parser):
        parser.add_argument("slug", help="the report's slug")
        parser.add_argument(
            "--json", action="store_true", help="print one JSON object on the last line"
        )

    def handle(self, *args, slug, **options):
        try:
            report = Report.objects.get(slug=slug)
        except Report.DoesNotExist:
            known = ", ".join(Report.objects.values_list("slug", flat=True)[:20]) or "none"
            raise CommandError(f"No report with slug '{slug}'. Known reports: {known}.") from None
        run = run_report_now(report, trigger=RunTrigger.CLI)
        run.refresh_from_db()
        if options["json"]:
            self.stdout.write(json.dumps(run_summary(run)))
        else:
            self.stdout.write(describe_run(run))
        if run.status != RunStatus.SUCCEEDED:
            raise CommandError(f"Run {run.pk} failed: {run.error}")
