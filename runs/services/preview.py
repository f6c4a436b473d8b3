"""The first rows of a run's CSV, read from the start of the file only."""

import csv
import io
from itertools import islice

from django.core.files.storage import default_storage

PREVIEW_ROWS = 50


def preview_rows(run, limit=PREVIEW_ROWS):
    """``(header, rows, truncated)`` of the run's output, or None if it has no file.

    csv.reader pulls buffered chunks as it goes, so a 10 GB file costs what 51 rows do.
    """
    if not run.output:
        return None
    try:
        file = default_storage.open(run.output.name, "rb")
    except FileNotFoundError:
        return None
    with file, io.TextIOWrapper(file, encoding="utf-8", newline="") as text:
        rows = list(islice(csv.reader(text), limit + 2))
    if not rows:
        return [], [], False
    header, body = rows[0], rows[1:]
    return header, body[:limit], len(body) > limit
