"""Class lists the model predicts: names in label order and which are things (countable instances)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Taxonomy:
    name: str
    class_names: tuple[str, ...]
    is_thing: tuple[bool, ...]
    # Open-vocabulary models: the text each class's embeddings were made from (synonyms, comma-separated).
    texts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.class_names) != len(self.is_thing):
            raise ValueError(f"taxonomy {self.name}: {len(self.class_names)} names but {len(self.is_thing)} flags")
        if self.texts and len(self.texts) != len(self.class_names):
            raise ValueError(f"taxonomy {self.name}: {len(self.class_names)} names but {len(self.texts)} texts")

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


# The open-vocabulary class texts of the official code (`seg/datasets/coco_ov.py`, `CocoPanopticOVDataset`):
# COCO panoptic's classes in the same order, each a comma-separated list of synonyms. The official
# `tools/gen_cls.py` embeds every synonym with CLIP; a class scores with its best-matching synonym.
COCO_OV_THINGS = (
    "person,child,girl,boy,woman,man,people,children,girls,boys,women,men,lady,guy,ladies,guys,clothes",
    "bicycle,bicycles,bike,bikes", "car,cars", "motorcycle,motorcycles", "airplane,airplanes", "bus,buses",
    "train,trains,locomotive,locomotives,freight train", "truck,trucks", "boat,boats", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench,benches", "bird,birds", "cat,cats,kitties,kitty",
    "dog,dogs,puppy,puppies", "horse,horses,foal", "sheep", "cow,cows,calf", "elephant,elephants", "bear,bears",
    "zebra,zebras", "giraffe,giraffes", "backpack,backpacks", "umbrella,umbrellas", "handbag,handbags", "tie",
    "suitcase,suitcases", "frisbee", "skis", "snowboard", "sports ball", "kite,kites", "baseball bat",
    "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle,bottles,water bottle",
    "wine glass,wine glasses,wineglass", "cup,cups,water cup,water glass", "fork,forks", "knife,knives",
    "spoon,spoons", "bowl,bowls", "banana,bananas", "apple,apples,apple fruit", "sandwich,sandwiches", "orange fruit",
    "broccoli", "carrot,carrots", "hot dog", "pizza", "donut,donuts", "cake,cakes", "chair,chairs",
    "couch,sofa,sofas", "potted plant,potted plants,pottedplant,pottedplants,planter,planters", "bed,beds",
    "dining table,dining tables,diningtable,diningtables,plate,plates,diningtable tablecloth", "toilet", "tv",
    "laptop", "mouse", "tv remote,remote control", "keyboard", "cell phone,mobile", "microwave", "oven,ovens",
    "toaster", "sink,sinks", "refrigerator,fridge", "book,books", "clock", "vase,vases", "scissor,scissors",
    "teddy bear,teddy bears", "hair drier", "toothbrush,toothbrushes",
)
COCO_OV_STUFF = (
    "banner,banners", "blanket,blankets", "bridge", "cardboard", "counter", "curtain,curtains", "door,doors",
    "wood floor", "flower,flowers", "fruit,fruits", "gravel", "house", "lamp,bulb,lamps,bulbs", "mirror",
    "tennis net", "pillow,pillows", "platform", "playingfield,tennis court,baseball field,soccer field,tennis field",
    "railroad", "river", "road", "roof", "sand", "sea,sea wave,wave,waves", "shelf", "snow", "stairs", "tent",
    "towel", "brick wall", "stone wall", "tile wall", "wood wall", "water", "window blind", "window",
    "tree,trees,palm tree,bushes", "fence,fences", "ceiling", "sky,clouds", "cabinet,cabinets", "table",
    "floor,flooring,tile floor", "pavement", "mountain,mountains", "grass", "dirt", "paper", "food",
    "building,buildings", "rock", "wall,walls", "rug",
)

# YouTube-VIS 2019's 40 classes (`seg/datasets/youtube_vis_dataset.py`), as the official code lists them.
YOUTUBE_VIS_2019_CLASSES = (
    "person", "giant_panda", "lizard", "parrot", "skateboard", "sedan", "ape", "dog", "snake", "monkey", "hand",
    "rabbit", "duck", "cat", "cow", "fish", "train", "horse", "turtle", "bear", "motorbike", "giraffe", "leopard",
    "fox", "deer", "owl", "surfboard", "airplane", "truck", "zebra", "tiger", "elephant", "snowboard", "boat",
    "shark", "mouse", "frog", "eagle", "earless_seal", "tennis_racket",
)


def class_text(raw: str) -> str:
    """A dataset's class name in the official comma-separated synonym form ('earless_seal' -> 'earless seal')."""
    return raw.replace("/", ",").replace("_", " ")


def merge_class_texts(
    datasets: list[tuple[tuple[str, ...], tuple[str, ...]]],
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Joint (things, stuff) of several datasets' (things, stuff), by the official `ConcatOVDataset` rule:
    a class joins the first earlier class it shares a synonym with, else it is appended."""
    merged: tuple[list[str], list[str]] = ([], [])
    for dataset in datasets:
        for texts, joint in zip(dataset, merged):
            for text in texts:
                text = class_text(text)
                if not any(set(text.split(",")) & set(known.split(",")) for known in joint):
                    joint.append(text)
    return tuple(merged[0]), tuple(merged[1])


def open_vocab_taxonomy(name: str, things: tuple[str, ...], stuff: tuple[str, ...]) -> Taxonomy:
    """A taxonomy whose class names are the first synonym of each class text; the texts stay in `texts`."""
    texts = things + stuff
    return Taxonomy(
        name=name,
        class_names=tuple(t.split(",")[0] for t in texts),
        is_thing=(True,) * len(things) + (False,) * len(stuff),
        texts=texts,
    )


# What the released RAP-SAM predicts: COCO panoptic (80 + 53) alone, or joined with YouTube-VIS 2019
# (102 things + 53 stuff: 22 YouTube-VIS classes are new, the other 18 share a synonym with a COCO class).
COCO_PANOPTIC_OV = open_vocab_taxonomy("coco_panoptic_ov", COCO_OV_THINGS, COCO_OV_STUFF)
COCO_YTVIS2019_OV = open_vocab_taxonomy(
    "coco_panoptic_ov+youtube_vis_2019",
    *merge_class_texts([(COCO_OV_THINGS, COCO_OV_STUFF), (YOUTUBE_VIS_2019_CLASSES, ())]),
)

TAXONOMIES = {t.name: t for t in (COCO_PANOPTIC, SHAPES, COCO_PANOPTIC_OV, COCO_YTVIS2019_OV)}
