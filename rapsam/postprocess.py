"""Post-processing of RAP-SAM outputs: panoptic merge, mask upsampling, prompt masks, video ids.

Everything here is plain tensor arithmetic on the outputs of the export contract (see DESIGN.md):
`mask_logits [N,h,w]` at stride 4, `class_logits [N,C+1]`, `queries [N,d]`, prompt `iou [K]`.
Inputs are torch tensors; user-facing results are numpy arrays.

The official model (xushilin1/RAP-SAM, config `rap_sam_r50_12e_adaptor.py`) post-processes with
mmdet's `MaskFormerFusionHead` (`object_mask_thr=0.8`, `iou_thr=0.8`, `filter_low_score=True`),
which is Mask2Former's `panoptic_inference`; video ids come from MinVIS-style query matching.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor

Size = tuple[int, int]  # (height, width)


# ----------------------------------------------------------------------------- panoptic


@dataclass(frozen=True)
class PanopticThresholds:
    """Thresholds of the panoptic merge; field names match `panoptic_merge`'s keywords.

    `object_mask_threshold`: a query is kept only if its class score is strictly above this.
    `overlap_threshold`: a query keeps its region only if (pixels it wins) / (pixels with
    sigmoid >= 0.5) is at least this.
    """

    object_mask_threshold: float = 0.8
    overlap_threshold: float = 0.8


_DEFAULT_THRESHOLDS = PanopticThresholds()


@dataclass(frozen=True)
class Segment:
    """One panoptic segment. `id` is its value in `PanopticResult.segment_map` (1..S)."""

    id: int
    class_id: int
    score: float  # class score; for a merged stuff segment, the highest score of its queries
    is_thing: bool
    area: int  # pixels painted with `id` in the segment map
    queries: tuple[int, ...] = ()  # indices of the queries painted into it (several for merged stuff)


@dataclass(frozen=True, eq=False)
class PanopticResult:
    """`segment_map`: int32 [H,W], 0 = void; `segments`: in id order (id i at index i-1)."""

    segment_map: np.ndarray
    segments: tuple[Segment, ...]


def panoptic_merge(
    mask_logits: Tensor,
    class_logits: Tensor,
    *,
    is_thing: Sequence[bool],
    object_mask_threshold: float = _DEFAULT_THRESHOLDS.object_mask_threshold,
    overlap_threshold: float = _DEFAULT_THRESHOLDS.overlap_threshold,
) -> PanopticResult:
    """Merge per-query masks into one panoptic map, as Mask2Former's `panoptic_inference`.

    Args:
        mask_logits: [N,H,W] mask logits (upsample them first with `upsample_mask_logits`
            to merge at image resolution, as the official model does).
        class_logits: [N,C+1] class logits, the last column is no-object.
        is_thing: length C, True for thing classes.

    Steps: softmax over C+1; a query is kept if its argmax class is not no-object and its
    score is > `object_mask_threshold` (strict). Each pixel goes to the kept query with the
    highest score * sigmoid(mask). Queries are visited in index order; a query is painted
    on the pixels it wins where its sigmoid >= 0.5, provided it wins some pixels, its
    sigmoid >= 0.5 area is non-empty, that intersection is non-empty, and
    (pixels it wins) / (sigmoid >= 0.5 area) >= `overlap_threshold`. Stuff queries of the
    same class share one segment; each thing query is its own segment.
    """
    num_queries, num_classes = class_logits.shape[0], class_logits.shape[1] - 1
    if mask_logits.shape[0] != num_queries or len(is_thing) != num_classes:
        raise ValueError(
            f"mask_logits {tuple(mask_logits.shape)}, class_logits {tuple(class_logits.shape)} "
            f"and is_thing (len {len(is_thing)}) disagree"
        )
    scores, labels = F.softmax(class_logits.float(), dim=-1).max(-1)  # (N,)
    keep = labels.ne(num_classes) & (scores > object_mask_threshold)
    masks = mask_logits.float()[keep].sigmoid()  # (Q, H, W)
    scores, labels = scores[keep], labels[keep]
    query_index = keep.nonzero().flatten().tolist()
    segment_map = torch.zeros(mask_logits.shape[-2:], dtype=torch.int32)
    if masks.shape[0] == 0:
        return PanopticResult(segment_map.numpy(), ())

    owner = (scores[:, None, None] * masks).argmax(0)  # (H, W) index into kept queries
    segments: list[Segment] = []
    stuff_ids: dict[int, int] = {}
    for k in range(masks.shape[0]):
        class_id = int(labels[k])
        won = owner == k
        inside = masks[k] >= 0.5
        region = won & inside
        won_area, inside_area = int(won.sum()), int(inside.sum())
        if won_area == 0 or inside_area == 0 or not bool(region.any()):
            continue
        if won_area / inside_area < overlap_threshold:
            continue
        score, thing = float(scores[k]), bool(is_thing[class_id])
        if not thing and class_id in stuff_ids:
            segment_id = stuff_ids[class_id]
            old = segments[segment_id - 1]
            segments[segment_id - 1] = Segment(
                segment_id, class_id, max(old.score, score), False, old.area + int(region.sum()),
                old.queries + (query_index[k],),
            )
        else:
            segment_id = len(segments) + 1
            if not thing:
                stuff_ids[class_id] = segment_id
            segments.append(Segment(segment_id, class_id, score, thing, int(region.sum()), (query_index[k],)))
        segment_map[region] = segment_id
    return PanopticResult(segment_map.numpy(), tuple(segments))


def semantic_map(segment_map: np.ndarray, segments: Sequence[Segment], *, void: int = -1) -> np.ndarray:
    """Class id per pixel: int32 [H,W] from a panoptic `segment_map` [H,W]; `void` where 0."""
    lookup = np.full(len(segments) + 1, void, dtype=np.int32)  # index = segment id
    for segment in segments:
        lookup[segment.id] = segment.class_id
    return lookup[segment_map]


def default_palette(num_classes: int, seed: int = 0) -> np.ndarray:
    """Deterministic random colours: uint8 [C,3], channels in 40..255 so none is near black (void)."""
    return np.random.default_rng(seed).integers(40, 256, size=(num_classes, 3), dtype=np.uint8)


def colorize(segment_map: np.ndarray, segments: Sequence[Segment], palette: np.ndarray) -> np.ndarray:
    """Colour each pixel by its segment's class: uint8 [H,W,3], void pixels black.

    `palette`: uint8 [C,3] indexed by class id.
    """
    classes = semantic_map(segment_map, segments, void=-1)
    colours = np.concatenate([np.asarray(palette, dtype=np.uint8), np.zeros((1, 3), np.uint8)])
    return colours[classes]  # class -1 picks the appended black row


def overlay(
    image: np.ndarray, colour: np.ndarray, alpha: float = 0.5, *, where: np.ndarray | None = None
) -> np.ndarray:
    """Blend `(1 - alpha) * image + alpha * colour`, rounded: uint8 [H,W,3].

    `image`, `colour`: uint8 [H,W,3]; `where`: optional bool [H,W], blend only there
    (e.g. `segment_map > 0` to leave void pixels untouched).
    """
    if image.shape != colour.shape:
        raise ValueError(f"image {image.shape} and colour {colour.shape} differ")
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colour.astype(np.float32)
    blended = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    if where is None:
        return blended
    return np.where(np.asarray(where, dtype=bool)[..., None], blended, image)


# ----------------------------------------------------------------------------- masks


def upsample_mask_logits(
    mask_logits: Tensor, *, input_size: Size, valid_size: Size, image_size: Size
) -> Tensor:
    """Bring stride-4 mask logits back onto the user's image, as mmdet/Mask2Former do.

    The image of size `image_size` (H, W) was resized keeping its aspect ratio to
    `valid_size` and padded bottom/right to the model input `input_size`.
    `mask_logits` [K,h,w] -> bilinear (align_corners=False) to `input_size` -> crop the
    top-left `valid_size` -> bilinear to `image_size` -> [K,H,W] float32 logits.
    """
    if valid_size[0] > input_size[0] or valid_size[1] > input_size[1]:
        raise ValueError(f"valid_size {valid_size} exceeds input_size {input_size}")
    if mask_logits.shape[0] == 0:  # interpolate rejects empty batches
        return mask_logits.new_zeros((0, *image_size), dtype=torch.float32)
    x = mask_logits.float()[None]  # (1, K, h, w)
    x = F.interpolate(x, size=tuple(input_size), mode="bilinear", align_corners=False)
    x = x[..., : valid_size[0], : valid_size[1]]  # (1, K, h_valid, w_valid)
    x = F.interpolate(x, size=tuple(image_size), mode="bilinear", align_corners=False)
    return x[0]  # (K, H, W)


@dataclass(frozen=True, eq=False)
class PromptResult:
    """`masks`: bool [K',H,W]; `iou`: float32 [K'] predicted IoU; `index`: int64 [K'] prompt slots."""

    masks: np.ndarray
    iou: np.ndarray
    index: np.ndarray


def prompt_masks(
    mask_logits: Tensor,
    iou: Tensor,
    *,
    valid: Tensor,
    input_size: Size,
    valid_size: Size,
    image_size: Size,
    mask_threshold: float = 0.0,
) -> PromptResult:
    """One binary mask per real prompt, at image resolution.

    `mask_logits` [K,h,w], `iou` [K] and `valid` bool [K] (False for padding slots, kind -1).
    Padding slots are dropped; the rest are upsampled with `upsample_mask_logits` and
    thresholded as logits > `mask_threshold` (official: `> 0`, i.e. sigmoid > 0.5).
    `iou` is passed through as predicted (the official head has no activation on it).
    """
    index = torch.nonzero(valid.bool(), as_tuple=False).flatten()  # (K',)
    logits = upsample_mask_logits(
        mask_logits[index], input_size=input_size, valid_size=valid_size, image_size=image_size
    )
    return PromptResult(
        masks=(logits > mask_threshold).numpy(),
        iou=iou[index].float().numpy(),
        index=index.numpy().astype(np.int64),
    )


# ----------------------------------------------------------------------------- video


class QueryTracker:
    """Instance ids across video frames by matching object queries (MinVIS style, no tracker net).

    Policy of `update(queries, alive)` for frame t:
    - The queries of frame t are matched one-to-one to those of frame t-1 by Hungarian
      assignment (`scipy.optimize.linear_sum_assignment`) on cost 1 - cosine similarity, over
      all queries, alive or not (as MinVIS / the official `match_from_embeds`). With different
      query counts the smaller side is fully matched.
    - An alive query matched to a query that was alive at t-1 keeps that query's id.
    - Any other alive query (first frame, unmatched, or predecessor not alive) gets a new id;
      new ids are handed out in increasing query index, from a counter that never goes back,
      so ids are never reused. A track that dies does not come back: dead-then-alive is new.
    - Queries that are not alive get -1.
    Only the previous frame is remembered. `reset()` forgets it and restarts ids at 0.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start a new video: no previous frame, next id 0."""
        self._prev_queries: Tensor | None = None
        self._prev_ids: np.ndarray | None = None
        self._next_id = 0

    def update(self, queries: Tensor, alive: Tensor) -> np.ndarray:
        """Ids for this frame: `queries` [N,d], `alive` bool [N] -> int64 [N], -1 where not alive."""
        queries = F.normalize(queries.detach().float(), dim=-1)  # (N, d)
        alive_np = alive.bool().numpy()
        inherited = np.full(queries.shape[0], -1, dtype=np.int64)
        if self._prev_queries is not None:
            cost = (1.0 - queries @ self._prev_queries.T).numpy()  # (N, N_prev)
            rows, cols = linear_sum_assignment(cost)
            inherited[rows] = self._prev_ids[cols]
        ids = np.where(alive_np, inherited, -1)
        for i in np.flatnonzero(alive_np & (ids < 0)):
            ids[i] = self._next_id
            self._next_id += 1
        self._prev_queries, self._prev_ids = queries, ids
        return ids


def instance_ids(tracker: QueryTracker, result: PanopticResult, queries: Tensor) -> tuple[int, ...]:
    """The video-wide id of each segment of one frame's `result` (-1 for stuff), from its object queries
    [N, d]: the queries behind thing segments are the alive ones."""
    alive = torch.zeros(queries.shape[0], dtype=torch.bool)
    for segment in result.segments:
        if segment.is_thing:
            alive[list(segment.queries)] = True
    ids = tracker.update(queries, alive)
    return tuple(int(ids[segment.queries[0]]) if segment.is_thing else -1 for segment in result.segments)
