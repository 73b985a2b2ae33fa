#!/usr/bin/python3
"""Independent check of the safetensors files our writer produces.

Runs `test_safetensors --write-sample FILE`, then parses FILE with nothing but
json + struct + numpy, following the format spec and the checks the Python
`safetensors` library applies on load (it is not installed here):
header length + 8 is a multiple of 64 (our writer's promise; the library only
needs 8), the header is JSON padded with spaces, data_offsets tile the data
section exactly (contiguous, no overlap, no gap, nothing after), and every
tensor's bytes equal values recomputed here, bf16 rounding included.

usage: check_layout.py PATH/TO/test_safetensors
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

DTYPES = {"F32": np.float32, "F64": np.float64, "I32": np.int32, "I64": np.int64,
          "U8": np.uint8, "BF16": np.uint16, "F16": np.float16}


def f32_to_bf16_bits(x):
    """Round to nearest even, NaN kept NaN (as st_f32_to_bf16)."""
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF
    r = np.where(nan, (u >> 16) | 0x40, r)
    return r.astype(np.uint16)


def expected():
    b = ((np.arange(5, dtype=np.float32) - 2) * np.float32(0.1)).astype(np.float32)
    b = np.append(b, np.array([0x3F818000], dtype=np.uint32).view(np.float32))
    return {
        "a.f32": ("F32", [3, 4], (np.arange(12, dtype=np.float32) * np.float32(0.25) - 1).reshape(3, 4)),
        "b.bf16": ("BF16", [6], f32_to_bf16_bits(b)),
        "c.u8": ("U8", [5], np.array([0, 1, 2, 3, 255], dtype=np.uint8)),
        "d.i64": ("I64", [3], np.array([-1, 1 << 40, 7], dtype=np.int64)),
        "e.f64": ("F64", [2], np.array([np.pi, -2.5], dtype=np.float64)),
        "f.empty": ("F32", [0], np.zeros(0, dtype=np.float32)),
        "g.i32": ("I32", [2, 2], np.array([[-7, 0], [7, 2**31 - 1]], dtype=np.int32)),
    }


def main():
    exe = sys.argv[1]
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "sample.safetensors")
        subprocess.run([exe, "--write-sample", path], check=True)
        with open(path, "rb") as f:
            buf = f.read()

    (n,) = struct.unpack("<Q", buf[:8])
    assert (8 + n) % 64 == 0, f"8 + header length {n} is not a multiple of 64"
    text = buf[8:8 + n].decode("utf-8")
    assert text.startswith("{"), "header must start with '{'"
    stripped = text.rstrip(" ")
    assert stripped.endswith("}"), "header padding must be spaces"
    header = json.loads(stripped)
    data = buf[8 + n:]

    meta = header.pop("__metadata__")
    assert meta == {"name": "sample", "utf8": "π≈3.14159"}, meta
    exp = expected()
    assert list(header) == list(exp), f"tensor order {list(header)} != insertion order"

    spans = sorted((tuple(v["data_offsets"]), k) for k, v in header.items())
    end = 0
    for (b, e), k in spans:
        assert b == end, f"{k}: begins at {b}, expected {end} (gap or overlap)"
        end = e
    assert end == len(data), f"offsets end at {end}, data section is {len(data)} bytes"

    for k, (dtype, shape, values) in exp.items():
        v = header[k]
        assert v["dtype"] == dtype and v["shape"] == shape, (k, v)
        b, e = v["data_offsets"]
        itemsize = np.dtype(DTYPES[dtype]).itemsize
        assert (8 + n + b) % itemsize == 0, f"{k}: not aligned to {itemsize} bytes in the file"
        got = np.frombuffer(data[b:e], dtype=np.dtype(DTYPES[dtype]).newbyteorder("<")).reshape(shape)
        assert np.array_equal(got, values.reshape(shape)), f"{k}: {got} != {values}"
    # the tie value 0x3f818000 must have rounded up to the even 0x3f82
    assert int(np.frombuffer(data[slice(*header["b.bf16"]["data_offsets"])], "<u2")[5]) == 0x3F82
    print(f"ok: {len(exp)} tensors, header {n} bytes, data {len(data)} bytes")


if __name__ == "__main__":
    main()
