"""Evaluation metrics matching the datasets' reference evaluators, in plain numpy.

* `panoptic_quality`: PQ/SQ/RQ as panopticapi `pq_compute` (COCO panoptic).
* `prompt_iou`: per-prompt mask IoU and mIoU (COCO-SAM / EdgeSAM point and box prompts).
* `video_ap`: YouTube-VIS mask AP/AR as youtubevos/cocoapi `ytvoseval`.
"""

from rapsam.evaluation.panoptic_quality import PanopticAnnotation, PQAccumulator, SegmentInfo, pq_compute
from rapsam.evaluation.prompt_iou import PromptIoUAccumulator, mask_iou
from rapsam.evaluation.video_ap import Tube, tube_iou, video_ap

__all__ = [
    "PQAccumulator",
    "PanopticAnnotation",
    "PromptIoUAccumulator",
    "SegmentInfo",
    "Tube",
    "mask_iou",
    "pq_compute",
    "tube_iou",
    "video_ap",
]
