"""Arrays in and out of the wire's ``Tensor {dtype, shape, data}`` with one copy per direction.

In: the caller's array (numpy, or torch on any device) is copied once, straight into the request's
``data`` bytes (a writable view of the Cap'n Proto message), converting its dtype on the way when
the wire has no such dtype. Out: the reply's ``data`` is read through a read-only view of the
reply message and copied once into a new array of the caller's kind, dtype and device.

The wire carries f32, bf16 and f16, little-endian, row-major. Any leading dimensions are allowed:
an array [..., H] travels as [T, H] with T the product of the leading dimensions, and the output
comes back in the input's shape.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np

from .errors import InvalidArgument

# Wire dtype names (the schema's DType enum) and their numpy equivalents (bf16 has none).
_NP_WIRE = {np.dtype(np.float32): "f32", np.dtype(np.float16): "f16"}
_NP_CONVERT = (np.dtype(np.float64),)  # sent as f32, returned as float64

if sys.byteorder != "little":  # pragma: no cover - every supported platform is little-endian
    raise ImportError("moe_cluster needs a little-endian machine (the wire format is)")


def _torch():
    """torch if the caller already imported it (a torch tensor implies it), else None."""
    return sys.modules.get("torch")


def is_torch(x) -> bool:
    torch = _torch()
    return torch is not None and isinstance(x, torch.Tensor)


class Prepared:
    """One array ready to be written into a request: wire dtype, wire shape [T, H], and how to
    give the answer back in the caller's terms."""

    __slots__ = ("src", "wire", "rows", "cols", "shape", "kind", "dtype", "device", "nbytes")

    def __init__(self, src, wire, rows, cols, shape, kind, dtype, device):
        self.src = src
        self.wire = wire
        self.rows = rows
        self.cols = cols
        self.shape = shape
        self.kind = kind  # "numpy" | "torch"
        self.dtype = dtype
        self.device = device
        self.nbytes = rows * cols * (4 if wire == "f32" else 2)


def prepare(x, name: str) -> Prepared:
    """Checks what must be checked before anything is sent (an array of floats with at least one
    dimension); the server checks the rest (hidden size, finiteness, token limits)."""
    if is_torch(x):
        torch = _torch()
        if x.dim() == 0:
            raise InvalidArgument(f"{name}: expected [tokens, hidden], got a scalar")
        if x.dtype == torch.float32:
            wire = "f32"
        elif x.dtype == torch.bfloat16:
            wire = "bf16"
        elif x.dtype == torch.float16:
            wire = "f16"
        elif x.dtype == torch.float64:
            wire = "f32"
        else:
            raise InvalidArgument(f"{name}: dtype {x.dtype} is not a floating-point type "
                                  "(float32, bfloat16, float16 or float64)")
        if x.requires_grad:
            x = x.detach()
        shape = tuple(x.shape)
        cols = shape[-1]
        rows = x.numel() // cols if cols else 0
        return Prepared(x, wire, rows, cols, shape, "torch", x.dtype, x.device)
    a = x if isinstance(x, np.ndarray) else np.asarray(x)
    if a.ndim == 0:
        raise InvalidArgument(f"{name}: expected [tokens, hidden], got a scalar")
    wire = _NP_WIRE.get(a.dtype)
    if wire is None:
        if a.dtype in _NP_CONVERT or a.dtype.kind in "iub":
            wire = "f32"
        else:
            raise InvalidArgument(f"{name}: dtype {a.dtype} is not a numeric type")
    cols = a.shape[-1]
    rows = a.size // cols if cols else 0
    out_dtype = a.dtype if a.dtype.kind == "f" else np.dtype(np.float32)
    return Prepared(a, wire, rows, cols, a.shape, "numpy", out_dtype, None)


def to_host(p: Prepared) -> Prepared:
    """For a tensor on an accelerator: bring it to host memory in the caller's thread (so the copy
    follows the caller's stream), before another thread writes it into the request."""
    if p.kind == "torch" and p.src.device.type != "cpu":
        p.src = p.src.to("cpu")
    return p


def contiguous_bytes(p: Prepared):
    """The caller's array as a bytes-like view of exactly the wire's bytes (no copy), when it is
    one already: C-contiguous, in host memory, of the wire's dtype. None otherwise."""
    src = p.src
    if p.kind == "numpy":
        if src.flags.c_contiguous and _NP_WIRE.get(src.dtype) == p.wire:
            return memoryview(src)
        return None
    torch = _torch()
    if src.device.type != "cpu" or not src.is_contiguous() or src.dtype == torch.float64:
        return None
    try:
        if src.dtype == torch.bfloat16:
            return memoryview(src.view(torch.int16).numpy())
        return memoryview(src.numpy())
    except (RuntimeError, TypeError):  # conjugate/negative views and the like
        return None


def write(view: memoryview, p: Prepared) -> None:
    """The one copy in: the caller's array into the request's data bytes (for arrays that
    ``contiguous_bytes`` cannot hand over as they are: strided, another dtype, on a device)."""
    if p.rows == 0 or p.cols == 0:
        return
    if p.kind == "torch":
        torch = _torch()
        wire = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[p.wire]
        dest = torch.frombuffer(view, dtype=wire).view(p.shape)
        dest.copy_(p.src)
        return
    dest = np.frombuffer(view, dtype=np.float32 if p.wire == "f32" else np.float16)
    np.copyto(dest.reshape(p.shape), p.src, casting="unsafe")


def read(view: memoryview, rows: int, cols: int, like: Prepared | None, shape=None):
    """The one copy out: the reply's f32 [rows, cols] into a new array shaped like the input
    (``shape``, default [rows, cols]) of the caller's kind; its dtype and device when ``like`` is
    given, float32 otherwise."""
    shape = shape if shape is not None else (rows, cols)
    src = np.frombuffer(view, dtype=np.float32, count=rows * cols)
    if like is None or like.kind == "numpy":
        if like is None or like.dtype == np.float32:
            return src.reshape(shape).copy()
        return src.reshape(shape).astype(like.dtype)
    torch = _torch()
    if rows * cols == 0:
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    with warnings.catch_warnings():
        # The view is only read, and only for the copy below.
        warnings.simplefilter("ignore", UserWarning)
        wire = torch.frombuffer(view, dtype=torch.float32, count=rows * cols)
    if like.dtype == torch.float32 and like.device.type == "cpu":
        return wire.view(shape).clone()
    return wire.view(shape).to(device=like.device, dtype=like.dtype)


def to_device(out, like: Prepared):
    """The caller's thread's half of ``read`` for a tensor on an accelerator."""
    if like.kind == "torch" and out.device != like.device:
        return out.to(like.device)
    return out
