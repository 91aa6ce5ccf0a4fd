"""TensorFlow checkpoints (the TensorBundle "V2" format) read in pure Python, no TensorFlow.

A checkpoint ``PREFIX`` is ``PREFIX.index`` and ``PREFIX.data-00000-of-0000N``. The index
is a LevelDB-format sorted string table: data blocks of prefix-compressed keys with restart
points, an index block of their handles, a 48-byte footer (metaindex and index handles,
padding, magic number); each block is followed by its compression type and the masked
CRC32C of both. Under the empty key is a ``BundleHeaderProto`` (shard count, endianness,
version); under each tensor's name a ``BundleEntryProto`` (dtype, shape, shard, offset,
size, masked CRC32C of its bytes in the shard). Both are decoded from protobuf's wire
format by hand.

Supported: uncompressed blocks (TensorFlow writes bundles uncompressed; a snappy-compressed
block is refused), little-endian bundles, whole (unsliced) float16/32/64 tensors. Every
block's and every tensor's CRC32C is checked (table-driven; numpy runs 1 KiB chunks side
by side and joins them, ~0.1 s for a generator's 8 MB).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from animegan_cli.core.errors import WeightsError

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_BYTES = 48
BLOCK_TRAILER_BYTES = 5  # compression type + masked crc32c
UNCOMPRESSED = 0
COMPRESSIONS = {0: "none", 1: "snappy", 2: "zlib"}
LITTLE_ENDIAN = 0
# TensorFlow's DataType enum values of the float tensors a generator holds.
DTYPES: dict[int, np.dtype] = {1: np.dtype("<f4"), 2: np.dtype("<f8"), 19: np.dtype("<f2")}
# A TF2 tf.train.Checkpoint names its tensors by object path and adds this graph.
OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
OBJECT_VALUE_SUFFIX = ".ATTRIBUTES/VARIABLE_VALUE"

_CRC32C_POLY = 0x82F63B78  # Castagnoli, reflected
_CRC_MASK_DELTA = 0xA282EAD8
_MASK32 = 0xFFFFFFFF


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (_CRC32C_POLY if crc & 1 else 0)
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


_CHUNK = 1024  # bytes per lane of the vectorised CRC below


def _crc_bytes(register: int, data: bytes) -> int:
    """The CRC register after ``data``, one table lookup per byte."""
    table = _CRC_TABLE
    for byte in data:
        register = table[(register ^ byte) & 0xFF] ^ (register >> 8)
    return register


def _lanes(chunks: np.ndarray, register: np.ndarray) -> np.ndarray:
    """The registers after each row of ``chunks`` (rows side by side, a lookup per column)."""
    table = np.asarray(_CRC_TABLE, dtype=np.uint32)
    for column in np.ascontiguousarray(chunks.T):  # uint8: a quarter of the copying
        register = table[(register ^ column) & 0xFF] ^ (register >> 8)
    return register


@functools.cache
def _zeros_tables() -> np.ndarray:
    """What _CHUNK zero bytes do to a register, by each of its four bytes (it is linear)."""
    basis = np.array([1 << bit for bit in range(32)], dtype=np.uint32)
    shifted = _lanes(np.zeros((32, _CHUNK), dtype=np.uint8), basis)
    tables = np.zeros((4, 256), dtype=np.uint32)
    for value in range(256):
        for byte in range(4):
            bits = [shifted[byte * 8 + b] for b in range(8) if value >> b & 1]
            tables[byte, value] = np.bitwise_xor.reduce(bits) if bits else 0
    return tables


def crc32c(data: bytes | memoryview) -> int:
    """CRC32C (Castagnoli) of ``data``: table-driven, with the data cut in 1 KiB chunks that
    numpy runs side by side (each from a zero register), then joined, since a CRC is
    linear: register(s, chunk) = register(0, chunk) ^ register(s, zeros)."""
    data = bytes(data)
    whole = len(data) // _CHUNK
    if whole < 8:
        return _crc_bytes(_MASK32, data) ^ _MASK32
    chunks = np.frombuffer(data, dtype=np.uint8, count=whole * _CHUNK).reshape(whole, _CHUNK)
    each = _lanes(chunks, np.zeros(whole, dtype=np.uint32)).tolist()
    t0, t1, t2, t3 = (row.tolist() for row in _zeros_tables())
    register = _MASK32
    for chunk_register in each:
        register = (t0[register & 0xFF] ^ t1[(register >> 8) & 0xFF]
                    ^ t2[(register >> 16) & 0xFF] ^ t3[register >> 24] ^ chunk_register)
    return _crc_bytes(register, data[whole * _CHUNK:]) ^ _MASK32


def masked_crc32c(data: bytes | memoryview) -> int:
    """The CRC32C as LevelDB and TensorFlow store it: rotated right by 15, plus a constant."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _CRC_MASK_DELTA) & _MASK32


class BundleError(WeightsError):
    """A TensorFlow checkpoint that cannot be read; the message names the file and why."""


@dataclass(frozen=True)
class Entry:
    """One tensor's BundleEntryProto."""

    dtype: int
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc: int
    sliced: bool


@dataclass(frozen=True)
class Header:
    """The BundleHeaderProto under the empty key."""

    num_shards: int
    endianness: int
    producer: int


# -- protobuf wire format --------------------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode a base-128 varint at ``pos``; (value, position after it)."""
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("a varint runs past its end")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """The (field number, value) pairs of a protobuf message: ints for varint and fixed
    fields, bytes for length-delimited ones."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield number, value
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if pos + width > len(buf):
                raise ValueError("a fixed field runs past its end")
            yield number, int.from_bytes(buf[pos:pos + width], "little")
            pos += width
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise ValueError("a field runs past its end")
            yield number, buf[pos:pos + length]
            pos += length
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def _shape(buf: bytes) -> tuple[int, ...]:
    """A TensorShapeProto's dimension sizes (field 2: Dim, its field 1: size)."""
    dims = []
    for number, dim in _fields(buf):
        if number == 2 and isinstance(dim, bytes):
            size = next((v for n, v in _fields(dim) if n == 1 and isinstance(v, int)), 0)
            dims.append(size)
    return tuple(dims)


def parse_entry(buf: bytes) -> Entry:
    """Decode a BundleEntryProto."""
    values: dict[int, int | bytes] = {}
    sliced = False
    for number, value in _fields(buf):
        sliced = sliced or number == 7
        values[number] = value
    shape = values.get(2, b"")

    def num(field: int) -> int:
        value = values.get(field, 0)
        return value if isinstance(value, int) else 0

    return Entry(num(1), _shape(shape if isinstance(shape, bytes) else b""), num(3), num(4),
                 num(5), num(6), sliced)


def parse_header(buf: bytes) -> Header:
    """Decode a BundleHeaderProto (its VersionDef's producer only)."""
    values = dict(_fields(buf))
    version = values.get(3, b"")
    producer = dict(_fields(version)).get(1, 0) if isinstance(version, bytes) else 0
    shards, endianness = values.get(1, 0), values.get(2, LITTLE_ENDIAN)
    return Header(shards if isinstance(shards, int) else 0,
                  endianness if isinstance(endianness, int) else -1,
                  producer if isinstance(producer, int) else 0)


# -- the sorted string table -------------------------------------------------------------


def _handle(buf: bytes, pos: int) -> tuple[tuple[int, int], int]:
    """A BlockHandle (offset, size) at ``pos``, and the position after it."""
    offset, pos = _varint(buf, pos)
    size, pos = _varint(buf, pos)
    return (offset, size), pos


def _block(table: bytes, handle: tuple[int, int]) -> bytes:
    """A block's contents, its trailer's checksum checked."""
    offset, size = handle
    end = offset + size
    if end + BLOCK_TRAILER_BYTES > len(table):
        raise ValueError("a block runs past the end of the file (truncated?)")
    kind = table[end]
    stored = int.from_bytes(table[end + 1:end + BLOCK_TRAILER_BYTES], "little")
    if masked_crc32c(table[offset:end + 1]) != stored:
        raise ValueError(f"a block's crc32c does not match (bytes {offset}..{end})")
    if kind != UNCOMPRESSED:
        name = COMPRESSIONS.get(kind, f"type {kind}")
        raise ValueError(f"a block is {name}-compressed; only uncompressed tables are "
                         "supported (TensorFlow writes checkpoint indexes uncompressed)")
    return table[offset:end]


def _block_entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    """A block's (key, value) pairs: each key shares a prefix with the one before it."""
    if len(block) < 4:
        raise ValueError("a block is too short")
    restarts = int.from_bytes(block[-4:], "little")
    limit = len(block) - 4 - 4 * restarts
    if limit < 0:
        raise ValueError("a block's restart array runs past its start")
    pos, key = 0, b""
    while pos < limit:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        length, pos = _varint(block, pos)
        if shared > len(key) or pos + unshared + length > limit:
            raise ValueError("a table entry runs past its block")
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        yield key, block[pos:pos + length]
        pos += length


def read_table(table: bytes) -> dict[bytes, bytes]:
    """Every (key, value) of a LevelDB-format table, in order."""
    if len(table) < FOOTER_BYTES:
        raise ValueError("too short for a table footer (truncated?)")
    footer = table[-FOOTER_BYTES:]
    if int.from_bytes(footer[-8:], "little") != TABLE_MAGIC:
        raise ValueError("no table magic number at its end (truncated, or not a checkpoint index)")
    _metaindex, pos = _handle(footer, 0)
    index_handle, _ = _handle(footer, pos)
    entries: dict[bytes, bytes] = {}
    for _, handle_bytes in _block_entries(_block(table, index_handle)):
        handle, _ = _handle(handle_bytes, 0)
        entries.update(_block_entries(_block(table, handle)))
    return entries


# -- the bundle ---------------------------------------------------------------------------


def index_path(prefix: Path) -> Path:
    return prefix.with_name(prefix.name + ".index")


def shard_path(prefix: Path, shard: int, num_shards: int) -> Path:
    return prefix.with_name(f"{prefix.name}.data-{shard:05d}-of-{num_shards:05d}")


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise BundleError(f"{path}: the checkpoint's {what} is missing") from None
    except OSError as exc:
        raise BundleError(f"cannot read {path}: {exc.strerror or exc}") from exc


@dataclass(frozen=True)
class Bundle:
    """A checkpoint's index, read and checked: its header and each tensor's entry."""

    prefix: Path
    header: Header
    entries: dict[str, Entry]

    @classmethod
    def open(cls, prefix: Path) -> Bundle:
        """Read ``PREFIX.index``; a file that is not a readable V2 index is a BundleError."""
        path = index_path(prefix)
        data = _read(path, "index")
        try:
            raw = read_table(data)
            header = parse_header(raw.pop(b"", b""))
            entries = {key.decode("utf-8"): parse_entry(value) for key, value in raw.items()}
        except (ValueError, UnicodeDecodeError) as exc:
            raise BundleError(
                f"{path} is not a readable TensorFlow checkpoint index: {exc}") from exc
        if header.num_shards < 1:
            raise BundleError(f"{path} has no bundle header (not a TensorFlow V2 checkpoint?)")
        if header.endianness != LITTLE_ENDIAN:
            raise BundleError(f"{path} is a big-endian checkpoint; only little-endian is supported")
        return cls(prefix, header, entries)

    def is_object_based(self) -> bool:
        """Whether this is a TF2 object-based checkpoint (tf.train.Checkpoint)."""
        return any(k == OBJECT_GRAPH_KEY or k.endswith(OBJECT_VALUE_SUFFIX) for k in self.entries)

    def read_all(self, names: set[str]) -> dict[str, np.ndarray]:
        """Every tensor's bytes checked against its crc32c; the arrays of ``names``."""
        shards: dict[int, bytes] = {}
        arrays: dict[str, np.ndarray] = {}
        for name, entry in self.entries.items():
            if entry.shard not in shards:
                where = shard_path(self.prefix, entry.shard, self.header.num_shards)
                shards[entry.shard] = _read(where, f"data shard {entry.shard}")
            raw = self._tensor_bytes(name, entry, shards[entry.shard])
            if name in names:
                arrays[name] = self._array(name, entry, raw)
        return arrays

    def _tensor_bytes(self, name: str, entry: Entry, shard: bytes) -> bytes:
        where = shard_path(self.prefix, entry.shard, self.header.num_shards)
        end = entry.offset + entry.size
        if end > len(shard):
            raise BundleError(f"{where} is truncated: tensor {name} needs bytes "
                              f"{entry.offset}..{end}, the file has {len(shard)}")
        raw = shard[entry.offset:end]
        if masked_crc32c(raw) != entry.crc:
            raise BundleError(
                f"{where}: tensor {name} fails its crc32c check (the file is corrupt)")
        return raw

    def _array(self, name: str, entry: Entry, raw: bytes) -> np.ndarray:
        where = index_path(self.prefix)
        dtype = DTYPES.get(entry.dtype)
        if dtype is None or entry.sliced:
            why = ("is sliced (partitioned)" if entry.sliced
                   else f"has dtype {entry.dtype}, not a float")
            raise BundleError(f"{where}: tensor {name} {why}; not an AnimeGANv2 generator weight")
        count = int(np.prod(entry.shape, dtype=np.int64))
        if count * dtype.itemsize != len(raw):
            raise BundleError(f"{where}: tensor {name} holds {len(raw)} bytes, its shape "
                              f"{entry.shape} needs {count * dtype.itemsize}")
        return np.frombuffer(raw, dtype=dtype).reshape(entry.shape).astype(np.float32)

