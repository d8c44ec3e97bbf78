"""Encoders for llama.cpp's K-quant blocks (Q3_K, Q4_K, Q5_K, Q6_K), vectorised over every block of a tensor.

The `gguf` package decodes these formats but encodes none. Each encoder follows the search that llama.cpp's
reference quantizer does (ggml-quants.c, `quantize_row_q*_K_ref`): per 32- or 16-wide sub-block, a scale
(and for Q4_K / Q5_K an offset) chosen by a weighted least-squares search over a few candidate grids, then
the sub-block scales themselves quantized to 6 or 8 bits against one float16 scale per 256-wide block.
Q3_K's signed sub-block scales come from the same grid search as Q6_K's (llama.cpp refines them one value at
a time instead, which does not vectorise; the error on its test data stays well inside its bound).
Each function takes float32 rows whose length is a multiple of 256 and returns the packed bytes, one row of
bytes per input row, as `gguf.quants.quantize` does for the simpler types.
"""

from __future__ import annotations

import os

import numpy as np

QK_K = 256
_CHUNK_BLOCKS = 2048  # blocks encoded together: big enough for numpy, small enough for the CPU cache
_EPS = 1e-15  # llama.cpp's GROUP_MAX_EPS: a sub-block this close to zero is stored as zeros


def quantize_k(rows: np.ndarray, type_name: str) -> np.ndarray:
    """Packed bytes of `rows` (..., n * 256) in the K-quant `type_name` ("Q3_K", "Q4_K", "Q5_K", "Q6_K")."""
    from concurrent.futures import ThreadPoolExecutor

    encoder = {"Q3_K": _q3_k, "Q4_K": _q4_k, "Q5_K": _q5_k, "Q6_K": _q6_k}[type_name]
    shape = rows.shape
    blocks = np.ascontiguousarray(rows, dtype=np.float32).reshape(-1, QK_K)
    chunks = [blocks[start:start + _CHUNK_BLOCKS] for start in range(0, len(blocks), _CHUNK_BLOCKS)]
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:  # numpy releases the GIL in its loops
        packed = np.concatenate(list(pool.map(encoder, chunks)))
    return packed.reshape(*shape[:-1], shape[-1] // QK_K * packed.shape[-1])


def _f16(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float16)


def _weighted_scale_min(x: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int):
    """Per sub-block (columns of x, 32 rows): scale, offset (>= 0) minimising the weighted error of
    x ~ scale * level - offset over levels 0..nmax, with weights |x| plus the sub-block's rms (llama.cpp's
    make_qkx2_quants). Columns, not rows: sums over 32 contiguous rows are what numpy does fastest."""
    weights = np.sqrt(np.mean(x * x, axis=0)) + np.abs(x)
    low = np.minimum(x.min(axis=0), 0)
    span = x.max(axis=0) - low
    flat = span == 0
    span[flat] = 1
    shifted = x - low
    sum_w, sum_x, sum_x2 = weights.sum(axis=0), _column_dot(weights, x), _column_dot(weights * x, x)
    buffer, product = np.empty_like(x), np.empty_like(x)

    def fit(iscale):
        levels = np.multiply(iscale, shifted, out=buffer)
        np.rint(levels, out=levels)
        np.clip(levels, 0, nmax, out=levels)
        weighted = np.multiply(weights, levels, out=product)
        return weighted.sum(axis=0), _column_dot(weighted, levels), _column_dot(weighted, x)

    def error(scale, offset, sum_l, sum_l2, sum_xl):  # sum of w * (scale * l + offset - x)^2, expanded
        return (scale * scale * sum_l2 + offset * offset * sum_w + sum_x2
                + 2 * (scale * offset * sum_l - scale * sum_xl - offset * sum_x))

    scale, offset = span / nmax, low
    best_error = error(scale, offset, *fit(nmax / span))
    for step in range(nstep + 1):
        sum_l, sum_l2, sum_xl = fit((rmin + rdelta * step + nmax) / span)
        det = sum_w * sum_l2 - sum_l * sum_l
        safe_det = np.where(det > 0, det, 1)
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / safe_det
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / safe_det
        positive = this_min > 0  # an offset above zero is clamped to zero and the scale refitted alone
        this_min = np.where(positive, 0, this_min)
        this_scale = np.where(positive, sum_xl / np.where(sum_l2 > 0, sum_l2, 1), this_scale)
        better = (det > 0) & (error(this_scale, this_min, sum_l, sum_l2, sum_xl) < best_error)
        best_error = np.where(better, error(this_scale, this_min, sum_l, sum_l2, sum_xl), best_error)
        scale = np.where(better, this_scale, scale)
        offset = np.where(better, this_min, offset)
    return np.where(flat, 0, scale), -offset


def _scales_and_mins(x: np.ndarray, nmax: int, rmin: float, nstep: int):
    """Shared by Q4_K and Q5_K: the 6-bit sub-block scales and mins, the block's two float16 factors, and
    each value's level computed against the scales as the decoder will see them."""
    blocks = x.shape[0]
    sub = x.reshape(blocks * 8, 32)
    scales, mins = _weighted_scale_min(np.ascontiguousarray(sub.T), nmax, rmin, 0.1, nstep)
    scales, mins = scales.reshape(blocks, 8), mins.reshape(blocks, 8)
    max_scale, max_min = scales.max(axis=1, keepdims=True), mins.max(axis=1, keepdims=True)
    inv_scale = np.where(max_scale > 0, 63 / np.where(max_scale > 0, max_scale, 1), 0)
    inv_min = np.where(max_min > 0, 63 / np.where(max_min > 0, max_min, 1), 0)
    ls = np.minimum(np.rint(inv_scale * scales), 63).astype(np.uint8)
    lm = np.minimum(np.rint(inv_min * mins), 63).astype(np.uint8)
    d = _f16(max_scale[:, 0] / 63)
    dmin = _f16(max_min[:, 0] / 63)
    step = (d.astype(np.float32)[:, None] * ls)[:, :, None]
    shift = (dmin.astype(np.float32)[:, None] * lm)[:, :, None]
    safe = np.where(step > 0, step, 1)
    level = np.where(step > 0, np.rint((sub.reshape(blocks, 8, 32) + shift) / safe), 0)
    level = np.clip(level, 0, nmax).astype(np.uint8).reshape(blocks, QK_K)
    return d, dmin, _pack_scales(ls, lm), level


def _pack_scales(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Eight 6-bit scales and eight 6-bit mins in 12 bytes, in llama.cpp's get_scale_min_k4 order."""
    packed = np.zeros((ls.shape[0], 12), dtype=np.uint8)
    packed[:, 0:4] = ls[:, :4] | ((ls[:, 4:] >> 4) << 6)
    packed[:, 4:8] = lm[:, :4] | ((lm[:, 4:] >> 4) << 6)
    packed[:, 8:12] = (ls[:, 4:] & 0xF) | ((lm[:, 4:] & 0xF) << 4)
    return packed


def _low_nibbles(level: np.ndarray) -> np.ndarray:
    """128 bytes per block: within each 64 values, value j in the low nibble and value j + 32 in the high."""
    quads = (level & 0xF).reshape(-1, 4, 2, 32)
    return (quads[:, :, 0] | (quads[:, :, 1] << 4)).reshape(-1, 128)


def _q4_k(x: np.ndarray) -> np.ndarray:
    d, dmin, scales, level = _scales_and_mins(x, 15, -1.0, 20)
    return np.concatenate([_bytes(d), _bytes(dmin), scales, _low_nibbles(level)], axis=1)


def _q5_k(x: np.ndarray) -> np.ndarray:
    d, dmin, scales, level = _scales_and_mins(x, 31, -0.5, 15)
    high = (level >> 4).reshape(-1, 4, 2, 32)  # the fifth bit: value pair p of each 64 in bits 2p and 2p+1
    bits = (high[:, :, 0] << (2 * np.arange(4, dtype=np.uint8))[None, :, None]) | (
        high[:, :, 1] << (2 * np.arange(4, dtype=np.uint8) + 1)[None, :, None])
    qh = np.bitwise_or.reduce(bits, axis=1).astype(np.uint8)
    return np.concatenate([_bytes(d), _bytes(dmin), scales, qh, _low_nibbles(level)], axis=1)


def _symmetric_scale(x: np.ndarray, nmax: int) -> np.ndarray:
    """Per column of x: the signed scale of levels -nmax..nmax-1 maximising the x^2-weighted fit, searched
    over 19 grids around the one that maps the largest |x| to -nmax (llama.cpp's make_qx_quants, type 1)."""
    peak = x[np.abs(x).argmax(axis=0), np.arange(x.shape[1])]
    tiny = np.abs(peak) < _EPS
    peak[tiny] = 1
    weights = x * x
    weighted_x = weights * x
    best_scale = best = None
    levels, product = np.empty_like(x), np.empty_like(x)
    for step in [0, *range(-9, 0), *range(1, 10)]:
        np.multiply(-(nmax + 0.1 * step) / peak, x, out=levels)
        np.rint(levels, out=levels)
        np.clip(levels, -nmax, nmax - 1, out=levels)
        sum_lx = _column_dot(weighted_x, levels)
        sum_l2 = _column_dot(np.multiply(weights, levels, out=product), levels)
        scale = np.where(sum_l2 > 0, sum_lx / np.where(sum_l2 > 0, sum_l2, 1), 0)
        if best is None:
            best_scale, best = scale, scale * sum_lx
            continue
        better = (sum_l2 > 0) & (sum_lx * sum_lx > best * sum_l2)
        best_scale = np.where(better, scale, best_scale)
        best = np.where(better, scale * sum_lx, best)
    return np.where(tiny, 0, best_scale)


def _q6_k(x: np.ndarray) -> np.ndarray:
    blocks = x.shape[0]
    sub = x.reshape(blocks, 16, 16)
    scales = _symmetric_scale(np.ascontiguousarray(sub.reshape(-1, 16).T), 32).reshape(blocks, 16)
    d, ls = _signed_block_scales(scales, 128)
    level = _signed_levels(sub, d, ls, 32).reshape(blocks, 2, 4, 32)
    low = level & 0xF
    ql = np.concatenate([low[:, :, 0] | (low[:, :, 2] << 4), low[:, :, 1] | (low[:, :, 3] << 4)], axis=2)
    high = level >> 4
    qh = high[:, :, 0] | (high[:, :, 1] << 2) | (high[:, :, 2] << 4) | (high[:, :, 3] << 6)
    return np.concatenate([ql.reshape(blocks, 128), qh.reshape(blocks, 64), ls.view(np.uint8), _bytes(d)], axis=1)


def _signed_block_scales(scales: np.ndarray, levels: int):
    """The block's float16 factor d and each sub-block's signed integer scale (-levels..levels-1), with the
    sub-block scale of largest magnitude mapped to -levels (llama.cpp's Q3_K and Q6_K)."""
    blocks = scales.shape[0]
    peak = scales[np.arange(blocks), np.abs(scales).argmax(axis=1)]
    empty = np.abs(peak) < _EPS
    iscale = np.where(empty, 0, -levels / np.where(empty, 1, peak))
    d = _f16(np.where(empty, 0, 1 / np.where(iscale == 0, 1, iscale)))
    ls = np.clip(np.rint(iscale[:, None] * scales), -levels, levels - 1).astype(np.int8)
    return d, ls


def _signed_levels(sub: np.ndarray, d: np.ndarray, ls: np.ndarray, nmax: int) -> np.ndarray:
    """Each value's level, offset to 0..2*nmax-1, against the sub-block steps as the decoder computes them."""
    step = (d.astype(np.float32)[:, None] * ls)[:, :, None]
    level = np.where(step != 0, np.rint(sub / np.where(step != 0, step, 1)), 0)
    return (np.clip(level, -nmax, nmax - 1) + nmax).astype(np.uint8)


def _q3_k(x: np.ndarray) -> np.ndarray:
    blocks = x.shape[0]
    sub = x.reshape(blocks, 16, 16)
    scales = _symmetric_scale(np.ascontiguousarray(sub.reshape(-1, 16).T), 4).reshape(blocks, 16)
    d, ls = _signed_block_scales(scales, 32)
    level = _signed_levels(sub, d, ls, 4).reshape(blocks, 8, 32)  # 0..7: bit 2 goes to hmask
    hmask = np.bitwise_or.reduce((level >> 2) << np.arange(8, dtype=np.uint8)[None, :, None], axis=1)
    low = (level & 3).reshape(blocks, 2, 4, 32)  # value 32k + i of each 128 in bits 2k of byte i
    qs = np.bitwise_or.reduce(low << (2 * np.arange(4, dtype=np.uint8))[None, None, :, None], axis=2)
    biased = (ls.astype(np.int16) + 32).astype(np.uint8)  # 6 bits: low nibbles, then the top two bits
    packed = np.zeros((blocks, 12), dtype=np.uint8)
    packed[:, :8] = (biased[:, :8] & 0xF) | ((biased[:, 8:] & 0xF) << 4)
    tops = (biased >> 4).reshape(blocks, 4, 4)  # scale j's top bits in byte 8 + j % 4, at bit 2 * (j // 4)
    packed[:, 8:] = np.bitwise_or.reduce(tops << (2 * np.arange(4, dtype=np.uint8))[None, :, None], axis=1)
    return np.concatenate([hmask.astype(np.uint8), qs.reshape(blocks, 64).astype(np.uint8), packed, _bytes(d)],
                          axis=1)


def _column_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->j", a, b)


def _bytes(halves: np.ndarray) -> np.ndarray:
    return halves.astype("<f2").view(np.uint8).reshape(-1, 2)
