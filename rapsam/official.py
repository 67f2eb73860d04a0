"""Import the authors' released RAP-SAM into our checkpoint format.

The release is two files: the mmdet 3 checkpoint `rapsam_r50_12e.pth` (ResNet-50, YOSONeck,
RapSAMVideoHead with adapters, trained on COCO panoptic + COCO-SAM + YouTube-VIS 2019) and a classifier
file of CLIP text embeddings that the open-vocabulary head reads at start-up (`tools/gen_cls.py` makes
it; it is not in the checkpoint). Which classifier decides the vocabulary: the joint 155 classes the
model was trained with, or COCO panoptic's 133 for COCO evaluation.

Key mapping, total and strict: our modules carry the official names, so every official tensor lands
under its own key (a `module.` prefix from DDP is stripped), and the one thing our model holds that
the checkpoint does not, the text-embedding table `panoptic_head.mask_heads.{i}.fc_cls` (the official
head keeps it in a non-persistent buffer), comes from the classifier file. No official tensor is
dropped: the checkpoint keeps no loss weights or other training-only tensors (the loss modules hold
plain lists; the data preprocessor's mean/std buffers are non-persistent), and BN's
`num_batches_tracked` counters load as they are. Deep-supervision branches (every stage's class and
IoU predictors) load too: training (issue 6) uses them, inference ignores them, as the official does.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rapsam.checkpoint import file_sha256, read_class_embeddings
from rapsam.config import IMAGENET_MEAN, IMAGENET_STD, RapSAMConfig, get_config
from rapsam.models.backbones.pretrained import CheckpointError, check_state_dict, read_pth, unwrap_state_dict
from rapsam.models.rapsam import RapSAM
from rapsam.taxonomy import COCO_PANOPTIC_OV, COCO_YTVIS2019_OV, Taxonomy, class_text

OFFICIAL_MODEL = "rapsam_r50"
# --dataset -> the vocabulary, and the classifier file the authors publish for it.
DATASETS: dict[str, Taxonomy] = {"coco": COCO_PANOPTIC_OV, "coco+ytvis": COCO_YTVIS2019_OV}
CLASSIFIER_FILES = {
    "coco": "CocoPanopticOVDataset.pth",
    "coco+ytvis": "CocoPanopticOVDataset_YouTubeVISDataset_2019.pth",
}
# What the official config's data preprocessor does, for checkpoints whose meta block has no config.
OFFICIAL_PREPROCESSOR = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "bgr_to_rgb": True}
# Present in every official RAP-SAM checkpoint and in no backbone-only or foreign one.
_NUMBER = r"[-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?"
_SIGNATURE_KEYS = ("panoptic_head.kernels.weight", "panoptic_head.pb_embedding.weight", "neck.loc_conv.weight")


def is_official_state(state: dict[str, torch.Tensor]) -> bool:
    """An official RAP-SAM state dict: the head's signature keys, without our text-embedding buffers."""
    keys = {k.removeprefix("module.") for k in state}
    return all(k in keys for k in _SIGNATURE_KEYS) and not any(k.endswith(".fc_cls") for k in keys)


@dataclass(frozen=True)
class ImportReport:
    """What an import did, for the CLI's summary and the checkpoint's provenance."""

    checkpoint_sha256: str
    classifier_sha256: str
    dataset: str
    num_tensors: int
    classifier_shape: tuple[int, int, int]
    preprocessor: dict[str, Any]
    preprocessor_source: str  # "checkpoint meta" or "official config (the meta block has none)"
    ignored: tuple[str, ...] = ()  # without `strict`: official tensors with no place in our model
    left_at_init: tuple[str, ...] = ()  # without `strict`: our tensors the checkpoint did not fill

    def provenance(self) -> dict[str, str]:
        return {
            "source": "official RAP-SAM release (xushilin1/RAP-SAM)",
            "checkpoint_sha256": self.checkpoint_sha256,
            "classifier_sha256": self.classifier_sha256,
            "dataset": self.dataset,
        }


def preprocessor_from_meta(meta: dict[str, Any]) -> dict[str, Any] | None:
    """mean / std / bgr_to_rgb of `data_preprocessor` in the config text mmengine stores in the meta block."""
    text = meta.get("cfg") if isinstance(meta, dict) else None
    if not isinstance(text, str) or "data_preprocessor" not in text:
        return None
    block = text[text.index("data_preprocessor") :]
    found = {
        key: re.search(rf"\b{key}\s*[=:]\s*\[([^\]]*)\]", block) for key in ("mean", "std")
    } | {"bgr_to_rgb": re.search(r"\bbgr_to_rgb['\"]?\s*[=:]\s*(True|False)", block)}
    if any(match is None for match in found.values()):
        return None
    return {
        "mean": tuple(float(v) for v in re.findall(_NUMBER, found["mean"].group(1))),
        "std": tuple(float(v) for v in re.findall(_NUMBER, found["std"].group(1))),
        "bgr_to_rgb": found["bgr_to_rgb"].group(1) == "True",
    }


def _dataset_for(classifier: torch.Tensor, dataset: str | None, source: str) -> str:
    counts = {t.num_classes: name for name, t in DATASETS.items()}
    if dataset is None:
        if classifier.shape[0] not in counts:
            raise CheckpointError(
                f"{source} embeds {classifier.shape[0]} classes; the official vocabularies have "
                + ", ".join(f"{n} ({name}: {CLASSIFIER_FILES[name]})" for n, name in counts.items())
            )
        return counts[classifier.shape[0]]
    if dataset not in DATASETS:
        raise CheckpointError(f"unknown --dataset {dataset!r}; valid: {', '.join(DATASETS)}")
    expected = DATASETS[dataset].num_classes
    if classifier.shape[0] != expected:
        raise CheckpointError(
            f"{source} embeds {classifier.shape[0]} classes but --dataset {dataset} has {expected}: "
            f"pass {CLASSIFIER_FILES[dataset]}, or the --dataset that matches the file"
        )
    return dataset


def _check_training_classes(meta: dict[str, Any], taxonomy: Taxonomy, source: str) -> None:
    """The checkpoint's own class list, where mmengine stored one of the same length, must be ours in order:
    a shifted list would label every segment wrongly without any other error."""
    classes = (meta.get("dataset_meta") or {}).get("classes") if isinstance(meta, dict) else None
    if not isinstance(classes, (list, tuple)) or len(classes) != taxonomy.num_classes:
        return  # another vocabulary than training's: open vocabulary allows it
    for index, (stored, ours) in enumerate(zip(classes, taxonomy.texts)):
        if class_text(str(stored)) != ours:
            raise CheckpointError(
                f"{source}: class {index} is {stored!r} in the checkpoint's dataset_meta but {ours!r} in "
                f"{taxonomy.name}; the classifier file and the checkpoint disagree on the class order"
            )


def import_official(
    checkpoint: str | Path,
    classifier: str | Path | None,
    *,
    dataset: str | None = None,
    strict: bool = True,
    contents: Any = None,
    progress: Callable[[str], None] = lambda message: None,
) -> tuple[RapSAM, ImportReport]:
    """The official checkpoint + classifier file -> our RapSAM (eval mode) and what was done.

    `dataset` ("coco" or "coco+ytvis") defaults to the one whose class count the classifier has.
    With `strict`, any official tensor without a place in our model, or any of ours left unfilled,
    is an error that lists them; without it they are reported and the model keeps its init there.
    `contents` is the checkpoint as `read_pth` returns it, when the caller has read it already.
    """
    checkpoint = Path(checkpoint)
    if classifier is None:
        raise CheckpointError(
            f"{checkpoint.name} holds no class embeddings (the official head reads them from a separate file): "
            f"pass --classifier {CLASSIFIER_FILES['coco+ytvis']} (or {CLASSIFIER_FILES['coco']} for COCO's 133 classes)"
        )
    if contents is None:
        progress(f"reading {checkpoint}")
    blob = read_pth(checkpoint) if contents is None else contents
    meta = blob.get("meta", {}) if isinstance(blob, dict) else {}
    state = {k.removeprefix("module."): v for k, v in unwrap_state_dict(blob, source=str(checkpoint)).items()}
    if not is_official_state(state):
        raise CheckpointError(
            f"{checkpoint} is not an official RAP-SAM checkpoint (no {', '.join(_SIGNATURE_KEYS)}); "
            "rapsam-import reads the authors' rapsam_r50_12e.pth"
        )
    embeddings = read_class_embeddings(classifier)
    dataset = _dataset_for(embeddings, dataset, str(classifier))
    taxonomy = DATASETS[dataset]
    _check_training_classes(meta, taxonomy, str(checkpoint))

    stored = preprocessor_from_meta(meta)
    preprocessor = stored or OFFICIAL_PREPROCESSOR
    config: RapSAMConfig = dataclasses.replace(
        get_config(OFFICIAL_MODEL),
        taxonomy=taxonomy,
        class_prototypes=embeddings.shape[1],
        class_embed_dim=embeddings.shape[2],
        pixel_mean=tuple(preprocessor["mean"]),
        pixel_std=tuple(preprocessor["std"]),
        # bgr_to_rgb: the loader's BGR is flipped before normalization, so the network sees RGB.
        channel_order="RGB" if preprocessor["bgr_to_rgb"] else "BGR",
        click_embedding="box",
    )
    model = RapSAM(config).eval()
    model.panoptic_head.set_class_embeddings(embeddings)
    ours = model.state_dict()
    from_classifier = {k: v for k, v in ours.items() if k.endswith(".fc_cls")}
    progress(f"mapping {len(state)} tensors onto {config.name} ({taxonomy.num_classes} classes, {dataset})")
    try:
        check_state_dict(model, state | from_classifier, source=str(checkpoint), strict=strict)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc} (rapsam-import reads the ResNet-50 release rapsam_r50_12e.pth)") from None
    unknown = sorted(set(state) - set(ours))
    if unknown:
        progress(f"warning: {len(unknown)} official tensors have no place in our model, ignored: {', '.join(unknown[:10])}")
    missing = sorted(set(ours) - set(state) - set(from_classifier))
    if missing:
        progress(f"warning: {len(missing)} of our tensors are not in the checkpoint, left at init: {', '.join(missing[:10])}")
    model.load_state_dict({k: v for k, v in state.items() if k in ours} | from_classifier, strict=strict)
    report = ImportReport(
        checkpoint_sha256=file_sha256(checkpoint),
        classifier_sha256=file_sha256(classifier),
        dataset=dataset,
        num_tensors=len(state),
        classifier_shape=tuple(embeddings.shape),
        preprocessor=dict(preprocessor),
        preprocessor_source="checkpoint meta" if stored else "official config (the meta block has none)",
        ignored=tuple(unknown),
        left_at_init=tuple(missing),
    )
    return model, report
