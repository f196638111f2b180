"""Fault injection, bags: every bag the project writes carries MCAP chunk CRCs, so a damaged one is refused."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from rosbags.highlevel import AnyReader

from clip_seg3d_ros.ros.bag_writer import LabelledBagWriter, mcap_file, write_bag
from clip_seg3d_ros.ros.mcap_checksums import MAGIC, McapError, add_chunk_crcs
from clip_seg3d_ros.sample import Sample


def sweeps(count: int = 3) -> list[Sample]:
    generator = np.random.default_rng(0)
    return [Sample(name=str(index), points=generator.normal(size=(4000, 4)).astype(np.float32),
                   class_names=["road", "car"], labels=generator.integers(0, 2, 4000), timestamp=0.1 * index)
            for index in range(count)]


def chunk_crcs(path) -> list[tuple[int, int]]:
    """(stored CRC, CRC of the records) of every chunk, read independently of the module under test."""
    data = path.read_bytes()
    position, found = len(MAGIC), []
    while position < len(data):
        opcode, length = data[position], struct.unpack_from("<Q", data, position + 1)[0]
        body = position + 9
        if opcode == 0x06:
            (stored,) = struct.unpack_from("<I", data, body + 24)
            (name_length,) = struct.unpack_from("<I", data, body + 28)
            (records_length,) = struct.unpack_from("<Q", data, body + 32 + name_length)
            records = data[body + 40 + name_length:body + 40 + name_length + records_length]
            found.append((stored, zlib.crc32(records)))
        if opcode == 0x02:
            break
        position = body + length
    return found


def test_every_chunk_of_a_written_bag_has_its_crc_and_the_bag_still_reads(tmp_path):
    write_bag(sweeps(), tmp_path / "bag", progress=False)
    crcs = chunk_crcs(mcap_file(tmp_path / "bag"))
    assert crcs and all(stored == computed != 0 for stored, computed in crcs)
    with AnyReader([tmp_path / "bag"]) as reader:
        assert sum(1 for _ in reader.messages()) == 3 * 2  # each sweep and its ground truth


def test_a_damaged_chunk_is_refused_on_reading(tmp_path):
    write_bag(sweeps(), tmp_path / "bag", progress=False)
    storage = mcap_file(tmp_path / "bag")
    data = bytearray(storage.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one bit pattern flipped inside the point data
    storage.write_bytes(bytes(data))
    with pytest.raises(Exception, match="checksum"), AnyReader([tmp_path / "bag"]) as reader:
        for _ in reader.messages():
            pass


def test_not_an_mcap_file_is_a_clear_error(tmp_path):
    other = tmp_path / "other.mcap"
    other.write_bytes(b"not a bag at all")
    with pytest.raises(McapError, match="not an MCAP file"):
        add_chunk_crcs(other)


def test_replays_labelled_bag_has_chunk_crcs_too(tmp_path):
    write_bag(sweeps(1), tmp_path / "bag", progress=False)
    output = LabelledBagWriter(tmp_path / "labelled", "mcap")
    with AnyReader([tmp_path / "bag"]) as reader:
        connections = [c for c in reader.connections if c.topic == "/points"]
        for connection, log_time, raw in reader.messages(connections=connections):
            message = reader.deserialize(raw, connection.msgtype)
            count = int(message.width) * int(message.height)
            output.write(message, np.zeros(count, dtype=np.int64), np.ones(count, dtype=np.float32), log_time)
    output.close()
    crcs = chunk_crcs(mcap_file(tmp_path / "labelled"))
    assert crcs and all(stored == computed != 0 for stored, computed in crcs)
