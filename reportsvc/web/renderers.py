"""How the endpoints that stream run outputs render errors and negotiate content."""

import csv
import io

from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer, JSONRenderer

from reportsvc.text import escaped_data


class EscapingJSONRenderer(JSONRenderer):
    """DRF's JSON renderer, for every API response. Data that UTF-8 cannot encode (a
    lone surrogate in a row stored before values were checked) is rendered with such
    characters written as escaped text (``\\ud800``) instead of failing the response."""

    def render(self, data, accepted_media_type=None, renderer_context=None):
        try:
            return super().render(data, accepted_media_type, renderer_context)
        except UnicodeEncodeError:
            return super().render(escaped_data(data), accepted_media_type, renderer_context)


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
    """Downloads never answer 406: the file comes in its format's media type, or as
    application/octet-stream to clients that prefer that (see output_download_response);
    errors come as CSV to clients that accept CSV but not JSON (where the view renders
    CSV), else as JSON."""

    def select_renderer(self, request, renderers, format_suffix=None):
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except NotAcceptable:
            return renderers[0], renderers[0].media_type


def renders_csv_errors(output_formats):
    """Whether a download of files of ``output_formats`` writes errors as CSV too."""
    return any(
        output_format.media_type == CSVRenderer.media_type for output_format in output_formats
    )


def download_view_options(output_formats):
    """View options of an endpoint that streams files of ``output_formats``: errors in
    JSON, or as CSV where the files can be CSV (for clients that accept only that)."""
    renderers = (
        [EscapingJSONRenderer, CSVRenderer]
        if renders_csv_errors(output_formats)
        else [EscapingJSONRenderer]
    )
    return {"renderer_classes": renderers, "content_negotiation_class": DownloadContentNegotiation}
