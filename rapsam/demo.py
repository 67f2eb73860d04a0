"""`rapsam-demo`: any artifact through its runtime (or the PyTorch model) on an image, a video file or a
camera, with the app pipeline of `rapsam.pipeline`: overlay PNGs with a legend, prompt masks, an animated
GIF with instance ids for video, and the segments and latencies printed."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from rapsam.pipeline import Predictor, encode, panoptic, prompt, track
from rapsam.postprocess import PanopticResult, colorize, default_palette, overlay

# Colours of prompt masks and instance ids: distinct, bright, in order.
_ACCENTS = np.array([[0, 200, 83], [41, 121, 255], [255, 171, 0], [213, 0, 249], [0, 229, 255], [255, 61, 0],
                     [118, 255, 3], [255, 23, 68]], dtype=np.uint8)


class DemoError(ValueError):
    """Input the demo cannot read, or an optional reader that is not installed."""


@dataclass(frozen=True)
class DemoOutput:
    files: tuple[Path, ...]
    lines: tuple[str, ...]  # what the command prints


def segment_lines(result: PanopticResult, classes: Sequence[str], instance_ids: Sequence[int] = ()) -> list[str]:
    lines = []
    for i, s in enumerate(result.segments):
        track_id = f"  track {instance_ids[i]}" if instance_ids and instance_ids[i] >= 0 else ""
        kind = "thing" if s.is_thing else "stuff"
        lines.append(f"  segment {s.id:>3}  {classes[s.class_id]:<20} {kind}  score {s.score:.3f}  "
                     f"area {s.area}{track_id}")
    return lines


def _with_legend(picture: np.ndarray, entries: Sequence[tuple[str, np.ndarray]]) -> np.ndarray:
    """The picture with a strip on its right naming each colour."""
    row = 14
    strip = Image.new("RGB", (150, max(picture.shape[0], row * len(entries) + 4)), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    for i, (name, colour) in enumerate(entries):
        y = 2 + i * row
        draw.rectangle([4, y + 2, 14, y + 12], fill=tuple(int(c) for c in colour))
        draw.text((20, y), name[:20], fill=(0, 0, 0))
    canvas = Image.new("RGB", (picture.shape[1] + strip.width, strip.height), (255, 255, 255))
    canvas.paste(Image.fromarray(picture), (0, 0))
    canvas.paste(strip, (picture.shape[1], 0))
    return np.asarray(canvas)


def panoptic_picture(image: np.ndarray, result: PanopticResult, classes: Sequence[str]) -> np.ndarray:
    palette = default_palette(len(classes))
    picture = overlay(image, colorize(result.segment_map, result.segments, palette), where=result.segment_map > 0)
    shown = sorted({s.class_id for s in result.segments})
    return _with_legend(picture, [(classes[c], palette[c]) for c in shown])


def prompt_picture(image: np.ndarray, masks: np.ndarray, ious: np.ndarray, points: Sequence[Sequence[float]],
                   boxes: Sequence[Sequence[float]]) -> np.ndarray:
    picture = image
    for i, mask in enumerate(masks):
        colour = np.broadcast_to(_ACCENTS[i % len(_ACCENTS)], image.shape)
        picture = overlay(picture, np.ascontiguousarray(colour), where=mask)
    canvas = Image.fromarray(picture)
    draw = ImageDraw.Draw(canvas)
    for i, (x, y) in enumerate(points):
        draw.ellipse([x - 4, y - 4, x + 4, y + 4], outline=(255, 255, 255), fill=tuple(_ACCENTS[i % len(_ACCENTS)]))
    for j, box in enumerate(boxes):
        draw.rectangle(list(box), outline=tuple(int(c) for c in _ACCENTS[(len(points) + j) % len(_ACCENTS)]), width=2)
    names = [f"click {i} IoU {ious[i]:.2f}" for i in range(len(points))]
    names += [f"box {j} IoU {ious[len(points) + j]:.2f}" for j in range(len(boxes))]
    return _with_legend(np.asarray(canvas), [(n, _ACCENTS[i % len(_ACCENTS)]) for i, n in enumerate(names)])


def track_picture(image: np.ndarray, result: PanopticResult, instance_ids: Sequence[int]) -> np.ndarray:
    """Things coloured by their track id, with the id written at the segment's centre; stuff left as is."""
    picture = image
    labels = []
    for segment, track_id in zip(result.segments, instance_ids):
        if track_id < 0:
            continue
        mask = result.segment_map == segment.id
        colour = np.ascontiguousarray(np.broadcast_to(_ACCENTS[track_id % len(_ACCENTS)], image.shape))
        picture = overlay(picture, colour, where=mask)
        ys, xs = np.nonzero(mask)
        labels.append((float(xs.mean()), float(ys.mean()), str(track_id)))
    canvas = Image.fromarray(picture)
    draw = ImageDraw.Draw(canvas)
    for x, y, text in labels:
        draw.text((x - 3, y - 5), text, fill=(255, 255, 255))
    return np.asarray(canvas)


def read_image(path: str | Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise DemoError(f"cannot read image {path}: {exc}") from exc


def read_video(path: str | Path, max_frames: int) -> Iterator[np.ndarray]:
    """RGB frames of a GIF / APNG / TIFF stack (Pillow), or any format imageio reads with its plugins."""
    path = Path(path)
    if not path.is_file():
        raise DemoError(f"video {path} not found")
    if path.suffix.lower() in (".gif", ".png", ".apng", ".tif", ".tiff", ".webp"):
        with Image.open(path) as video:
            for index in range(min(getattr(video, "n_frames", 1), max_frames)):
                video.seek(index)
                yield np.asarray(video.convert("RGB"))
        return
    try:
        import imageio.v3 as iio

        frames = iio.imiter(path)
        for index, frame in enumerate(frames):
            if index >= max_frames:
                break
            yield np.asarray(frame)[..., :3]
    except ImportError as exc:
        raise DemoError(f"reading {path.suffix} video needs imageio with a video plugin: "
                        "pip install imageio[pyav]") from exc
    except (OSError, ValueError) as exc:
        raise DemoError(f"cannot read video {path}: {exc} (pip install imageio[pyav] for mp4/avi/mov)") from exc


def camera_frames(index: int, max_frames: int) -> Iterator[np.ndarray]:
    try:
        import cv2
    except ImportError as exc:
        raise DemoError("--camera needs OpenCV: pip install opencv-python") from exc
    capture = cv2.VideoCapture(index)
    if not capture.isOpened():
        raise DemoError(f"camera {index} cannot be opened (is it connected, and free?)")
    try:
        for _ in range(max_frames):
            ok, frame = capture.read()
            if not ok:
                break
            yield frame[..., ::-1].copy()  # OpenCV gives BGR
    finally:
        capture.release()


def _remembered(frames: Iterable[np.ndarray], seen: list[tuple[float, np.ndarray]]) -> Iterator[np.ndarray]:
    """The frames, each noted in `seen` with the time it was handed on (the tracker does not give it back)."""
    for frame in frames:
        seen[:] = [(time.perf_counter(), frame)]
        yield frame


def demo_image(predictor: Predictor, image: np.ndarray, out_stem: Path, *, points: Sequence[Sequence[float]] = (),
               boxes: Sequence[Sequence[float]] = ()) -> DemoOutput:
    classes = predictor.taxonomy.class_names
    started = time.perf_counter()
    result, _ = panoptic(predictor, image)
    segment_ms = (time.perf_counter() - started) * 1000
    files = [out_stem.with_name(f"{out_stem.name}.panoptic.png")]
    Image.fromarray(panoptic_picture(image, result, classes)).save(files[0])
    lines = [f"panoptic: {len(result.segments)} segments in {segment_ms:.1f} ms ({predictor.runner.runtime})",
             *segment_lines(result, classes)]
    if points or boxes:
        started = time.perf_counter()
        encoded = encode(predictor, image)
        encoded_at = time.perf_counter()
        prompted = prompt(predictor, encoded, points=points, boxes=boxes)
        prompt_ms = (time.perf_counter() - encoded_at) * 1000
        files.append(out_stem.with_name(f"{out_stem.name}.prompts.png"))
        Image.fromarray(prompt_picture(image, prompted.masks, prompted.iou, points, boxes)).save(files[1])
        lines.append(f"prompts: encode {(encoded_at - started) * 1000:.1f} ms once, then {prompt_ms:.1f} ms for "
                     f"{len(prompted.masks)} prompts")
        lines += [f"  prompt {i}: {int(mask.sum())} pixels, predicted IoU {iou:.3f}"
                  for i, (mask, iou) in enumerate(zip(prompted.masks, prompted.iou))]
    return DemoOutput(tuple(files), tuple(lines))


def demo_video(predictor: Predictor, frames: Iterable[np.ndarray], out_stem: Path, *, fps: float = 8.0,
               progress: Callable[[str], None] = lambda message: None) -> DemoOutput:
    classes = predictor.taxonomy.class_names
    pictures: list[np.ndarray] = []
    lines: list[str] = []
    seen: list[tuple[float, np.ndarray]] = []
    for t, tracked in enumerate(track(predictor, _remembered(frames, seen))):
        started, image = seen[0]
        frame_ms = (time.perf_counter() - started) * 1000
        pictures.append(track_picture(image, tracked.panoptic, tracked.instance_ids))
        ids = sorted(i for i in tracked.instance_ids if i >= 0)
        lines.append(f"frame {t}: {len(tracked.panoptic.segments)} segments, tracks {ids} ({frame_ms:.1f} ms)")
        lines += segment_lines(tracked.panoptic, classes, tracked.instance_ids)
        progress(lines[-1 - len(tracked.panoptic.segments)])
    if not pictures:
        raise DemoError("the video has no frames")
    path = out_stem.with_name(f"{out_stem.name}.tracks.gif")
    first, *rest = [Image.fromarray(p) for p in pictures]
    first.save(path, save_all=True, append_images=rest, duration=int(1000 / fps), loop=0)
    return DemoOutput((path,), tuple(lines))
