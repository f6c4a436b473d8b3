"""How the endpoints that stream run outputs render errors and negotiate content."""

import csv
import io

from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer, JSONRenderer


class CSVRenderer(BaseRenderer):
    """For ``Accept: text/csv``. Files are streamed as they are; only an error (a
    ``{"detail": …}`` body) is rendered here, as a one-row CSV."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if not isinstance(data, dict):
            return data
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(data.keys())
        writer.writerow(str(value) for value in data.values())
        return text.getvalue().encode()


class DownloadContentNegotiation(DefaultContentNegotiation):
    """Downloads never answer 406: the file comes as text/csv, or as
    application/octet-stream to clients that prefer that (see csv_download_response);
    errors come as CSV to clients that accept CSV but not JSON, else as JSON."""

    def select_renderer(self, request, renderers, format_suffix=None):
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except NotAcceptable:
            return renderers[0], renderers[0].media_type


# View options of the endpoints that stream run outputs.
DOWNLOAD_VIEW_OPTIONS = {
    "renderer_classes": [JSONRenderer, CSVRenderer],
    "content_negotiation_class": DownloadContentNegotiation,
}
