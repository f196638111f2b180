"""CRC-32 checksums in the chunks of MCAP files the project writes.

rosbags writes every chunk with a CRC of 0, which the MCAP specification reads as "not computed", so a bag
damaged on disk or in transfer replays without complaint. :func:`add_chunk_crcs` fills in each chunk's CRC
(of its uncompressed records, as the specification defines it) after the file is written; rosbags' reader, and
every other MCAP reader, then checks it and refuses a damaged chunk.

Chunk record layout (MCAP specification, little-endian): opcode 0x06, u64 record length, then
message_start_time u64, message_end_time u64, uncompressed_size u64, uncompressed_crc u32, compression
(u32 length + bytes), records (u64 length + bytes).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

MAGIC = b"\x89MCAP0\r\n"
CHUNK, FOOTER = 0x06, 0x02
CRC_OFFSET = 24  # within a chunk record's body


class McapError(ValueError):
    """A file that is not an MCAP file as this module reads them (the message names the file and why)."""


def add_chunk_crcs(path: str | Path) -> int:
    """Write the CRC-32 of every uncompressed chunk of the MCAP file at ``path`` into it, in place.

    Returns the number of chunks. Only uncompressed chunks (what the project writes) are supported: a compressed
    one is a McapError, and the file is left as it was up to that chunk.
    """
    path = Path(path)
    chunks = 0
    with path.open("r+b") as file:
        if file.read(len(MAGIC)) != MAGIC:
            raise McapError(f"{path}: not an MCAP file (no magic)")
        while head := file.read(9):
            if len(head) < 9:
                raise McapError(f"{path}: a record is cut short")
            opcode, length = head[0], struct.unpack("<Q", head[1:])[0]
            body_start = file.tell()
            if opcode == FOOTER:
                break
            if opcode == CHUNK:
                body = file.read(length)
                (uncompressed_size,) = struct.unpack_from("<Q", body, 16)
                (name_length,) = struct.unpack_from("<I", body, CRC_OFFSET + 4)
                compression = body[CRC_OFFSET + 8:CRC_OFFSET + 8 + name_length].decode()
                if compression:
                    raise McapError(f"{path}: chunk compressed with {compression!r}: its CRC is not added")
                records_start = CRC_OFFSET + 8 + name_length + 8
                (records_length,) = struct.unpack_from("<Q", body, records_start - 8)
                records = body[records_start:records_start + records_length]
                if len(records) != uncompressed_size:
                    raise McapError(f"{path}: a chunk holds {len(records)} bytes, its header says {uncompressed_size}")
                file.seek(body_start + CRC_OFFSET)
                file.write(struct.pack("<I", zlib.crc32(records)))
                chunks += 1
            file.seek(body_start + length)
    return chunks
