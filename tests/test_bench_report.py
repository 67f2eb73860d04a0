"""rapsam-bench report: results from two machines merged into one sorted table, one chart, one-line errors."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

from rapsam.bench.report import ReportError, fmt, load_many, markdown_report, plot_report, register
from rapsam.bench.schema import Measurement, Results, ResultsError, skipped, write_results

DESKTOP = {"os": "Linux", "cpu_model": "AMD Ryzen 9 7950X 16-Core Processor", "cpu_cores": 16, "gpus": []}
GPU_BOX = {"os": "Linux", "hostname": "gpu-7", "cpu_model": "Intel(R) Xeon(R) Platinum 8480+", "cpu_cores": 26,
           "gpus": [{"name": "NVIDIA H100 80GB HBM3", "memory_mb": 81559}]}
RYZEN, H100 = "AMD Ryzen 9 7950X (16 cores)", "H100 80GB HBM3"
FULL = (800, 1333)


def ok(runtime: str, device: str, p50: float, *, size: tuple[int, int] = FULL, precision: str = "fp32",
       model: str = "rapsam_r18", **options: object) -> Measurement:
    latency = {"p50": p50, "p90": p50 * 1.1, "p99": p50 * 1.2, "mean": p50, "min": p50 * 0.9, "max": p50 * 1.3}
    on_gpu = device.startswith("cuda")
    return Measurement(runtime=runtime, device=device, model=model, entry_point="panoptic", input_size=size,
                       precision=precision, options=options, warmup=5, runs=50, latency_ms=latency,
                       first_run_ms=p50 * 20, peak_rss_mb=None if on_gpu else 1234.5,
                       peak_device_mb=812.0 if on_gpu else None, artifact_mb=None if on_gpu else 56.78, gmacs=60.0)


def desktop() -> Results:
    return Results(machine=DESKTOP, versions={"rapsam": "0.1.0", "python": "3.11.9"}, settings={"runs": 50},
                   created="2025-06-01T10:00:00Z", measurements=[
                       ok("torch-eager", "cpu", 250.0, threads=16),
                       ok("litert", "cpu", 200.0, delegate="xnnpack", threads=4),
                       ok("onnxruntime", "cpu", 120.0, provider="CPU", threads=4),
                       ok("executorch", "cpu", 150.0, delegate="xnnpack", threads=4),
                       ok("onnxruntime", "cpu", 40.0, size=(512, 512), provider="CPU", threads=4),
                   ])


def gpu_box() -> Results:
    return Results(machine=GPU_BOX, versions={"rapsam": "0.1.1"}, settings={"runs": 50},
                   created="2025-06-02T08:30:00Z", measurements=[
                       ok("torch-eager", "cuda", 30.0, precision="fp16"),
                       ok("torch-compile", "cuda:0", 20.0, precision="fp16", compile_mode="max-autotune", threads=26),
                       skipped("coreml", "cpu", "rapsam_r18", "panoptic", FULL, "fp32",
                               "coremltools runs only on macOS"),
                   ])


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "results"
    write_results(desktop(), folder / "desktop.json")
    write_results(gpu_box(), folder / "h100.json")
    return folder


def table(markdown: str) -> list[list[str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]


def test_table_rows_columns_and_numbers_sorted_for_comparison() -> None:
    header, rule, *rows = table(markdown_report([desktop(), gpu_box()]))
    assert header == ["model", "entry point", "size", "precision", "runtime", "device", "p50 ms", "p90 ms",
                      "p99 ms", "FPS", "first run ms", "peak MB", "artifact MB", "GFLOP/s"]
    assert rule[:6] == ["---"] * 6 and rule[6:] == ["---:"] * 8
    # Smaller size first; within a size, each device's runtimes next to each other, fastest first.
    assert [(r[2], r[4], r[5]) for r in rows] == [
        ("512x512", "onnxruntime (CPU, 4 threads)", RYZEN),
        ("800x1333", "onnxruntime (CPU, 4 threads)", RYZEN),
        ("800x1333", "executorch (xnnpack, 4 threads)", RYZEN),
        ("800x1333", "litert (xnnpack, 4 threads)", RYZEN),
        ("800x1333", "torch-eager (16 threads)", RYZEN),
        ("800x1333", "torch-compile (max-autotune, 26 threads)", H100),
        ("800x1333", "torch-eager", H100),
    ]
    onnx = rows[1]
    assert onnx[:4] == ["rapsam_r18", "panoptic", "800x1333", "fp32"]
    assert onnx[6:] == ["120", "132", "144", "8.33", "2400", "1230 RSS", "56.8", "1000"]
    compiled = rows[5]
    assert compiled[3] == "fp16" and compiled[6:] == ["20.0", "22.0", "24.0", "50.0", "400", "812 dev", "–", "6000"]


def test_sources_listed_and_skipped_reasons_under_the_table() -> None:
    text = markdown_report([desktop(), gpu_box()])
    assert f"- [1] {RYZEN}: 2025-06-01, rapsam 0.1.0" in text
    assert f"- [2] Intel Xeon Platinum 8480+ (26 cores) + {H100} on gpu-7: 2025-06-02, rapsam 0.1.1" in text
    skipped_line = ("- skipped: rapsam_r18 panoptic 800x1333 fp32 coreml on Intel Xeon Platinum 8480+ (26 cores): "
                    "coremltools runs only on macOS")
    assert skipped_line in text
    assert text.index(skipped_line) > text.rindex("| rapsam_r18")
    assert not any("coreml" in row[4] for row in table(text))


def test_same_kind_of_machine_twice_is_told_apart_by_file_number() -> None:
    rows = table(markdown_report([desktop(), desktop()]))[2:]
    assert {row[5] for row in rows} == {f"{RYZEN} [1]", f"{RYZEN} [2]"}


def test_phone_label_names_model_and_soc() -> None:
    phone = Results(machine={"os": "Android 14", "device": "Pixel 8", "soc": "Tensor G3"}, versions={},
                    settings={}, measurements=[ok("litert", "android:Pixel 8", 310.0, threads=4)])
    assert table(markdown_report([phone]))[2][5] == "Pixel 8 (Tensor G3)"


@pytest.mark.parametrize("value, text", [
    (123.456, "123"), (12.345, "12.3"), (0.0123456, "0.0123"), (9.996, "10.0"), (1234.5, "1230"), (0.0, "0"),
    (None, "–"),
])
def test_numbers_have_three_significant_digits(value: float | None, text: str) -> None:
    assert fmt(value) == text


def test_folder_merges_every_json_once(results_dir: Path) -> None:
    merged = load_many([results_dir, results_dir / "h100.json"])
    assert [r.versions["rapsam"] for r in merged] == ["0.1.0", "0.1.1"]
    (results_dir.parent / "empty").mkdir()
    with pytest.raises(ReportError, match="empty: folder holds no .json"):
        load_many([results_dir.parent / "empty"])


def test_invalid_file_error_names_file_and_problem(results_dir: Path) -> None:
    bad = results_dir / "broken.json"
    bad.write_text(json.dumps({"schema_version": 1, "created": ""}))
    with pytest.raises(ResultsError, match=r"broken\.json: field 'machine' is missing"):
        load_many([results_dir])


@pytest.mark.parametrize("metric", ["p50", "fps"])
def test_plot_is_a_png_sized_by_bar_count(tmp_path: Path, metric: str) -> None:
    pytest.importorskip("matplotlib")
    from PIL import Image

    many = Results(machine=DESKTOP, versions={}, settings={}, measurements=[
        ok("onnxruntime", "cpu", 100.0 + i, model="rapsam_edgenext_s", threads=i + 1) for i in range(20)])
    small = plot_report([desktop(), gpu_box()], tmp_path / "small.png", metric=metric)
    large = plot_report([many], tmp_path / "large.png", metric=metric)
    with Image.open(small) as a, Image.open(large) as b:
        assert a.format == b.format == "PNG"
        assert 1000 < a.width == b.width < 2000
        assert 300 < a.height < b.height < 2000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["large.png", "small.png"]  # no temporary left over


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rapsam-bench")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_prints_or_writes_the_table(results_dir: Path, tmp_path: Path, capsys) -> None:
    assert run_cli(["report", str(results_dir / "desktop.json"), str(results_dir / "h100.json")]) == 0
    printed = capsys.readouterr().out
    assert printed == markdown_report([desktop(), gpu_box()])
    assert run_cli(["report", str(results_dir), "--markdown", str(tmp_path / "out" / "report.md")]) == 0
    assert (tmp_path / "out" / "report.md").read_text() == printed


@pytest.mark.parametrize("argv, message", [
    ([], "no results files given"),
    (["missing.json"], "results file not found: missing.json"),
    (["{dir}/broken.json"], "broken.json: field 'schema_version' is missing"),
    (["{dir}", "--plot", "chart.svg"], "name it .png"),
])
def test_cli_errors_are_one_line_with_exit_2(results_dir: Path, capsys, argv: list[str], message: str) -> None:
    (results_dir / "broken.json").write_text("{}")
    assert run_cli(["report", *(arg.format(dir=results_dir) for arg in argv)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err and captured.err.count("\n") == 1


def test_cli_plot_without_matplotlib_names_the_extra(results_dir: Path, tmp_path: Path, capsys,
                                                     monkeypatch) -> None:
    for name in ("matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules makes the import fail
    assert run_cli(["report", str(results_dir), "--plot", str(tmp_path / "chart.png")]) == 2
    assert "pip install 'rapsam[bench]'" in capsys.readouterr().err
    assert not (tmp_path / "chart.png").exists()


def test_cli_plot(results_dir: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("matplotlib")
    assert run_cli(["report", str(results_dir), "--plot", str(tmp_path / "chart.png"), "--metric", "fps"]) == 0
    assert (tmp_path / "chart.png").stat().st_size > 0
    assert capsys.readouterr().out.startswith("# rapsam-bench report")
