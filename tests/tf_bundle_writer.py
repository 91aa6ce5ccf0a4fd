"""A small TensorBundle (TensorFlow V2 checkpoint) writer for tests: the files TensorFlow's
Saver writes (a LevelDB-format ``.index`` table of BundleEntryProto records, a ``.data``
shard), so the reader's tests need no TensorFlow and can write hostile variants."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from animegan_cli.model.tfbundle import TABLE_MAGIC, masked_crc32c
from animegan_cli.model.tfimport import _our_shapes, _tf_shape, tf_names

DT_FLOAT = 1


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field_int(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def field_bytes(number: int, value: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(value)) + value


def field_fixed32(number: int, value: int) -> bytes:
    return varint(number << 3 | 5) + value.to_bytes(4, "little")


def entry_proto(shape: tuple[int, ...], offset: int, size: int, crc: int,
                dtype: int = DT_FLOAT, shard: int = 0) -> bytes:
    dims = b"".join(field_bytes(2, field_int(1, d)) for d in shape)
    return (field_int(1, dtype) + field_bytes(2, dims) + field_int(3, shard)
            + field_int(4, offset) + field_int(5, size) + field_fixed32(6, crc))


def header_proto(num_shards: int = 1, endianness: int = 0) -> bytes:
    return field_int(1, num_shards) + field_int(2, endianness) + field_bytes(3, field_int(1, 1))


def block(entries: list[tuple[bytes, bytes]], restart_interval: int = 4) -> bytes:
    """A table block: keys prefix-compressed against the one before, restart points."""
    out, restarts, previous = bytearray(), [], b""
    for i, (key, value) in enumerate(entries):
        shared = 0
        if i % restart_interval == 0:
            restarts.append(len(out))
        else:
            while shared < min(len(key), len(previous)) and key[shared] == previous[shared]:
                shared += 1
        out += varint(shared) + varint(len(key) - shared) + varint(len(value))
        out += key[shared:] + value
        previous = key
    for restart in restarts or [0]:
        out += restart.to_bytes(4, "little")
    out += len(restarts or [0]).to_bytes(4, "little")
    return bytes(out)


def table(entries: list[tuple[bytes, bytes]], per_block: int = 16, compression: int = 0) -> bytes:
    """A LevelDB-format table: data blocks, an empty metaindex block, the index, the footer."""
    out = bytearray()

    def put(contents: bytes) -> bytes:
        handle = varint(len(out)) + varint(len(contents))
        kind = bytes([compression])
        out.extend(contents + kind + masked_crc32c(contents + kind).to_bytes(4, "little"))
        return handle

    index = []
    for start in range(0, len(entries), per_block):
        chunk = entries[start:start + per_block]
        index.append((chunk[-1][0], put(block(chunk))))
    metaindex = put(block([]))
    index_handle = put(block(index, restart_interval=1))
    footer = (metaindex + index_handle).ljust(40, b"\0") + TABLE_MAGIC.to_bytes(8, "little")
    return bytes(out + footer)


def write_bundle(prefix: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``prefix.index`` and ``prefix.data-00000-of-00001`` holding float32 ``arrays``."""
    data, entries = bytearray(), [(b"", header_proto())]
    for name in sorted(arrays):
        raw = np.ascontiguousarray(arrays[name], dtype="<f4").tobytes()
        entries.append((name.encode(), entry_proto(arrays[name].shape, len(data), len(raw),
                                                   masked_crc32c(raw))))
        data += raw
    prefix.parent.mkdir(parents=True, exist_ok=True)
    prefix.with_name(prefix.name + ".index").write_bytes(table(entries))
    prefix.with_name(prefix.name + ".data-00000-of-00001").write_bytes(bytes(data))
    return prefix


def generator_arrays(seed: int = 0, root: str = "generator/G_MODEL/") -> dict[str, np.ndarray]:
    """Random values for every variable of AnimeGANv2's generator, in TF layouts."""
    rng = np.random.default_rng(seed)
    return {root + tf: rng.normal(0, 0.1, _tf_shape(_our_shapes()[key], kind)).astype("<f4")
            for key, (tf, kind) in tf_names().items()}
