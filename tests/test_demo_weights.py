"""The built-in demo weights: they ship with the package, segment held-out synthetic scenes, and are what a
bare `rapsam-convert` converts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rapsam.checkpoint import build_model, builtin_weights, weights_id
from rapsam.convert import DEFAULT_MODEL, check_artifact, convert
from rapsam.data import write_synthetic
from rapsam.evaluation.evaluate import evaluate, torch_predictor

DEMO = builtin_weights(DEFAULT_MODEL)


def test_demo_weights_ship_with_their_config_and_evaluation() -> None:
    assert DEMO is not None and DEMO.stat().st_size < 8 * 2**20
    model = build_model(weights=DEMO)
    assert model.config.name == DEFAULT_MODEL == "rapsam_edgenext_demo"
    assert model.config.taxonomy.name == "shapes" and model.config.default_size == (128, 128)
    recorded = json.loads(DEMO.with_suffix(".eval.json").read_text())
    assert recorded["panoptic"]["All"]["pq"] >= 0.5 and recorded["video"]["AP"] >= 0.4


@pytest.fixture(scope="module")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first validation scenes of the synthetic data (scenes are seeded per split and index, so these are
    the ones the demo's evaluation held out)."""
    root = tmp_path_factory.mktemp("synthetic")
    write_synthetic(root, num_train=1, num_val=8, num_videos_train=1, num_videos_val=2, image_size=(128, 128))
    return root


def test_demo_weights_segment_held_out_scenes(held_out: Path) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = evaluate(torch_predictor(build_model(weights=DEMO)), coco=held_out / "coco",
                           ytvis=held_out / "ytvis", limit=8)
    finally:
        torch.set_num_threads(threads)
    assert results["panoptic"]["All"]["pq"] > 0.5
    assert results["prompt"]["per_kind"]["box"]["miou"] > 0.6
    assert results["video"]["AP"] > 0.3
    # A random init of the same model segments nothing: the numbers above come from the weights.
    untrained = evaluate(torch_predictor(build_model(DEFAULT_MODEL)), coco=held_out / "coco", tasks=("panoptic",),
                         limit=2)
    assert untrained["panoptic"]["All"]["pq"] < 0.05


@pytest.mark.slow
def test_bare_convert_uses_the_demo_weights_and_checks_without_them(tmp_path: Path) -> None:
    # One entry point is enough to show what a bare conversion picks (all of them are converted elsewhere).
    [result] = convert("onnx", out_dir=tmp_path, entry_points=("encode",), progress=lambda message: None)
    manifest = json.loads((result.folder / "manifest.json").read_text())
    assert manifest["model"]["name"] == DEFAULT_MODEL and manifest["input_size"] == [128, 128]
    assert manifest["model"]["weights"] == weights_id(DEMO) and not manifest["model"]["random_init"]
    assert manifest["parity"]["gate"] == "passed"
    assert check_artifact(result.folder, progress=lambda message: None).passed  # no --weights needed
    [random] = convert("onnx", out_dir=tmp_path / "random", random_init=True, entry_points=("encode",),
                       parity=False, progress=lambda message: None)
    assert json.loads((random.folder / "manifest.json").read_text())["model"]["random_init"]
