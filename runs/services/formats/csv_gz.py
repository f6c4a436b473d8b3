"""The CSV file, gzip-compressed as it is written: the same bytes once decompressed.

Compression runs on blocks of ``COMPRESS_BLOCK_BYTES``, so memory stays one block
whatever the size of the file. The gzip header carries no name and no time: the same
rows give the same file.

The deflate stream is made by ISA-L (the ``isal`` package), a standard gzip file that
any gzip reads. Measured on 64 MiB of CSV on the 2-core development machine: zlib
level 1 compressed 110 MiB/s (to 30.3 %), ISA-L level 2 354 MiB/s (to 27.6 %), so
with zlib level 1 the compression alone took longer than ``psql \\copy`` of the CSV.
``COMPRESSION_LEVEL`` 2 was the fastest of ISA-L's levels 0-3 with level 1-3's
ratio (see bench/export.py and the README's performance section).
"""

import gzip

from isal import isal_zlib

from runs.services.formats import OutputFormat
from runs.services.formats.csv import CSVWriter

COMPRESSION_LEVEL = 2
COMPRESS_BLOCK_BYTES = 1 << 20
GZIP_WBITS = 16 + isal_zlib.MAX_WBITS  # a gzip header and trailer around the deflate stream


class GzipOutput:
    """Collects bytes into blocks and passes each block, compressed, to ``sink``."""

    def __init__(self, sink, level=None):
        level = COMPRESSION_LEVEL if level is None else level
        self._sink = sink
        self._compressor = isal_zlib.compressobj(level, isal_zlib.DEFLATED, GZIP_WBITS)
        self._block = bytearray()

    def write(self, data):
        self._block += data
        if len(self._block) >= COMPRESS_BLOCK_BYTES:
            self._sink.write(self._compressor.compress(self._block))
            self._block.clear()

    def close(self):
        if self._block:
            self._sink.write(self._compressor.compress(self._block))
            self._block.clear()
        self._sink.write(self._compressor.flush())


class GzipCSVWriter(CSVWriter):
    def open_output(self, sink):
        return GzipOutput(sink)

    def close(self):
        self._out.close()


FORMAT = OutputFormat(
    name="csv_gz",
    label="CSV, gzip-compressed",
    media_type="application/gzip",
    extension="csv.gz",
    writer_class=GzipCSVWriter,
    csv_options=True,
    reads_csv_copy=True,
    csv_text=lambda file: gzip.GzipFile(fileobj=file, mode="rb"),
)
