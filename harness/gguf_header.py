"""A GGUF file's header as llama.cpp itself parses it: ggml's GGUF reader, in the libggml that
llama-cpp-python ships, called through ctypes.

Why not the `gguf` package's GGUFReader: it parses every metadata array element by element in
Python, about 5 s for a file with SmolLM2's 49,152-token vocabulary on this project's 2-core
machine, paid by every job that checks its artifact (ggml: 10-25 ms a file, after loading
libggml once per process, about 0.3 s). And ggml's verdict on a header is the one that
matters: it is the parser llama.cpp loads the model with. Only the header is read (no tensor
data); metadata arrays (the vocabulary) are left in the file.

It runs native code in the sweep's own process, which is safe here: the reader checks every
length and offset against the file and returns NULL on damage, and each value getter (which
aborts on a type it was not made for) is picked by the value's type. The signatures are those
of the `gguf.h` that llama-cpp-python 0.3.36 vendors (`llama_cpp._ggml` is its internal
handle on libggml).
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

# ggml's scalar gguf_type values (gguf.h): the suffix of each one's getter, and its C type.
_SCALARS = {
    0: ("u8", ctypes.c_uint8),
    1: ("i8", ctypes.c_int8),
    2: ("u16", ctypes.c_uint16),
    3: ("i16", ctypes.c_int16),
    4: ("u32", ctypes.c_uint32),
    5: ("i32", ctypes.c_int32),
    6: ("f32", ctypes.c_float),
    7: ("bool", ctypes.c_bool),
    10: ("u64", ctypes.c_uint64),
    11: ("i64", ctypes.c_int64),
    12: ("f64", ctypes.c_double),
}
_STRING = 8
_MAX_DIMS = 4  # GGML_MAX_DIMS: gguf_get_tensor_ne's array length


class _InitParams(ctypes.Structure):
    # struct gguf_init_params: no ggml context asked for, so no tensor data is read
    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.c_void_p)]


@dataclass(frozen=True)
class Tensor:
    name: str
    type_name: str  # ggml's name for its type, as the gguf package spells it: F32, Q4_K, ...
    n_elements: int
    offset: int  # from the start of the file
    n_bytes: int


@dataclass(frozen=True)
class Header:
    """Every metadata key; the values of the scalar and string ones (arrays are not read)."""

    keys: frozenset[str]
    values: dict[str, Any]
    tensors: list[Tensor]

    @property
    def file_type(self) -> Optional[str]:
        """The llama.cpp file type the header declares (Q4_K_M, Q8_0, ...), if it declares one."""
        from gguf import LlamaFileType

        value = self.values.get("general.file_type")
        if value is None:
            return None
        try:
            return LlamaFileType(value).name.removeprefix("MOSTLY_")
        except ValueError:  # a type newer than the gguf package's list
            return f"file type {value}"


@functools.cache
def _ggml() -> ctypes.CDLL:
    from llama_cpp._ggml import libggml  # ggml-base's symbols resolve through it

    ctx, i64, size = ctypes.c_void_p, ctypes.c_int64, ctypes.c_size_t
    signatures = {
        "gguf_init_from_file": ([ctypes.c_char_p, _InitParams], ctx),
        "gguf_free": ([ctx], None),
        "gguf_get_data_offset": ([ctx], size),
        "gguf_get_n_kv": ([ctx], i64),
        "gguf_get_key": ([ctx, i64], ctypes.c_char_p),
        "gguf_get_kv_type": ([ctx, i64], ctypes.c_int),
        "gguf_get_val_str": ([ctx, i64], ctypes.c_char_p),
        "gguf_get_n_tensors": ([ctx], i64),
        "gguf_get_tensor_name": ([ctx, i64], ctypes.c_char_p),
        "gguf_get_tensor_type": ([ctx, i64], ctypes.c_int),
        "gguf_get_tensor_offset": ([ctx, i64], size),
        "gguf_get_tensor_size": ([ctx, i64], size),
        "gguf_get_tensor_ne": ([ctx, i64], ctypes.POINTER(ctypes.c_int64)),
        "ggml_type_name": ([ctypes.c_int], ctypes.c_char_p),
        **{f"gguf_get_val_{name}": ([ctx, i64], c_type) for name, c_type in _SCALARS.values()},
    }
    for name, (args, result) in signatures.items():
        fn = getattr(libggml, name)
        fn.argtypes, fn.restype = args, result
    return libggml


def read_header(path: Path) -> Header:
    """The header of the GGUF file at `path`. ValueError when ggml cannot parse it; the
    tensors' data is not checked against the file's size here."""
    lib = _ggml()
    ctx = lib.gguf_init_from_file(os.fsencode(path), _InitParams(True, None))
    if not ctx:
        raise ValueError("llama.cpp's GGUF reader rejected its header; its reason is in llama.cpp's log above")
    try:
        keys, values = set(), {}
        for i in range(lib.gguf_get_n_kv(ctx)):
            key, kind = lib.gguf_get_key(ctx, i).decode(), lib.gguf_get_kv_type(ctx, i)
            keys.add(key)
            # each getter aborts the process on a type it was not made for: dispatch on the type
            if kind == _STRING:
                values[key] = lib.gguf_get_val_str(ctx, i).decode(errors="replace")
            elif kind in _SCALARS:
                values[key] = getattr(lib, f"gguf_get_val_{_SCALARS[kind][0]}")(ctx, i)
        data_offset = lib.gguf_get_data_offset(ctx)
        tensors = [
            Tensor(
                name=lib.gguf_get_tensor_name(ctx, i).decode(errors="replace"),
                type_name=lib.ggml_type_name(lib.gguf_get_tensor_type(ctx, i)).decode().upper(),
                n_elements=math.prod(lib.gguf_get_tensor_ne(ctx, i)[:_MAX_DIMS]),
                offset=data_offset + lib.gguf_get_tensor_offset(ctx, i),
                n_bytes=lib.gguf_get_tensor_size(ctx, i),
            )
            for i in range(lib.gguf_get_n_tensors(ctx))
        ]
    finally:
        lib.gguf_free(ctx)
    return Header(frozenset(keys), values, tensors)
