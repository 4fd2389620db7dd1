"""The MySQL export target's connection: ``LOAD DATA LOCAL`` for the file being loaded, only."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomysql
from pymysql.connections import MysqlPacket
from pymysql.constants.CLIENT import LOCAL_FILES

__all__ = ["LOCAL_FILES", "GuardedConnection"]

from maestro.errors_outside import ExportFailed


class GuardedConnection(aiomysql.Connection):
    """A connection that sends the server no file but the one being loaded.

    With ``LOAD DATA LOCAL`` the *server* names the file the client sends, and aiomysql opens
    whatever it names, in answer to any statement: a rogue or compromised target (or anyone on a
    plaintext path) could read the master secret, the service-account key or /proc/self/environ.
    Here local files are allowed only while :meth:`loading` one, and only that one: aiomysql
    refuses a request at any other time (``_local_infile`` is false), and a request during the
    load that names another path closes the connection before anything is read.
    """

    _expected: bytes | None = None

    @property
    def _local_infile(self) -> bool:  # aiomysql's switch for answering a LOCAL INFILE request
        return self._expected is not None

    @_local_infile.setter
    def _local_infile(self, _value: bool) -> None:
        pass  # the capability is announced by LOCAL_FILES in client_flag; the answer is per request

    @contextlib.contextmanager
    def loading(self, path: Path) -> Iterator[None]:
        self._expected = os.fsencode(str(path))
        try:
            yield
        finally:
            self._expected = None

    async def _read_packet(self, packet_type: Any = MysqlPacket) -> Any:
        packet = await super()._read_packet(packet_type)
        # While loading, the statement's answers are a LOCAL INFILE request, OK or an error: no
        # row packets, whose 0xfb (NULL) first byte would look the same.
        if self._expected is not None and packet.is_load_local_packet():
            asked = packet.get_all_data()[1:]
            if asked != self._expected:
                self._expected = None
                self.close()
                raise ExportFailed("target_refused", f"the MySQL target asked for a local file other than the "
                                   f"one being loaded ({asked[:200]!r}); refused, and the connection closed",
                                   retryable=False)
        return packet
