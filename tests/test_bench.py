"""rapsam-bench on this machine: real runtimes on real artifacts of the tiny model, and the GPU helpers with a
stand-in for torch.cuda. Numbers are checked for consistency, never against a clock."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from rapsam.bench import desktop
from rapsam.bench.desktop import MeasureSpec, format_table, measure, measure_isolated, paper_table, run_desktop
from rapsam.bench.machine import cpu_flop_floor, machine_info
from rapsam.bench.schema import Measurement, Results, ResultsError, latency_summary, read_results, validate_results
from rapsam.bench.timing import BenchError, CudaEventTimer, HostTimer, capture_cuda_graph, resolve_device, time_calls
from rapsam.cli import bench_main
from rapsam.complexity import PaperRow
from rapsam.convert.manifest import source_fingerprint

SIZE = (64, 64)


class FakeEvent:
    """A CUDA event on a fake clock: `record` stamps the clock, `synchronize` is counted."""

    def __init__(self, cuda: FakeCuda, enable_timing: bool) -> None:
        assert enable_timing
        self.cuda, self.stamp = cuda, None

    def record(self) -> None:
        self.stamp = self.cuda.clock

    def synchronize(self) -> None:
        self.cuda.syncs += 1

    def elapsed_time(self, end: FakeEvent) -> float:
        return end.stamp - self.stamp


class FakeGraph:
    def __init__(self, cuda: FakeCuda) -> None:
        self.cuda, self.kernels = cuda, None

    def replay(self) -> None:
        self.cuda.log.append(("replay", self.kernels))


class FakeCuda:
    """torch.cuda's surface that the bench uses; `log` records streams, captures and replays in order."""

    def __init__(self, available: bool = True) -> None:
        self.available, self.clock, self.syncs = available, 0.0, 0
        self.log: list[tuple[str, object]] = []
        self.stream_name = "default"

    def Stream(self) -> FakeStream:
        return FakeStream(self, "side")

    def current_stream(self) -> FakeStream:
        return FakeStream(self, self.stream_name)

    @contextlib.contextmanager
    def stream(self, stream: FakeStream) -> Iterator[None]:
        previous, self.stream_name = self.stream_name, stream.name
        yield
        self.stream_name = previous

    def CUDAGraph(self) -> FakeGraph:
        return FakeGraph(self)

    @contextlib.contextmanager
    def graph(self, graph: FakeGraph) -> Iterator[None]:
        self.stream_name = "capture"
        yield
        self.stream_name = "default"
        graph.kernels = [entry for entry in self.log if entry[0] == "kernel" and entry[1] == "capture"]

    def is_available(self) -> bool:
        return self.available

    def Event(self, enable_timing: bool = False) -> FakeEvent:
        return FakeEvent(self, enable_timing)

    def synchronize(self) -> None:
        self.syncs += 1


class FakeStream:
    def __init__(self, cuda: FakeCuda, name: str) -> None:
        self.cuda, self.name = cuda, name

    def wait_stream(self, other: FakeStream) -> None:
        self.cuda.log.append(("wait", f"{self.name}<-{other.name}"))


def test_device_selection() -> None:
    assert resolve_device("auto", cuda=FakeCuda(available=True)) == "cuda"
    assert resolve_device("auto", cuda=FakeCuda(available=False)) == "cpu"
    assert resolve_device("cpu", cuda=FakeCuda(available=True)) == "cpu"
    with pytest.raises(BenchError, match="sees no GPU; use --device cpu"):
        resolve_device("cuda", cuda=FakeCuda(available=False))
    with pytest.raises(BenchError, match="unknown device 'tpu'"):
        resolve_device("tpu")


def test_cuda_timer_times_device_work_between_events_and_waits_for_it() -> None:
    cuda = FakeCuda()
    durations = iter([2.0, 3.0, 5.0, 7.0])

    def launch() -> None:  # the device clock advances while the "kernels" run
        cuda.clock += next(durations)

    samples = time_calls(launch, warmup=1, runs=3, timer=CudaEventTimer(cuda))
    assert samples == [3.0, 5.0, 7.0]  # the warm-up's 2.0 is not timed
    assert cuda.syncs == 4  # every call waited for its end event


def test_cuda_graph_warms_up_on_a_side_stream_captures_once_and_replays() -> None:
    cuda = FakeCuda()
    outputs = {"masks": "captured buffer"}

    def call() -> dict[str, str]:
        cuda.log.append(("kernel", cuda.stream_name))
        return outputs

    replay = capture_cuda_graph(call, warmup=2, cuda=cuda)
    assert cuda.log == [("wait", "side<-default"), ("kernel", "side"), ("kernel", "side"), ("wait", "default<-side"),
                        ("kernel", "capture")]
    cuda.log.clear()
    assert replay() is outputs and replay() is outputs  # the capture's buffers, refreshed by each replay
    assert cuda.log == [("replay", [("kernel", "capture")])] * 2  # no Python call of the model again


def test_compiled_kernels_are_graphed_by_the_bench_unless_the_mode_graphs_them_itself() -> None:
    def spec(runtime: str, device: str = "cuda", mode: str | None = None) -> MeasureSpec:
        return MeasureSpec(runtime=runtime, device=device, model="rapsam_tiny", entry_point="segment",
                           input_size=SIZE, compile_mode=mode)

    assert spec("torch-cudagraph").own_cuda_graph
    assert spec("torch-compile").own_cuda_graph and spec("torch-compile", mode="max-autotune-no-cudagraphs").own_cuda_graph
    assert spec("torch-compile").options()["cuda_graph"] == "captured"
    # Inductor's cudagraph trees already replay these: a second capture around them is not taken.
    for mode in ("reduce-overhead", "max-autotune"):
        assert not spec("torch-compile", mode=mode).own_cuda_graph
        assert "cuda_graph" not in spec("torch-compile", mode=mode).options()
    assert not spec("torch-compile", device="cpu").own_cuda_graph and not spec("torch-eager").own_cuda_graph


def test_host_timer_and_run_counts() -> None:
    calls = []
    samples = time_calls(lambda: calls.append(1), warmup=2, runs=4, timer=HostTimer())
    assert len(calls) == 6 and len(samples) == 4 and all(s >= 0 for s in samples)
    with pytest.raises(BenchError, match="--runs must be at least 1"):
        time_calls(lambda: None, warmup=0, runs=0, timer=HostTimer())


def test_latency_summary_matches_numpy() -> None:
    samples = list(np.random.default_rng(0).gamma(2.0, 3.0, size=37))
    summary = latency_summary(samples)
    for key, q in (("p50", 50), ("p90", 90), ("p99", 99)):
        assert summary[key] == pytest.approx(np.percentile(samples, q))
    assert (summary["min"], summary["max"]) == (min(samples), max(samples))


def test_flop_floor() -> None:
    avx2 = {"avx2", "fma"}
    assert cpu_flop_floor(2, 2.45, avx2) == pytest.approx(156.8)  # this machine's kind: 2 cores, AVX2 + FMA
    assert cpu_flop_floor(2, 2.45, avx2 | {"avx512f"}, "AuthenticAMD") == pytest.approx(156.8)  # Zen 4: 256-bit units
    assert cpu_flop_floor(2, 2.45, avx2 | {"avx512f"}, "GenuineIntel") == pytest.approx(313.6)
    info = machine_info()
    assert info["cpu_cores"] >= 1 and info["gpus"] == []


def test_schema_refuses_what_readers_cannot_use(tmp_path: Path) -> None:
    ok = Measurement(runtime="torch-eager", device="cpu", model="m", entry_point="encode", input_size=SIZE,
                     precision="fp32", latency_ms=latency_summary([1.0, 2.0]), runs=2)
    document = Results(machine={}, versions={}, settings={}, measurements=[ok], created="x").to_dict()
    assert validate_results(document).measurements[0] == ok
    broken = json.loads(json.dumps(document))
    del broken["measurements"][0]["latency_ms"]["p99"]
    with pytest.raises(ResultsError, match=r"measurements\[0\]: an ok measurement needs latency_ms"):
        validate_results(broken)
    broken = json.loads(json.dumps(document))
    broken["measurements"][0].update(status="skipped", latency_ms=None)
    with pytest.raises(ResultsError, match="a skipped measurement needs a reason"):
        validate_results(broken)
    (tmp_path / "old.json").write_text(json.dumps({**document, "schema_version": 0}))
    with pytest.raises(ResultsError, match="schema_version 0"):
        read_results(tmp_path / "old.json")


@pytest.fixture(scope="module")
def cpu_results(tmp_path_factory: pytest.TempPathFactory) -> Results:
    """Every CPU runtime on the tiny model's artifacts, each measurement in its own worker process. `prompt` only
    (three inputs: the feeds' plumbing), as each entry point costs a conversion per target."""
    artifacts = tmp_path_factory.mktemp("artifacts")
    return run_desktop(model="rapsam_tiny", input_sizes=[SIZE], entry_points=("prompt",), warmup=1, runs=3,
                       device="cpu", artifacts=artifacts, threads=1)


def test_every_cpu_runtime_measures_the_same_entry_points(cpu_results: Results) -> None:
    rows = {(m.runtime, m.entry_point): m for m in cpu_results.measurements}
    assert set(rows) == {(r, "prompt") for r in ("torch-eager", "onnxruntime", "executorch", "litert")}
    for (runtime, entry), m in rows.items():
        assert m.status == "ok", (runtime, entry, m.reason)
        lat = m.latency_ms
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert m.fps == pytest.approx(1000 / lat["p50"])
        assert m.gflops_per_s == pytest.approx(2 * m.gmacs / (lat["p50"] / 1000))
        assert m.first_run_ms > 0 and m.peak_rss_mb > 100  # a worker process holds torch at least
        assert m.options["threads"] == 1 and m.runs == 3
        assert (m.artifact_mb is None) == (runtime == "torch-eager")
    # The same entry point has the same cost whatever runs it.
    assert len({m.gmacs for m in cpu_results.measurements}) == 1
    validate_results(cpu_results.to_dict())
    table = format_table(cpu_results)
    assert table.count("\n") == 2 + len(rows) and "fp32 floor" in table
    # Long model and precision names widen their columns instead of running into the next one.
    long = dataclasses.replace(cpu_results.measurements[0], model="rapsam_edgenext_demo", precision="int8-static")
    lines = format_table(dataclasses.replace(cpu_results, measurements=[*cpu_results.measurements, long]))
    header, *rows_text = lines.splitlines()[1:]
    assert {len(line) for line in rows_text if not line.startswith("-")} == {len(header)}
    assert lines.splitlines()[-1].startswith("rapsam_edgenext_demo ")


def test_unrunnable_combinations_are_skipped_rows_with_reasons(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from rapsam.convert.base import MissingBackendError

    def missing(target: str) -> None:
        raise MissingBackendError(f"target {target} needs onnxruntime: pip install 'rapsam[onnx]'")

    monkeypatch.setattr("rapsam.convert.base.get_converter", missing)
    results = run_desktop(model="rapsam_tiny", input_sizes=[SIZE], entry_points=("encode",), device="cpu",
                          runtimes=["onnxruntime"], precisions=["fp32", "bf16"], artifacts=tmp_path, isolate=False)
    reasons = {m.precision: m.reason for m in results.measurements}
    assert results.measurements[0].status == "skipped"
    assert reasons == {"fp32": "target onnx needs onnxruntime: pip install 'rapsam[onnx]'",
                       "bf16": "artifacts are converted in fp32 or fp16"}
    assert "executorch runs on CPUs and phones" in desktop._unsupported("executorch", "cuda", "fp16")
    with pytest.raises(BenchError, match="unknown runtimes"):
        run_desktop(model="rapsam_tiny", runtimes=["tensorrt-llm"], device="cpu")


def test_int8_schemes_are_benchmarked_on_quantized_artifacts(tmp_path: Path) -> None:
    results = run_desktop(model="rapsam_tiny", input_sizes=[SIZE], entry_points=("encode",), device="cpu",
                          runtimes=["torch-eager", "onnxruntime"], precisions=["fp32", "int8-static"], warmup=1,
                          runs=2, artifacts=tmp_path, isolate=False)
    rows = {(m.runtime, m.precision): m for m in results.measurements}
    assert rows["torch-eager", "int8-static"].status == "skipped"
    assert "rapsam-convert --quantize" in rows["torch-eager", "int8-static"].reason
    assert all(rows[key].status == "ok" for key in [("torch-eager", "fp32"), ("onnxruntime", "fp32"),
                                                     ("onnxruntime", "int8-static")])
    folder, = (tmp_path / "int8-static").iterdir()
    quantization = json.loads((folder / "manifest.json").read_text())["precision"]["quantization"]
    assert quantization["scheme"] == "int8-static" and quantization["calibration"]["samples"] == 16
    # the int8 file is what was timed: smaller than the fp32 one
    assert rows["onnxruntime", "int8-static"].artifact_mb < rows["onnxruntime", "fp32"].artifact_mb
    again = run_desktop(model="rapsam_tiny", input_sizes=[SIZE], entry_points=("encode",), device="cpu",
                        runtimes=["onnxruntime"], precisions=["int8-static"], warmup=0, runs=1, artifacts=tmp_path,
                        isolate=False, progress=(lines := []).append)
    assert again.measurements[0].status == "ok" and any("reusing" in line for line in lines)
    # written by other rapsam code (a converter changed since): converted again, not timed as it was
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["versions"]["rapsam_source"] = "0" * 16
    (folder / "manifest.json").write_text(json.dumps(manifest))
    run_desktop(model="rapsam_tiny", input_sizes=[SIZE], entry_points=("encode",), device="cpu",
                runtimes=["onnxruntime"], precisions=["int8-static"], warmup=0, runs=1, artifacts=tmp_path,
                isolate=False, progress=(lines := []).append)
    assert not any("reusing" in line for line in lines) and any("converting" in line for line in lines)
    assert json.loads((folder / "manifest.json").read_text())["versions"]["rapsam_source"] == source_fingerprint()
    with pytest.raises(BenchError, match="int8-static, int8-dynamic"):
        run_desktop(model="rapsam_tiny", precisions=["int4"], device="cpu")


def test_a_failing_runtime_is_one_failed_row() -> None:
    spec = MeasureSpec(runtime="onnxruntime", device="cpu", model="rapsam_tiny", entry_point="encode",
                       input_size=SIZE, artifact="/nonexistent/folder", runs=1, warmup=0)
    in_process = measure(spec)
    assert in_process.status == "failed" and "FileNotFoundError" in in_process.reason
    isolated = measure_isolated(spec)
    assert isolated.status == "failed" and "FileNotFoundError" in isolated.reason


def test_paper_mode_runs_each_table_row(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("rapsam.complexity.PAPER_ROWS", (PaperRow("rapsam_tiny", 0.1, 0.2, a100_fps=40.0),))
    monkeypatch.setattr("rapsam.complexity.PAPER_INPUT_SIZE", SIZE)
    saved = []
    options = {"device": "cpu", "precisions": ["fp32"], "warmup": 0, "runs": 2, "isolate": False}
    results = desktop.run_paper(runtimes=["torch-eager", "torch-cudagraph"], save=saved.append, **options)
    assert [(m.model, m.entry_point, m.input_size, m.runtime, m.status) for m in results.measurements] == [
        ("rapsam_tiny", "segment", SIZE, "torch-eager", "ok"), ("rapsam_tiny", "segment", SIZE, "torch-cudagraph", "skipped")]
    assert results.measurements[1].reason == "CUDA graphs replay GPU kernels: use --device cuda"
    assert saved and results.settings["paper"] is True and results.settings["models"] == ["rapsam_tiny"]
    nhwc = desktop.run_paper(models=["rapsam_tiny"], runtimes=["torch-eager"], channels_last=True, **options)
    assert nhwc.measurements[0].options["memory_format"] == "channels_last"
    merged = dataclasses.replace(results, measurements=[*results.measurements, *nhwc.measurements])
    table = paper_table(merged)
    assert "rapsam_tiny" in table and "paper A100 40.0 FPS" in table
    eager, channels_last = results.measurements[0], nhwc.measurements[0]
    rows = {line.split()[0] + " " + line.split()[1] + (" NHWC" if "NHWC" in line else ""): line
            for line in table.splitlines() if line.startswith("  eager")}
    assert rows["eager fp32"].split()[-1].rstrip("*") == "1.00"
    assert rows["eager fp32 NHWC"].split()[-1].rstrip("*") == f"{channels_last.fps / eager.fps:.2f}"
    assert table.count("*") == 1  # the faster of the two
    with pytest.raises(BenchError, match=r"\['rapsam_r999'\] are not paper variants; valid: rapsam_tiny"):
        desktop.run_paper(models=["rapsam_r999"], **options)


@pytest.mark.slow
def test_compiled_graph_computes_what_eager_does() -> None:
    from rapsam.checkpoint import build_model
    from rapsam.export import example_inputs

    model = build_model("rapsam_tiny")
    inputs = example_inputs(model, "segment", input_size=SIZE, num_prompts=2)
    specs = [MeasureSpec(runtime=runtime, device="cpu", model="rapsam_tiny", entry_point="segment", input_size=SIZE,
                         freeze=freeze, deform_sampler=sampler)
             for runtime, freeze, sampler in (("torch-eager", False, None), ("torch-compile", False, None),
                                              ("torch-compile", True, "gather_pixels_last"))]
    eager, *compiled_runs = [desktop._torch_call(spec, model, inputs)[0]() for spec in specs]
    assert specs[1].options()["compile_mode"] == "default" and "freezing" not in specs[1].options()
    assert specs[2].options() | {"threads": 0} == {"threads": 0, "compile_mode": "default", "freezing": True,
                                                     "deform_sampler": "gather_pixels_last"}
    for compiled in compiled_runs:
        for expected, actual in zip(eager, compiled, strict=True):
            torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)


def test_channels_last_computes_what_the_default_layout_does() -> None:
    from rapsam.checkpoint import build_model
    from rapsam.export import example_inputs

    model = build_model("rapsam_tiny")
    inputs = example_inputs(model, "segment", input_size=SIZE, num_prompts=2)
    outputs = []
    for channels_last in (False, True):
        spec = MeasureSpec(runtime="torch-eager", device="cpu", model="rapsam_tiny", entry_point="segment",
                           input_size=SIZE, channels_last=channels_last)
        call, _ = desktop._torch_call(spec, model, inputs)
        outputs.append(call())
    for default, nhwc in zip(*outputs, strict=True):
        torch.testing.assert_close(nhwc, default, rtol=1e-4, atol=1e-4)


def test_rapsam_bench_cli_writes_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    code = bench_main(["--model", "rapsam_tiny", "--input-size", "64x64", "--entry-points", "encode",
                       "--runtimes", "torch-eager", "--runs", "2", "--warmup", "0", "--no-isolate",
                       "--out", str(out), "--artifacts", str(tmp_path / "a"), "--profile", str(tmp_path / "p.txt")])
    assert code == 0
    assert read_results(out).measurements[0].status == "ok"
    assert "aten::conv2d" in (tmp_path / "p.txt").read_text()  # where the time goes, by op
    assert "torch-eager" in capsys.readouterr().out
    assert bench_main(["--device", "cuda", "--out", str(tmp_path / "x.json")]) == 2
    assert "sees no GPU" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_every_artifact_runtime_gets_the_threads_the_results_record(monkeypatch, tmp_path: Path) -> None:
    """Without --threads each runtime got None and chose for itself (LiteRT's interpreter: one thread) while the
    results said torch's count: LiteRT's rows were single-threaded (EdgeNeXt-S 512 panoptic 225 vs 129 ms)."""
    from rapsam.convert import executorch, manifest, onnx, tflite
    from rapsam.convert.base import ConvertedFiles

    (tmp_path / "manifest.json").write_text("{}")
    (tmp_path / "model.bin").write_bytes(b"0")
    files = ConvertedFiles(entry_files={"encode": "model.bin"}, entry_methods={"encode": "encode"})
    monkeypatch.setattr(manifest, "converted_files", lambda _: files)
    given = []

    class Runner:
        def __init__(self, *args, threads=None, **kwargs) -> None:
            given.append(threads)

    for module, name in ((onnx, "OnnxRunner"), (executorch, "ExecuTorchRunner"), (tflite, "LiteRTRunner")):
        monkeypatch.setattr(module, name, Runner)
    recorded = []
    for runtime, threads in (("onnxruntime", None), ("executorch", None), ("litert", None), ("litert", 1)):
        spec = MeasureSpec(runtime=runtime, device="cpu", model="rapsam_tiny", entry_point="encode",
                           input_size=(64, 64), threads=threads, artifact=str(tmp_path))
        desktop.artifact_call(spec, None, (torch.zeros(1, 3, 64, 64),))
        recorded.append(spec.options()["threads"])
    cores = torch.get_num_threads()
    assert given == recorded == [cores, cores, cores, 1]
