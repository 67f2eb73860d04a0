"""rapsam-convert --quantize end to end: the demo weights quantized for ONNX Runtime, scored against the fp32
model on held-out synthetic scenes by the task metrics, gated, and written only when they hold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rapsam.cli import quantize_main
from rapsam.convert import check_artifact, convert
from rapsam.quantize.base import QuantizationError


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_int8_demo_artifact_keeps_its_task_metrics(tmp_path: Path) -> None:
    [result] = convert("onnx", quantize="int8-static", calib="synthetic", calib_count=8, out_dir=tmp_path,
                       progress=lambda message: None)
    assert result.written and result.folder.name == "rapsam_edgenext_demo-128x128-onnx-int8-static"
    quantization = result.manifest["precision"]["quantization"]
    assert quantization["scheme"] == "int8-static" and quantization["calibration"]["samples"] == 8
    assert len(quantization["calibration"]["sha256"]) == 64
    accuracy = json.loads((result.folder / "accuracy.json").read_text())
    assert accuracy == quantization["accuracy"] and accuracy["passed"] and accuracy["reason"] is None
    for metric in ("pq", "prompt_point", "prompt_box"):
        assert accuracy["reference"][metric] > 0.4  # the demo weights segment: the ratios mean something
        assert accuracy["ratios"][metric] >= 0.95
    assert result.manifest["parity"]["gate"] in ("passed", "informative")
    assert check_artifact(result.folder, progress=lambda message: None).ran


@pytest.mark.slow
def test_an_artifact_that_loses_accuracy_is_not_written(tmp_path: Path) -> None:
    [result] = convert("onnx", quantize="int8-dynamic", keep_accuracy=1.5, out_dir=tmp_path,
                       entry_points=("encode", "prompt", "segment"), progress=lambda message: None)
    assert not result.written and not result.folder.exists()
    assert not result.manifest["precision"]["quantization"]["accuracy"]["passed"]
    assert list(tmp_path.iterdir()) == []  # no staging folder left behind


def test_bad_quantization_requests_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(QuantizationError, match="has no scheme 'int4'; it has int8-static, int8-dynamic"):
        convert("onnx", quantize="int4", out_dir=tmp_path)
    with pytest.raises(QuantizationError, match="give --calib DATA"):
        convert("onnx", quantize="int8-static", out_dir=tmp_path)
    with pytest.raises(QuantizationError, match="no readable images|does not exist|no images"):
        convert("onnx", quantize="int8-static", calib=tmp_path / "missing", out_dir=tmp_path)
    with pytest.raises(Exception, match="one --target, not all"):
        convert("all", quantize="int8-static", out_dir=tmp_path)
    assert not any(tmp_path.glob("rapsam_*"))


def test_rapsam_quantize_lists_each_targets_schemes(capsys: pytest.CaptureFixture[str]) -> None:
    assert quantize_main([]) == 0
    out = capsys.readouterr().out
    assert "onnx        int8-static" in out and "(calibrated: --calib DATA)" in out
    assert "onnx        int8-dynamic" in out
