"""COCO run-length encoding in numpy, bit-compatible with pycocotools (`maskUtils.encode/decode`).

The datasets store masks this way (YouTube-VIS segmentations, COCO crowd regions), and writing the
exact same bytes as pycocotools keeps our synthetic files readable by the official tools.
Runs are counted over the mask in column-major (Fortran) order, starting with a run of zeros.
"""

from __future__ import annotations

from typing import Any

import numpy as np

RLE = dict[str, Any]


def _runs(mask: np.ndarray) -> list[int]:
    """Run lengths of the column-major flattening, the first run counting zeros (maybe 0 of them)."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return [0]
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate(([0], change, [flat.size])))
    if flat[0]:
        runs = np.concatenate(([0], runs))
    return [int(r) for r in runs]


def _counts_to_string(counts: list[int]) -> str:
    """pycocotools' `rleToString`: each count (as a delta to the count two back, from the 4th on)
    in 5-bit groups, low first, 0x20 = more groups follow, 0x10 of the last group = sign, plus 48."""
    out: list[str] = []
    for i, count in enumerate(counts):
        x = count - counts[i - 2] if i > 2 else count
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # arithmetic shift, like C's on a signed long
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def _string_to_counts(s: str) -> list[int]:
    """pycocotools' `rleFrString`, the inverse of `_counts_to_string`."""
    counts: list[int] = []
    p = 0
    while p < len(s):
        x = 0
        k = 0
        more = True
        while more:
            if p >= len(s):
                raise ValueError(f"RLE counts string ends inside a number (at character {p})")
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"RLE counts string has an invalid character {s[p]!r} at {p}")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def shape(rle: Any) -> tuple[int, int]:
    """(H, W) of an RLE, checking it is a dict with 'size' and 'counts' (without decoding)."""
    if not isinstance(rle, dict):  # ValueError, not TypeError: loaders report all malformed data alike
        raise ValueError(f"RLE must be a dict with 'size' and 'counts', got {type(rle).__name__}")  # noqa: TRY004
    for key in ("size", "counts"):
        if key not in rle:
            raise ValueError(f"RLE has no {key!r} (keys: {sorted(rle)})")
    size = rle["size"]
    if (
        not isinstance(size, (list, tuple))
        or len(size) != 2
        or not all(isinstance(v, (int, np.integer)) and v >= 0 for v in size)
    ):
        raise ValueError(f"RLE 'size' must be [height, width] of non-negative ints, got {size!r}")
    return int(size[0]), int(size[1])


def counts(rle: RLE) -> list[int]:
    """The run lengths of an RLE, compressed (str/bytes) or uncompressed (list), checked against its size."""
    h, w = shape(rle)
    raw = rle["counts"]
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError("RLE counts bytes are not ASCII") from None
    if isinstance(raw, str):
        runs = _string_to_counts(raw)
    elif isinstance(raw, (list, tuple, np.ndarray)):
        if not all(isinstance(v, (int, np.integer)) for v in raw):
            raise ValueError("RLE uncompressed 'counts' must be a list of ints")
        runs = [int(v) for v in raw]
    else:
        raise ValueError(f"RLE 'counts' must be str, bytes or a list of ints, got {type(raw).__name__}")  # noqa: TRY004
    if any(r < 0 for r in runs):
        raise ValueError(f"RLE has a negative run length (size {[h, w]})")
    if sum(runs) != h * w:
        raise ValueError(f"RLE runs cover {sum(runs)} pixels but size {[h, w]} has {h * w}")
    return runs


def encode(mask: np.ndarray) -> RLE:
    """Compressed RLE of a (H, W) mask: {"size": [H, W], "counts": str}, identical to pycocotools'."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"RLE encode needs a 2-D (H, W) mask, got shape {mask.shape}")
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": _counts_to_string(_runs(mask))}


def decode(rle: RLE) -> np.ndarray:
    """The (H, W) bool mask of a compressed or uncompressed RLE."""
    h, w = shape(rle)
    runs = counts(rle)
    values = np.zeros(len(runs), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, runs)
    return flat.reshape((w, h)).T.copy()


def area(rle: RLE) -> int:
    """Foreground pixel count, without decoding."""
    return int(sum(counts(rle)[1::2]))


def to_bbox(mask: np.ndarray | RLE) -> list[float]:
    """COCO box [x, y, w, h] in pixels (pixel edges: a single pixel at (x, y) is [x, y, 1, 1]); zeros if empty."""
    if isinstance(mask, dict):
        mask = decode(mask)
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"to_bbox needs a 2-D (H, W) mask, got shape {mask.shape}")
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return [0.0, 0.0, 0.0, 0.0]
    cols = np.flatnonzero(mask.any(axis=0))
    return [float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1)]
