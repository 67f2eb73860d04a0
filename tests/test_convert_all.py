"""One real mobile variant converts to every target and passes parity where the runtime exists."""

from __future__ import annotations

import json

import pytest

from rapsam.convert import convert


@pytest.mark.slow
def test_edgenext_s_converts_to_every_target(tmp_path) -> None:
    # segment holds encode and panoptic: every op of this backbone and of the panoptic decoder at full width.
    # The prompt head is the same code for every variant; the tiny model's tests convert it to every target.
    # fp32 everywhere: random-init EdgeNeXt's layer scales (1e-6) sit below fp16's normal range, so its fp16
    # Core ML program loses those branches (the MIL audit names each scaling mul); trained scales do not.
    results = convert("all", model="rapsam_edgenext_s", input_size=(128, 128), out_dir=tmp_path,
                      entry_points=("segment",), precision="fp32", progress=lambda m: None)
    by_target = {r.target: r for r in results}
    assert set(by_target) == {"coreml", "executorch", "tflite", "onnx"}
    for target, result in by_target.items():
        assert result.written, target
        manifest = json.loads((result.folder / "manifest.json").read_text())
        assert manifest["model"]["name"] == "rapsam_edgenext_s" and manifest["input_size"] == [128, 128]
        assert manifest["parity"]["gate"] == "passed", (target, result.parity.table())
        masks = [r for r in result.parity.rows if r.output == "mask_logits"]
        assert min(r.extra["mask_iou"] for r in masks) >= 0.999
        if target == "coreml":  # off macOS through the MIL reference evaluator
            assert manifest["parity"]["runtime"].startswith(("MIL reference, fp32", "coremltools"))
