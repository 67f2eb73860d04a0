"""rapsam-convert --quantize end to end: the demo weights quantized for ONNX Runtime, scored against the fp32
model on held-out synthetic scenes by the task metrics, gated, and written only when they hold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rapsam.bench.desktop import run_desktop
from rapsam.bench.schema import write_results
from rapsam.cli import quantize_main
from rapsam.convert import check_artifact, convert
from rapsam.quantize.base import QuantizationError
from rapsam.quantize.report import write_report


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
    table = write_report([result.folder], tmp_path / "report")
    reference_row, row = table.splitlines()[2:4]
    assert reference_row.startswith("| PyTorch | fp32 (reference) |")
    pq = accuracy["quantized"]["pq"]
    assert row.startswith("| onnx | int8-static |") and f"{100 * pq:.1f} ({pq / accuracy['reference']['pq']:.0%})" in row
    assert row.endswith("| passed |")


@pytest.mark.slow
def test_an_artifact_that_loses_accuracy_is_not_written(tmp_path: Path) -> None:
    [result] = convert("onnx", quantize="int8-dynamic", keep_accuracy=1.5, out_dir=tmp_path,
                       entry_points=("encode", "prompt", "segment"), progress=lambda message: None)
    assert not result.written and not result.folder.exists() and result.failed_gates == ("accuracy",)
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
    for target, scheme in [("onnx", "int8-dynamic"), ("executorch", "int8-static"), ("tflite", "fp16"),
                           ("coreml", "palettize-4"), ("coreml", "w8a8")]:
        assert f"{target:<11} {scheme}" in out


def test_report_puts_sizes_and_bench_latency_beside_each_artifact(tmp_path: Path, capsys) -> None:
    """rapsam-bench converts (and quantizes) what it times: its folders and results make the report."""
    results = run_desktop(model="rapsam_tiny", input_sizes=[(64, 64)], entry_points=("segment",), device="cpu",
                          runtimes=["onnxruntime"], precisions=["fp32", "int8-dynamic"], warmup=0, runs=2,
                          artifacts=tmp_path / "bench", isolate=False)
    write_results(results, tmp_path / "bench.json")
    folders = [next((tmp_path / "bench" / precision).iterdir()) for precision in ("fp32", "int8-dynamic")]
    assert quantize_main(["report", *map(str, folders), "--bench", str(tmp_path / "bench.json"),
                          "--out", str(tmp_path / "table")]) == 0
    rows = json.loads((tmp_path / "table.json").read_text())["rows"]
    p50 = {m.precision: round(m.latency_ms["p50"], 2) for m in results.measurements}
    assert [(r["scheme"], r["latency_ms"]) for r in rows] == [(p, {"segment": p50[p]}) for p in ("fp32", "int8-dynamic")]
    sizes = [sum(f.stat().st_size for f in folder.glob("*.onnx")) / 2**20 for folder in folders]
    assert [r["size_mb"] for r in rows] == [round(size, 3) for size in sizes] and sizes[1] < sizes[0]
    assert [r["gate"] for r in rows] == ["-", "not judged"]
    assert (tmp_path / "table.md").read_text() in capsys.readouterr().out + "\n"
    assert quantize_main(["report", str(tmp_path / "nothing")]) == 2  # one line on stderr, as every CLI error
