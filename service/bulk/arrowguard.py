"""An Arrow IPC stream checked message by message before pyarrow decodes any of it.

A compressed record batch is small on the wire and huge decoded: 286 KiB of ZSTD can hold
100 million constant rows, gigabytes once decoded. So each message is read here first, whole
(its metadata and body at most `ARROW_MESSAGE` bytes each), its metadata parsed (a flatbuffer:
the record batch's row count, its buffers and their compression) and its decoded size computed
from the body (a compressed buffer starts with its uncompressed length); a batch of more rows
than the job may still take, or of more than `MAX_DECODED` bytes decoded, is refused before
pyarrow allocates anything. Then the same bytes are handed on to pyarrow's stream reader.
"""

from __future__ import annotations

import io
import struct
from typing import IO, Any

from service.bulk.parsing import read_exactly, too_many
from service.core.errors import InvalidInput

ARROW_MESSAGE = 64 * 1024 * 1024  # bytes of one message's metadata, or of its body
MAX_DECODED = 256 * 1024 * 1024  # bytes one message may take decoded
CONTINUATION = b"\xff\xff\xff\xff"
SCHEMA, DICTIONARY_BATCH, RECORD_BATCH = 1, 2, 3


class TooLarge(InvalidInput):
    def __init__(self, reason: str) -> None:
        super().__init__("inputs", f"{reason}: write smaller record batches")


class GuardedStream(io.RawIOBase):
    """The messages of `stream` (its first bytes in `head`), each checked, handed on whole;
    `first()` reads the first (the schema) ahead, to choose the columns to decode."""

    def __init__(self, stream: IO[bytes], head: bytes, max_rows: int) -> None:
        super().__init__()
        self._stream, self._head, self._rows_left = stream, head, max_rows
        self._max_rows = max_rows
        # The message being handed on, in parts (its header, its body) read from `_at`: a
        # body of megabytes goes to pyarrow as the object read, never copied here.
        self._parts: list[bytes] = []
        self._at = 0
        self._ended = False

    def readable(self) -> bool:
        return True

    def first(self) -> bytes:
        """The stream's first message, read now and still handed on by `read`."""
        if not self._parts:
            self._parts, self._at = self._next_message(), 0
        return b"".join(self._parts)

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        while not self._parts and not self._ended:
            self._parts, self._at = self._next_message(), 0
        if not self._parts or size == 0:
            return b""
        part, start = self._parts[0], self._at
        self._at = min(len(part), start + size)
        if self._at == len(part):
            self._parts, self._at = self._parts[1:], 0
            if start == 0:
                return part  # pyarrow reads a body whole: the bytes themselves
        return part[start:start + size]

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def _read(self, size: int) -> bytes:
        data, self._head = self._head[:size], self._head[size:]
        return data + read_exactly(self._stream, size - len(data)) if len(data) < size else data

    def _next_message(self) -> list[bytes]:
        marker = self._read(4)
        if marker != CONTINUATION:
            raise InvalidInput("inputs", "not an Arrow IPC stream: a message does not start "
                                         "with the continuation marker")
        size_bytes = self._read(4)
        size = struct.unpack("<i", size_bytes)[0] if len(size_bytes) == 4 else 0
        if size == 0:  # end of stream
            self._ended = True
            return [marker + size_bytes]
        if not 0 < size <= ARROW_MESSAGE:
            raise TooLarge(f"an Arrow message of {size:,} bytes of metadata; at most "
                           f"{ARROW_MESSAGE:,}")
        metadata = self._read(size)
        kind, body_length, batch = parse_message(metadata)
        if not 0 <= body_length <= ARROW_MESSAGE:
            raise TooLarge(f"an Arrow message of {body_length:,} bytes; at most "
                           f"{ARROW_MESSAGE:,}")
        body = self._read(body_length)
        if len(body) < body_length:
            raise InvalidInput("inputs", "the Arrow stream ends inside a message")
        if batch is not None:
            self._check(kind, batch, body)
        return [marker + size_bytes + metadata, body] if body else [marker + size_bytes + metadata]

    def _check(self, kind: int, batch: Batch, body: bytes) -> None:
        if kind == RECORD_BATCH:
            if batch.length > self._rows_left:
                raise too_many(self._max_rows)
            self._rows_left -= batch.length
        decoded = batch.decoded_size(body)
        if decoded > MAX_DECODED:
            raise TooLarge(f"a record batch of {decoded:,} bytes decoded; at most "
                           f"{MAX_DECODED:,}")


class Batch:
    """What a record batch's (or a dictionary batch's) metadata says."""

    def __init__(self, length: int, buffers: list[tuple[int, int]], compressed: bool) -> None:
        self.length, self.buffers, self.compressed = length, buffers, compressed

    def decoded_size(self, body: bytes) -> int:
        """Bytes the buffers take decoded: a compressed buffer's first 8 bytes say its
        uncompressed length (-1: stored uncompressed)."""
        total = 0
        for offset, length in self.buffers:
            if offset < 0 or length < 0 or offset + length > len(body):
                raise InvalidInput("inputs", "an Arrow record batch whose buffers lie outside "
                                             "its body")
            if not self.compressed or length == 0:
                total += length
                continue
            if length < 8:
                raise InvalidInput("inputs", "an Arrow compressed buffer shorter than its prefix")
            declared = struct.unpack_from("<q", body, offset)[0]
            total += length - 8 if declared == -1 else max(0, declared)
        return total


def parse_message(metadata: bytes) -> tuple[int, int, Batch | None]:
    """(header type, body length, the batch for record and dictionary batches) of a Message
    flatbuffer (format/Message.fbs); InvalidInput when it is not one."""
    try:
        fb = _Flat(metadata)
        message = fb.table(fb.u32(0))
        kind = fb.u8(message.field(1)) if message.field(1) is not None else 0
        body_length = fb.i64(message.field(3)) if message.field(3) is not None else 0
        header = message.field(2)
        if header is None or kind not in (RECORD_BATCH, DICTIONARY_BATCH):
            return kind, body_length, None
        table = fb.table(header + fb.u32(header))
        if kind == DICTIONARY_BATCH:
            data = table.field(1)
            if data is None:
                return kind, body_length, None
            table = fb.table(data + fb.u32(data))
        return kind, body_length, _batch(fb, table)
    except (struct.error, IndexError) as exc:
        raise InvalidInput("inputs", f"not an Arrow IPC stream: unreadable metadata ({exc})"
                           ) from None


def _batch(fb: _Flat, table: _Table) -> Batch:
    length = fb.i64(table.field(0)) if table.field(0) is not None else 0
    buffers: list[tuple[int, int]] = []
    vector = table.field(2)
    if vector is not None:
        start = vector + fb.u32(vector)
        for i in range(fb.u32(start)):
            at = start + 4 + 16 * i
            buffers.append((fb.i64(at), fb.i64(at + 8)))
    return Batch(length, buffers, table.field(3) is not None)


class _Table:
    """A flatbuffer table: where each of its fields is, or None if absent."""

    def __init__(self, fb: _Flat, pos: int) -> None:
        self.fb, self.pos = fb, pos
        self.vtable = pos - struct.unpack_from("<i", fb.data, pos)[0]
        self.vsize = fb.u16(self.vtable)

    def field(self, index: int) -> int | None:
        slot = 4 + 2 * index
        if slot >= self.vsize:
            return None
        offset = self.fb.u16(self.vtable + slot)
        return self.pos + offset if offset else None


class _Flat:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def table(self, pos: int) -> _Table:
        return _Table(self, pos)

    def u8(self, at: int | None) -> int:
        assert at is not None
        return self.data[at]

    def u16(self, at: int) -> int:
        return int(struct.unpack_from("<H", self.data, at)[0])

    def u32(self, at: int) -> int:
        return int(struct.unpack_from("<I", self.data, at)[0])

    def i64(self, at: int | None) -> int:
        assert at is not None
        return int(struct.unpack_from("<q", self.data, at)[0])
