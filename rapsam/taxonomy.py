"""Class lists the model predicts: names in label order and which are things (countable instances)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Taxonomy:
    name: str
    class_names: tuple[str, ...]
    is_thing: tuple[bool, ...]

    def __post_init__(self) -> None:
        if len(self.class_names) != len(self.is_thing):
            raise ValueError(f"taxonomy {self.name}: {len(self.class_names)} names but {len(self.is_thing)} flags")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# COCO panoptic (2017) in its contiguous label order: 80 things, then 53 stuff classes.
COCO_THINGS = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)
COCO_STUFF = (
    "banner", "blanket", "bridge", "cardboard", "counter", "curtain", "door-stuff", "floor-wood", "flower",
    "fruit", "gravel", "house", "light", "mirror-stuff", "net", "pillow", "platform", "playingfield",
    "railroad", "river", "road", "roof", "sand", "sea", "shelf", "snow", "stairs", "tent", "towel",
    "wall-brick", "wall-stone", "wall-tile", "wall-wood", "water-other", "window-blind", "window-other",
    "tree-merged", "fence-merged", "ceiling-merged", "sky-other-merged", "cabinet-merged", "table-merged",
    "floor-other-merged", "pavement-merged", "mountain-merged", "grass-merged", "dirt-merged", "paper-merged",
    "food-other-merged", "building-other-merged", "rock-merged", "wall-other-merged", "rug-merged",
)
COCO_PANOPTIC = Taxonomy(
    name="coco_panoptic",
    class_names=COCO_THINGS + COCO_STUFF,
    is_thing=(True,) * len(COCO_THINGS) + (False,) * len(COCO_STUFF),
)

# The synthetic shapes-on-textures data of the tests and the CPU demo.
SHAPES = Taxonomy(
    name="shapes",
    class_names=("circle", "square", "triangle", "star", "sky", "grass", "water", "wall"),
    is_thing=(True, True, True, True, False, False, False, False),
)

TAXONOMIES = {t.name: t for t in (COCO_PANOPTIC, SHAPES)}
