"""The deletion vector format as readers check it, and put-if-absent on local disk."""

from __future__ import annotations

import threading

import pytest
from pyroaring import BitMap64

from tidemark.sinks.delta.dv.format import (
    DeletionVector,
    DvFormatError,
    build_file,
    read_from_file,
    z85_decode,
    z85_encode,
)
from tidemark.sinks.delta.dv.store import LocalStore


def test_z85_matches_the_zeromq_reference_vector():
    data = bytes([0x86, 0x4F, 0xD2, 0x6F, 0xB5, 0x59, 0xF7, 0x5B])
    assert z85_encode(data) == "HelloWorld"
    assert z85_decode("HelloWorld") == data


def test_a_dv_file_reads_back_and_a_damaged_one_fails_loudly():
    rows = [BitMap64([3, 4, 7]), BitMap64([0, 2**33])]
    name, content, descriptors = build_file(rows)
    assert content[0] == 1 and name.startswith("deletion_vector_")
    for bitmap, dv in zip(rows, descriptors, strict=True):
        assert read_from_file(dv, content) == bitmap
        assert dv.cardinality == len(bitmap)
        assert dv.relative_path() == name
        assert DeletionVector.from_json(dv.to_json()) == dv
    assert descriptors[0].unique_id != descriptors[1].unique_id
    damaged = bytearray(content)
    damaged[descriptors[0].offset + 8] ^= 0xFF  # inside the first blob
    with pytest.raises(DvFormatError, match="checksum"):
        read_from_file(descriptors[0], bytes(damaged))


def test_put_if_absent_lets_exactly_one_writer_win(tmp_path):
    store = LocalStore(str(tmp_path))
    wins: list[int] = []
    barrier = threading.Barrier(8)

    def attempt(n: int) -> None:
        barrier.wait()
        if store.put_if_absent("_delta_log/00000000000000000007.json", str(n).encode()):
            wins.append(n)

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert store.get("_delta_log/00000000000000000007.json") == str(wins[0]).encode()
    assert [e.path for e in store.list_folder("_delta_log/")] == [
        "_delta_log/00000000000000000007.json"
    ]  # no temporary file left behind
