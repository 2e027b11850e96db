"""The model fingerprint of a checkpoint directory, computed exactly as the services compute it
(``common/model_fingerprint.cc``): config.json's bytes, then per safetensors file (in name order)
its name, its header and, per tensor (in name order), the tensor's name and 4 windows of 64 bytes
of its data (start, 1/3, 2/3, end; the whole tensor when it is no larger than that), each field
preceded by its length, fed to two 64-bit byte-at-a-time streams. ``Info.fingerprint`` is the
router's; comparing the two tells whether the cluster serves the checkpoint a model was loaded
from. Reads ~256 bytes per tensor plus the headers.
"""

from __future__ import annotations

import json
import os
import struct

_M64 = (1 << 64) - 1
_WINDOW = 64


class _Hash128:
    def __init__(self):
        self.a = 0xCBF29CE484222325
        self.b = 0x2545F4914F6CDD1D

    def bytes_(self, data: bytes) -> None:
        a, b = self.a, self.b
        for c in data:
            a = ((a ^ c) * 0x100000001B3) & _M64
            b = ((b ^ (c + 0x9E)) * 0x9E3779B97F4A7C15) & _M64
            b = ((b << 29) | (b >> 35)) & _M64
        self.a, self.b = a, b

    def u64(self, v: int) -> None:
        self.bytes_(struct.pack("<Q", v))

    def field(self, data: bytes) -> None:
        self.u64(len(data))
        self.bytes_(data)

    @staticmethod
    def _avalanche(h: int) -> int:
        h ^= h >> 33
        h = (h * 0xFF51AFD7ED558CCD) & _M64
        h ^= h >> 33
        h = (h * 0xC4CEB9FE1A85EC53) & _M64
        h ^= h >> 33
        return h

    def hex(self) -> str:
        return "%016x%016x" % (self._avalanche(self.a), self._avalanche(self.b))


def _sample_ranges(n: int):
    if n <= 4 * _WINDOW:
        return [(0, n)]
    return [(0, _WINDOW), (n // 3, _WINDOW), (n * 2 // 3, _WINDOW), (n - _WINDOW, _WINDOW)]


def checkpoint_files(directory: str) -> list[str] | None:
    """The safetensors files of a HuggingFace checkpoint directory, or None if it is not one."""
    if not os.path.isfile(os.path.join(directory, "config.json")):
        return None
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index) as f:
            return sorted(set(json.load(f)["weight_map"].values()))
    if os.path.isfile(os.path.join(directory, "model.safetensors")):
        return ["model.safetensors"]
    return None


def model_fingerprint(directory: str) -> str:
    files = checkpoint_files(directory)
    if files is None:
        raise FileNotFoundError(f"{directory}: not a checkpoint directory (config.json and "
                                "model.safetensors or model.safetensors.index.json)")
    h = _Hash128()
    h.field(b"moe-cluster model fingerprint v1")
    with open(os.path.join(directory, "config.json"), "rb") as f:
        h.field(f.read())
    h.u64(len(files))
    for name in files:  # sorted: bytewise order of the names, as the services sort them
        with open(os.path.join(directory, name), "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            header = f.read(header_len)
            data_start = 8 + header_len
            h.field(os.path.basename(name).encode())
            h.field(header)
            tensors = json.loads(header)
            for tname in sorted((t for t in tensors if t != "__metadata__"),
                                key=lambda s: s.encode()):
                begin, end = tensors[tname]["data_offsets"]
                h.field(tname.encode())
                for off, size in _sample_ranges(end - begin):
                    f.seek(data_start + begin + off)
                    h.field(f.read(size))
    return h.hex()
