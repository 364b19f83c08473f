"""The deletion vector format as readers check it (PROTOCOL.md, "Deletion Vector Format").

A DV is a set of row positions of one data file. Serialized ("blob"): the magic number
1681511377 as a little-endian u32, then the portable 64-bit Roaring serialization
(`pyroaring.BitMap64.serialize()` is exactly that). A DV file starts with the version byte 1,
then per DV: its blob's size (big-endian u32), the blob, the blob's CRC-32 (big-endian u32).
A descriptor's `offset` points at the size field and `sizeInBytes` is the blob's length.

Stored DVs (`storageType` 'u') are named by a UUID: `pathOrInlineDv` is the Z85 text of its
16 bytes, and the file is `<table>/deletion_vector_<uuid>.bin`. PROTOCOL.md's inline example
uses Spark's big-endian layout, which kernel readers reject: we never write inline DVs.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pyroaring import BitMap64

MAGIC = 1681511377
VERSION = 1
_Z85 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
_Z85_VALUE = {char: value for value, char in enumerate(_Z85)}


class DvFormatError(ValueError):
    """A DV that does not read back as the protocol says (wrong magic, CRC, size)."""


def z85_encode(data: bytes) -> str:
    """Z85 (ZeroMQ RFC 32) of `data`, whose length must be a multiple of 4."""
    if len(data) % 4:
        raise ValueError("Z85 encodes multiples of 4 bytes")
    out: list[str] = []
    for start in range(0, len(data), 4):
        value = int.from_bytes(data[start : start + 4], "big")
        chunk = []
        for _ in range(5):
            value, digit = divmod(value, 85)
            chunk.append(_Z85[digit])
        out.extend(reversed(chunk))
    return "".join(out)


def z85_decode(text: str) -> bytes:
    """The bytes `z85_encode` made `text` from."""
    if len(text) % 5:
        raise ValueError("Z85 text is a multiple of 5 characters")
    out = bytearray()
    for start in range(0, len(text), 5):
        value = 0
        for char in text[start : start + 5]:
            value = value * 85 + _Z85_VALUE[char]
        out += value.to_bytes(4, "big")
    return bytes(out)


def serialize(rows: BitMap64) -> bytes:
    """The blob of a DV holding `rows`."""
    return struct.pack("<I", MAGIC) + rows.serialize()


def deserialize(blob: bytes) -> BitMap64:
    """The rows of a DV blob.

    Raises:
        DvFormatError: the blob does not start with the magic number.
    """
    if len(blob) < 4 or struct.unpack_from("<I", blob)[0] != MAGIC:
        raise DvFormatError(f"not a deletion vector: magic {blob[:4].hex()}")
    return BitMap64.deserialize(blob[4:])


@dataclass(frozen=True)
class DeletionVector:
    """The `deletionVector` descriptor of an `add` or `remove` action.

    Attributes:
        storage_type: 'u' (file named by a UUID), 'p' (absolute path) or 'i' (inline).
        path_or_inline: the Z85 UUID (with an optional prefix), the path, or the inline blob.
        offset: where the DV starts in its file (None inline).
        size: the blob's length in bytes.
        cardinality: rows the DV deletes.
    """

    storage_type: str
    path_or_inline: str
    offset: int | None
    size: int
    cardinality: int

    @property
    def unique_id(self) -> str:
        """What tells two DVs of one file apart (PROTOCOL.md, "Derived Fields")."""
        base = f"{self.storage_type}{self.path_or_inline}"
        return base if self.offset is None else f"{base}@{self.offset}"

    def relative_path(self) -> str | None:
        """The DV file's path relative to the table root ('u'), None otherwise."""
        if self.storage_type != "u":
            return None
        prefix, encoded = self.path_or_inline[:-20], self.path_or_inline[-20:]
        name = f"deletion_vector_{uuid.UUID(bytes=z85_decode(encoded))}.bin"
        return f"{prefix}/{name}" if prefix else name

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "storageType": self.storage_type,
            "pathOrInlineDv": self.path_or_inline,
        }
        if self.offset is not None:
            out["offset"] = self.offset
        out["sizeInBytes"] = self.size
        out["cardinality"] = self.cardinality
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> DeletionVector | None:
        if not data or not data.get("storageType"):
            return None
        offset = data.get("offset")
        return cls(
            str(data["storageType"]),
            str(data["pathOrInlineDv"]),
            None if offset is None else int(offset),
            int(data["sizeInBytes"]),
            int(data["cardinality"]),
        )


def read_from_file(descriptor: DeletionVector, content: bytes) -> BitMap64:
    """The rows of a stored DV, given the bytes of its file from `offset` on (or whole).

    Raises:
        DvFormatError: the size or CRC-32 does not match the descriptor.
    """
    start = descriptor.offset or 0
    if len(content) < start + 4 + descriptor.size + 4:
        raise DvFormatError(f"DV file too short for {descriptor.unique_id}")
    size = struct.unpack_from(">I", content, start)[0]
    if size != descriptor.size:
        raise DvFormatError(f"DV size {size} != descriptor's {descriptor.size}")
    blob = content[start + 4 : start + 4 + size]
    crc = struct.unpack_from(">I", content, start + 4 + size)[0]
    if crc != zlib.crc32(blob):
        raise DvFormatError(f"DV checksum mismatch for {descriptor.unique_id}")
    return deserialize(blob)


def read_inline(descriptor: DeletionVector) -> BitMap64:
    """The rows of an inline DV (Z85 text padded to a multiple of 4 bytes)."""
    text = descriptor.path_or_inline
    text += "0" * (-len(text) % 5)
    return deserialize(z85_decode(text)[: descriptor.size])


def build_file(bitmaps: Sequence[BitMap64]) -> tuple[str, bytes, list[DeletionVector]]:
    """One new DV file holding `bitmaps`: (its relative path, its bytes, one descriptor each).

    Every call draws a new UUID, so a descriptor's unique id is never one the table has
    already seen: re-committing an old DV id would delete the whole file for readers.
    """
    name = uuid.uuid4()
    encoded = z85_encode(name.bytes)
    content = bytearray([VERSION])
    descriptors = []
    for rows in bitmaps:
        blob = serialize(rows)
        offset = len(content)
        content += struct.pack(">I", len(blob)) + blob + struct.pack(">I", zlib.crc32(blob))
        descriptors.append(DeletionVector("u", encoded, offset, len(blob), len(rows)))
    return f"deletion_vector_{name}.bin", bytes(content), descriptors
