"""The run page's preview: a bounded read of any output, NULL apart from "", never a 500."""

import io
import tracemalloc
from pathlib import Path

import pytest

from reports.models import Report
from runs.models import RunStatus
from runs.services.infrastructure.preview import (
    PREVIEW_CELL_CHARS,
    PREVIEW_COLUMNS,
    PREVIEW_MAX_BYTES,
    read_preview,
)
from runs.services.runtime.runner import run_report_now
from tests.conftest import ON_POSTGRES

pytestmark = pytest.mark.django_db(databases="__all__")


def page_of(client, run):
    response = client.get(f"/admin/runs/run/{run.pk}/change/")
    assert response.status_code == 200
    return response.content.decode()


@pytest.fixture
def finished_run(outputs_dir):
    """A succeeded run whose output file a test may overwrite with anything."""
    run = run_report_now(Report.objects.create(name="Out", slug="out", sql="SELECT 1 AS n"))
    assert run.status == RunStatus.SUCCEEDED, run.error

    def with_output(content):
        Path(outputs_dir, run.output.name).write_bytes(content)
        return run

    return with_output


def test_a_value_over_csv_module_limits_is_cut_with_its_length(admin_client):
    # 200,000 characters: csv.reader refuses fields over 131,072 (the page was a 500).
    big = "repeat('x', 200000)" if ON_POSTGRES else "replace(hex(zeroblob(100000)), '0', 'x')"
    report = Report.objects.create(
        name="Wide", slug="wide", sql=f"SELECT 1 AS id, {big} AS big, 'short' AS note"
    )
    run = run_report_now(report)
    assert run.status == RunStatus.SUCCEEDED, run.error
    page = page_of(admin_client, run)
    shown = "x" * PREVIEW_CELL_CHARS
    assert f'<td>{shown}<span class="rs-cut">… (200,000 characters)</span></td>' in page
    assert "x" * (PREVIEW_CELL_CHARS + 1) not in page
    assert "<td>short</td>" in page


def test_null_the_empty_string_and_the_word_null_look_different(admin_client):
    report = Report.objects.create(
        name="Nulls", slug="nulls", sql="SELECT NULL AS missing, '' AS empty, 'NULL' AS word"
    )
    run = run_report_now(report)
    assert run.status == RunStatus.SUCCEEDED, run.error
    page = page_of(admin_client, run)
    row = page.split('id="preview-table"')[1].split("<tbody>")[1].split("</tr>")[0]
    assert row.split("<td")[1:] == [
        ' class="rs-null"><span class="rs-null-mark" title="NULL (no value)">NULL</span></td>',
        ' class="rs-empty" title="empty string"></td>',
        ">NULL</td>",
    ]


def test_a_500_mb_line_is_read_only_up_to_the_budget(admin_client, finished_run, tmp_path):
    # One value far past the budget: the page shows its start and says it stops there.
    path = tmp_path / "huge.csv"
    with open(path, "wb") as file:
        file.write(b"id,blob\n1,")
        file.seek(64 << 20)  # 64 MB of NUL characters, a sparse file: cheap to make
        file.write(b"end\n")
    tracemalloc.start()
    try:
        with open(path, "rb") as file:
            preview = read_preview(file)
            read = file.tell()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert read <= PREVIEW_MAX_BYTES + 1
    assert peak < 2 * PREVIEW_MAX_BYTES, peak
    cell = preview.rows[0][1]
    assert not cell.complete and cell.length == PREVIEW_MAX_BYTES - len(b"id,blob\n1,")
    assert preview.cut_short and preview.more_rows

    run = finished_run(path.read_bytes())
    page = page_of(admin_client, run)
    assert f"… (more than {cell.length:,} characters; the preview stops here)" in page
    assert "The preview reads only the first 2.0\xa0MB of the file" in page
    assert len(page) < 100_000


def test_rows_beyond_the_budget_are_left_for_the_download(admin_client, finished_run):
    line = "a" * 100_000 + "\n"  # 30 rows of 100 KB: the budget ends in row 21
    run = finished_run(("h\n" + line * 30).encode())
    page = page_of(admin_client, run)
    assert "first 21 rows (more in the file)" in page
    assert page.count("… (100,000 characters)") == 20
    assert "The preview reads only the first" in page


def test_many_columns_show_the_first_hundred(admin_client, finished_run):
    header = ",".join(f"c{index}" for index in range(150))
    run = finished_run(f"{header}\n{','.join(['1'] * 150)}\n".encode())
    page = page_of(admin_client, run)
    assert f"<th>c{PREVIEW_COLUMNS - 1}</th>" in page and f"<th>c{PREVIEW_COLUMNS}</th>" not in page
    assert "50 more columns not shown." in page


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "The output is empty."),
        (b"a,b\n", "No rows (header only)."),
        (b'a,b\n"never closed,1\n2,3\n', "<td>never closed,1\n2,3\n"),  # malformed: no 500
        (b"a\n\xff\xfe\n", "<td>\ufffd\ufffd</td>"),  # not UTF-8
        (b'a,b\n"x"junk,2\n', "<td>xjunk</td>"),
        (b"a,b\r\n1,2\r\n", "<td>2\r</td>"),
    ],
)
def test_any_file_content_gives_a_page(admin_client, finished_run, content, expected):
    page = page_of(admin_client, finished_run(content))
    assert expected in page


def test_a_missing_output_file_gives_a_page_that_says_so(admin_client, finished_run, outputs_dir):
    run = finished_run(b"n\n1\n")
    Path(outputs_dir, run.output.name).unlink()
    page = page_of(admin_client, run)
    assert f"The output file {run.output.name} is missing from storage" in page


def test_an_unreadable_output_gives_a_page_that_says_so(admin_client, finished_run, outputs_dir):
    run = finished_run(b"n\n1\n")
    path = Path(outputs_dir, run.output.name)
    path.unlink()
    path.mkdir()  # a folder where the file was
    page = page_of(admin_client, run)
    assert "The output file could not be read:" in page


def test_values_split_across_read_chunks_come_back_whole(monkeypatch):
    monkeypatch.setattr("runs.services.infrastructure.preview.READ_CHUNK_BYTES", 3)
    data = 'name,note\n"a ""quoted"", value",\n日本語,""\n'.encode()
    preview = read_preview(io.BytesIO(data))
    assert [cell.text for cell in preview.header] == ["name", "note"]
    assert [[(cell.text, cell.is_null) for cell in row] for row in preview.rows] == [
        [('a "quoted", value', False), ("", True)],
        [("日本語", False), ("", False)],
    ]
    assert not preview.more_rows and not preview.cut_short
