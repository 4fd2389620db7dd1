"""Extract files as one CSV: each file decompressed when it is gzip, and every header line but the
first file's dropped. Incremental, so gigabytes stream through in constant memory.

BigQuery writes a large extract as many files, each with its own header; gzip is recognised by
its magic bytes, not by the file name. Header lines hold column names, which never contain a
newline, so the first ``\\n`` of a file ends its header (data rows may span lines: they pass
through untouched).
"""

from __future__ import annotations

import zlib

GZIP_MAGIC = b"\x1f\x8b"


class FileJoiner:
    """One extract file's bytes in, the bytes the joined CSV takes from it out."""

    def __init__(self, keep_header: bool) -> None:
        self._skip_header = not keep_header
        self._head = b""  # until the first two bytes say whether it is gzip
        self._gzip: zlib._Decompress | None = None
        self._decided = False

    def feed(self, chunk: bytes) -> bytes:
        if not self._decided:
            self._head += chunk
            if len(self._head) < 2:
                return b""
            chunk, self._head, self._decided = self._head, b"", True
            if chunk[:2] == GZIP_MAGIC:
                self._gzip = zlib.decompressobj(wbits=31)
        return self._header(self._inflate(chunk))

    def end(self) -> bytes:
        out = b""
        if not self._decided:  # a file shorter than two bytes
            out, self._decided = self._head, True
        if self._gzip is not None:
            out += self._gzip.flush()
        return self._header(out)

    def _inflate(self, data: bytes) -> bytes:
        if self._gzip is None:
            return data
        out = []
        while data:
            out.append(self._gzip.decompress(data))
            # A file may be several gzip members one after the other (a valid gzip file).
            data = self._gzip.unused_data
            if data:
                out.append(self._gzip.flush())
                self._gzip = zlib.decompressobj(wbits=31)
        return b"".join(out)

    def _header(self, data: bytes) -> bytes:
        if not self._skip_header or not data:
            return data
        newline = data.find(b"\n")
        if newline < 0:
            return b""  # still inside the header line
        self._skip_header = False
        return data[newline + 1:]
