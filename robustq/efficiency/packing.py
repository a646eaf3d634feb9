"""Low-bit integer codes packed into bytes, and codes recovered from baked weights.

How it works
------------
A quantized weight is ``Q(w) = s * c`` with one fp32 scale ``s >= 0`` per tensor and signed
integer codes ``c`` with ``|c| <= L`` (``quant/projections.py``). On disk each code takes
``m`` bits:

* ``m = 1`` (binary, codes ``{-1, +1}``): the bit is ``(c + 1) / 2``;
* ``m >= 2`` (ternary: ``m = 2, L = 1``; m-bit: ``L = 2^(m-1) - 1``): the offset code
  ``u = c + L`` in ``[0, 2L]``. ``2L <= 2^m - 2``, so the all-ones pattern ``2^m - 1`` is never
  written: reading it means the file was tampered with (``unpack_codes`` rejects it).

The ``n`` codes of a tensor (C order) form one little-endian bit stream: code ``i`` occupies
bits ``i*m .. i*m + m - 1`` (least significant first), bit ``b`` of the stream is bit
``b % 8`` of byte ``b // 8``; the last byte is padded with zero bits. So ``ceil(n m / 8)``
bytes hold a tensor whatever ``m`` is (3, 5, 6 and 7 bits straddle bytes).

Binary weights can hold exact zeros (``sign(0) = 0``, or a slice zeroed by hand). One bit
cannot store a zero, so such a tensor is written with the 2-bit ternary coding instead; after
pruning removed the zero slices this almost never happens.

Recovering ``(c, s)`` from a baked weight ``w = fl(s * c)`` (what ``model.pt`` holds): with
``a`` the smallest nonzero ``|w|`` and ``k`` its unknown code, try ``k = 1, 2, ..., L``:
``s' = a / k`` (and its neighbouring floats), ``c' = round(w / s')``; accept the first pair
with ``|c'| <= L`` and ``fl(s' * c') == w`` bit for bit. The true pair always passes, so a
weight that came from the projection is always recovered exactly.
"""
from __future__ import annotations

import math
from typing import Optional

import torch


def code_bits(bits: int, codes: torch.Tensor) -> int:
    """The storage width: the projection's ``bits``, except 1-bit codes holding zeros take 2."""
    return 2 if bits == 1 and bool((codes == 0).any()) else bits


def _max_offset(bits: int, levels: int) -> int:
    return 1 if bits == 1 else 2 * levels


def pack_codes(codes: torch.Tensor, bits: int, levels: int) -> torch.Tensor:
    """Signed integer codes (any shape) -> 1-D uint8 tensor of ``ceil(n * bits / 8)`` bytes."""
    c = codes.detach().reshape(-1).to(torch.int64)
    if c.numel() and int(c.abs().max()) > levels:
        raise ValueError(f"codes exceed +-{levels}")
    if bits == 1:
        if bool((c == 0).any()):
            raise ValueError("1-bit codes cannot hold zeros; use 2 bits")
        u = (c + 1) // 2
    else:
        if 2 * levels > 2 ** bits - 2:
            raise ValueError(f"{bits} bits cannot hold codes +-{levels}")
        u = c + levels
    shifts = torch.arange(bits, dtype=torch.int64)
    stream = ((u.unsqueeze(1) >> shifts) & 1).reshape(-1)            # (n * bits,) LSB first
    stream = torch.nn.functional.pad(stream, (0, (-stream.numel()) % 8))
    weights = torch.tensor([1 << i for i in range(8)], dtype=torch.int64)
    return (stream.reshape(-1, 8) * weights).sum(1).to(torch.uint8)


def packed_nbytes(n: int, bits: int) -> int:
    return (n * bits + 7) // 8


def unpack_codes(packed: torch.Tensor, n: int, bits: int, levels: int) -> torch.Tensor:
    """Inverse of ``pack_codes``: ``n`` signed codes (int64, 1-D).

    Raises ValueError when the byte count is wrong, a code lies outside the bit width's
    range, or the padding bits are not zero."""
    if packed.dtype != torch.uint8 or packed.dim() != 1:
        raise ValueError(f"packed codes must be a 1-D uint8 tensor, got {packed.dtype} {tuple(packed.shape)}")
    if packed.numel() != packed_nbytes(n, bits):
        raise ValueError(f"{packed.numel()} bytes cannot hold {n} codes of {bits} bits "
                         f"({packed_nbytes(n, bits)} expected)")
    bytes_ = packed.to(torch.int64)
    stream = ((bytes_.unsqueeze(1) >> torch.arange(8)) & 1).reshape(-1)
    if bool(stream[n * bits:].any()):
        raise ValueError("nonzero padding bits after the last code")
    shifts = torch.arange(bits, dtype=torch.int64)
    u = (stream[: n * bits].reshape(n, bits) << shifts).sum(1)
    if u.numel() and int(u.max()) > _max_offset(bits, levels):
        raise ValueError(f"a code lies outside the {bits}-bit range of +-{levels}")
    return u * 2 - 1 if bits == 1 else u - levels


def _try_scale(w: torch.Tensor, scale: torch.Tensor, levels: int) -> Optional[torch.Tensor]:
    if not torch.isfinite(scale) or scale <= 0:
        return None
    codes = torch.round(w / scale)
    if int(codes.abs().max()) > levels:
        return None
    if not torch.equal(scale * codes, w):
        return None
    return codes.to(torch.int64)


@torch.no_grad()
def recover_codes(w: torch.Tensor, levels: int) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """``(codes int64, scale fp32 0-d)`` with ``fl(scale * codes) == w`` exactly, or None."""
    w = w.detach().to(torch.float32).cpu()
    nz = w[w != 0].abs()
    if nz.numel() == 0:
        return torch.zeros(w.shape, dtype=torch.int64), torch.tensor(0.0)
    a = nz.min()
    for k in range(1, levels + 1):
        base = a / k
        candidates = [base]
        for direction in (math.inf, -math.inf):
            s = base
            for _ in range(3):
                s = torch.nextafter(s, torch.tensor(direction))
                candidates.append(s)
        for s in candidates:
            codes = _try_scale(w, s, levels)
            if codes is not None:
                return codes, s.clone()
    return None
