"""One real mobile variant converts to every target and passes parity where the runtime exists."""

from __future__ import annotations

import json

import pytest

from rapsam.convert import convert


@pytest.mark.slow
def test_edgenext_s_converts_to_every_target(tmp_path) -> None:
    # segment holds encode and panoptic; with prompt, every op of the model converts
    results = convert("all", model="rapsam_edgenext_s", input_size=(256, 256), num_prompts=2, out_dir=tmp_path,
                      entry_points=("segment", "prompt"), progress=lambda m: None)
    by_target = {r.target: r for r in results}
    assert set(by_target) == {"coreml", "executorch", "tflite", "onnx"}
    for target, result in by_target.items():
        assert result.written, target
        manifest = json.loads((result.folder / "manifest.json").read_text())
        assert manifest["model"]["name"] == "rapsam_edgenext_s" and manifest["input_size"] == [256, 256]
        if target == "coreml":
            assert manifest["parity"]["gate"] == "not_run" and "macOS" in manifest["parity"]["reason"]
        else:
            assert manifest["parity"]["gate"] == "passed", (target, result.parity.table())
            masks = [r for r in result.parity.rows if r.output == "mask_logits"]
            assert min(r.extra["mask_iou"] for r in masks) >= 0.999
