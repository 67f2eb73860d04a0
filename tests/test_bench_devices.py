"""The phone drivers against fake adb and xcodebuild that replay recorded outputs of the real tools
(tests/data/bench/) and record how they were called."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

import pytest

from rapsam.bench import android, coreml_report, ios, schema
from rapsam.bench.schema import read_results, write_results
from rapsam.bench.timing import BenchError

DATA = Path(__file__).parent / "data" / "bench"
HARNESS = Path(__file__).parents[1] / "apps" / "ios-bench"
SERIAL = "R5CW30ABCDE"
REMOTE = android.REMOTE_DIR
ENTRIES = ("encode", "panoptic", "prompt", "segment")


def install(bin_dir: Path, name: str, script: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!{sys.executable} -S\n" + (DATA / script).read_text())
    path.chmod(0o755)


@pytest.fixture
def log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Fake adb and xcodebuild first on PATH; the file their calls are recorded in."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    install(bin_dir, "adb", "fake_adb.py")
    install(bin_dir, "xcodebuild", "fake_xcodebuild.py")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "calls.jsonl"))
    monkeypatch.setenv("FAKE_DATA", str(DATA))
    return tmp_path / "calls.jsonl"


def calls(log: Path) -> list:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def manifest(target: dict, files: dict[str, str], methods: dict[str, str | None]) -> dict:
    return {
        "schema_version": 1, "model": {"name": "rapsam_edgenext_s", "backbone": "edgenext_s", "weights": "w"},
        "target": target, "input_size": [512, 512], "precision": {"compute": "fp32", "quantization": None},
        "entry_points": {e: {"file": files[e], "method": methods[e], "inputs": [], "outputs": []} for e in ENTRIES},
        "versions": {"rapsam": "0.1.0", "executorch": "1.5.1"},
    }


def phone_artifact(folder: Path, name: str, backend: str = "xnnpack") -> Path:
    """model.pte / model.tflite with its manifest, and a runner binary beside."""
    folder.mkdir(parents=True, exist_ok=True)
    target = {"name": "executorch" if name.endswith(".pte") else "tflite", "backend": backend}
    (folder / "manifest.json").write_text(json.dumps(manifest(target, dict.fromkeys(ENTRIES, name),
                                                              {e: e for e in ENTRIES})))
    (folder / name).write_bytes(b"\0" * 2048)
    return folder / name


def runner(tmp_path: Path, name: str) -> Path:
    (tmp_path / name).write_bytes(b"\x7fELF runner")
    return tmp_path / name


def coreml_artifact(folder: Path) -> Path:
    files = {e: f"{e}.mlpackage" for e in ENTRIES}
    for package in files.values():
        (folder / package / "Data" / "com.apple.CoreML").mkdir(parents=True)
        (folder / package / "Manifest.json").write_text("{}")
        (folder / package / "Data" / "com.apple.CoreML" / "model.mlmodel").write_bytes(b"\0" * 1024)
    (folder / "manifest.json").write_text(json.dumps(manifest({"name": "coreml", "compute_units": "ALL"}, files,
                                                              dict.fromkeys(ENTRIES))))
    return folder


def roundtrip(results, tmp_path: Path):
    return read_results(write_results(results, tmp_path / "out" / "results.json"))


# --- Android ---------------------------------------------------------------------------------------------


def test_executorch_run_pushes_runs_each_method_and_cleans_up(log: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_OUTPUT_encode", "executor_runner_encode.txt")
    monkeypatch.setenv("FAKE_OUTPUT_segment", "executor_runner_segment.txt")
    pte = phone_artifact(tmp_path / "et", "model.pte")
    results = android.run_android(pte, runner(tmp_path, "executor_runner"), entry_points=["encode", "segment"],
                                  threads=4, warmup=2, runs=3, taskset="f0")
    prefix = ["-s", SERIAL]
    assert calls(log) == [
        ["devices", "-l"],
        [*prefix, "shell", "getprop"],
        [*prefix, "shell", f"mkdir -p {REMOTE}"],
        [*prefix, "push", str(pte), f"{REMOTE}/model.pte"],
        [*prefix, "push", str(tmp_path / "executor_runner"), f"{REMOTE}/executor_runner"],
        [*prefix, "shell", f"chmod 755 {REMOTE}/executor_runner"],
        *([*prefix, "shell", (f"taskset f0 {REMOTE}/executor_runner --model_path={REMOTE}/model.pte "
                              f"--method_name={entry} --num_executions=5 --cpu_threads=4")]
          for entry in ("encode", "segment")),
        [*prefix, "shell", f"rm -rf {REMOTE}"],
    ]
    saved = roundtrip(results, tmp_path)
    assert saved.machine == {"kind": "android", "device": "Pixel 8 Pro", "manufacturer": "Google",
                             "soc": "Tensor G3", "soc_manufacturer": "Google", "os": "Android 14",
                             "android_version": "14", "sdk": "34", "abi": "arm64-v8a"}
    encode, segment = saved.measurements
    assert (encode.runtime, encode.device, encode.model, encode.input_size) == (
        "executorch", "android:Pixel 8 Pro", "rapsam_edgenext_s", (512, 512))
    assert dict(encode.options) == {"threads": 4, "delegate": "xnnpack", "taskset": "f0"}
    assert (encode.warmup, encode.runs) == (2, 3)
    assert encode.latency_ms == pytest.approx({"p50": 81.0, "p90": 81.8, "p99": 81.98, "mean": 81.0,
                                               "min": 80.0, "max": 82.0})
    assert encode.first_run_ms == pytest.approx(219.385312 + 99.012345)
    assert encode.fps == pytest.approx(1000 / 81.0)
    assert segment.latency_ms["p50"] == pytest.approx(132.0)
    assert saved.versions["executor_runner"].startswith("sha256:")
    assert saved.versions["export.executorch"] == "1.5.1"


def test_tflite_run_passes_signature_delegate_threads_and_reads_percentiles(log: Path, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_OUTPUT", "benchmark_model_litert.txt")
    tflite = phone_artifact(tmp_path / "tfl", "model.tflite")
    results = android.run_android(tflite, runner(tmp_path, "benchmark_model"), entry_points=["encode"], threads=2,
                                  delegate="gpu", warmup=2, runs=3, peak_memory=True, serial=SERIAL)
    run = calls(log)[6]
    assert run == ["-s", SERIAL, "shell", (
        f"{REMOTE}/benchmark_model --graph={REMOTE}/model.tflite --signature_to_run_for=encode --warmup_runs=2 "
        "--warmup_min_secs=0 --num_runs=3 --min_secs=0 --use_gpu=true --num_threads=2 "
        "--report_peak_memory_footprint=true")]
    (m,) = roundtrip(results, tmp_path).measurements
    assert (m.runtime, m.warmup, m.runs) == ("litert", 2, 3)
    assert dict(m.options) == {"threads": 2, "delegate": "gpu", "latency_from": "benchmark_model median/p95/max"}
    assert m.latency_ms == pytest.approx({"p50": 94.23, "p90": 95.12, "p99": 95.12, "mean": 94.4067,
                                          "min": 93.87, "max": 95.12}, rel=1e-4)
    assert m.first_run_ms == pytest.approx(412.338 + 131.204)
    assert m.peak_rss_mb == pytest.approx(127.414)


def test_benchmark_model_output_without_percentiles_says_p50_is_the_mean() -> None:
    timings = android.parse_benchmark_model_output((DATA / "benchmark_model_tf2.txt").read_text())
    assert (timings.init_ms, timings.first_ms, timings.warmup_runs, timings.runs) == (405.12, 250.11, 2, 3)
    assert (timings.median_ms, timings.p95_ms, timings.peak_memory_mb) == (None, None, None)
    latency, source = timings.latency()
    assert source == "benchmark_model avg/min/max"
    assert latency == pytest.approx({"p50": 199.64, "p90": 200.41, "p99": 200.41, "mean": 199.64, "min": 198.64,
                                     "max": 200.41})


def test_benchmark_model_reads_all_same_runs_and_scientific_numbers() -> None:
    text = ("count=1 curr=1.5e+06\n\ncount=2 curr=1.23457e+06(all same)\n\nInference timings in us: Init: 2e+06, "
            "First inference: 1.5e+06, Warmup (avg): 1.5e+06, Inference (avg): 1.23457e+06\n")
    timings = android.parse_benchmark_model_output(text)
    assert (timings.avg_ms, timings.min_ms, timings.max_ms, timings.runs) == (1234.57, 1234.57, 1234.57, 2)


def test_executor_runner_parser_needs_per_iteration_times() -> None:
    timings = android.parse_executor_runner_output((DATA / "executor_runner_encode.txt").read_text())
    assert timings.load_ms == pytest.approx(219.385312)
    assert timings.iterations_ms == pytest.approx((99.012345, 81.4, 80.0, 82.0, 81.0))
    with pytest.raises(BenchError, match="ExecuTorch 1.3 or newer"):
        android.parse_executor_runner_output((DATA / "executor_runner_old.txt").read_text())
    with pytest.raises(BenchError, match="no 'Model executed successfully'"):
        android.parse_executor_runner_output((DATA / "executor_runner_crash.txt").read_text())


@pytest.mark.parametrize("output, code, reason", [
    ("executor_runner_crash.txt", "134", r"exited with 134: .*Loading of method prompt failed with status 0x14"),
    ("executor_runner_old.txt", "0", r"no per-iteration times: build it from ExecuTorch 1.3"),
])
def test_runner_crash_or_missing_timings_is_a_failed_row_and_exit_1(
        log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        output: str, code: str, reason: str) -> None:
    monkeypatch.setenv("FAKE_OUTPUT", output)
    monkeypatch.setenv("FAKE_RC", code)
    pte = phone_artifact(tmp_path / "et", "model.pte")
    out = tmp_path / "r.json"
    status = main(["android", "--artifact", str(pte), "--runner", str(runner(tmp_path, "executor_runner")),
                   "--entry-points", "prompt", "--out", str(out)])
    assert status == 1
    (m,) = read_results(out).measurements
    assert m.status == "failed" and re.search(reason, m.reason)
    assert calls(log)[-1] == ["-s", SERIAL, "shell", f"rm -rf {REMOTE}"]
    assert "prompt" in capsys.readouterr().out


def test_gpu_delegate_failure_reports_the_tools_error(log: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_OUTPUT", "benchmark_model_gpu_failed.txt")
    monkeypatch.setenv("FAKE_RC", "1")
    tflite = phone_artifact(tmp_path / "tfl", "model.tflite")
    results = android.run_android(tflite, runner(tmp_path, "benchmark_model"), entry_points=["encode"],
                                  delegate="gpu")
    (m,) = results.measurements
    assert m.status == "failed"
    assert m.reason == ("benchmark_model exited with 1: ERROR: Failed to apply GPU delegate. / "
                        "ERROR: Benchmarking failed.")


@pytest.mark.parametrize("devices, serial, message", [
    ("adb_devices_none.txt", None, "no Android device found"),
    ("adb_devices_unauthorized.txt", None, f"device {SERIAL} is unauthorized: unlock it"),
    ("adb_devices_two.txt", None, f"2 devices attached \\({SERIAL}, emulator-5554\\): pick one with --serial"),
    ("adb_devices_two.txt", "ZZ999", f"no device 'ZZ999' in `adb devices -l` \\(it lists: {SERIAL}, emulator"),
])
def test_device_problems_stop_before_anything_is_pushed(log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        devices: str, serial: str | None, message: str) -> None:
    monkeypatch.setenv("FAKE_DEVICES", devices)
    pte = phone_artifact(tmp_path / "et", "model.pte")
    with pytest.raises(BenchError, match=message):
        android.run_android(pte, runner(tmp_path, "executor_runner"), serial=serial)
    assert calls(log) == [["devices", "-l"]]


def test_serial_picks_one_of_several_devices(log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_DEVICES", "adb_devices_two.txt")
    monkeypatch.setenv("FAKE_OUTPUT", "executor_runner_encode.txt")
    pte = phone_artifact(tmp_path / "et", "model.pte")
    android.run_android(pte, runner(tmp_path, "executor_runner"), entry_points=["encode"], warmup=2, runs=3,
                        serial="emulator-5554", keep=True)
    assert all(call[:2] == ["-s", "emulator-5554"] for call in calls(log)[1:])
    assert not any("rm -rf" in " ".join(call) for call in calls(log))  # --keep


@pytest.mark.parametrize("what, message", [
    ("runner", "runner not found: .*benchmark_model"),
    ("artifact", "artifact not found: .*model.tflite"),
    ("manifest", "no manifest.json at"),
    ("suffix", "must be a .pte or .tflite file, not model.onnx"),
])
def test_missing_files_stop_before_adb_runs(log: Path, tmp_path: Path, what: str, message: str) -> None:
    tflite = phone_artifact(tmp_path / "tfl", "model.tflite")
    tool = runner(tmp_path, "benchmark_model")
    if what == "runner":
        tool.unlink()
    elif what == "artifact":
        tflite.unlink()
    elif what == "manifest":
        (tflite.parent / "manifest.json").unlink()
    else:
        tflite = tflite.rename(tflite.with_suffix(".onnx"))
    with pytest.raises(BenchError, match=message):
        android.run_android(tflite, tool)
    assert calls(log) == []


def test_no_adb_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    pte = phone_artifact(tmp_path / "et", "model.pte")
    with pytest.raises(BenchError, match="adb is not on PATH: install Android platform-tools"):
        android.run_android(pte, runner(tmp_path, "executor_runner"))


def test_pte_carries_its_delegate(log: Path, tmp_path: Path) -> None:
    tool = runner(tmp_path, "executor_runner")
    with pytest.raises(BenchError, match="--delegate applies to .tflite"):
        android.run_android(phone_artifact(tmp_path / "a", "model.pte"), tool, delegate="gpu")
    with pytest.raises(BenchError, match="Core ML delegate: it runs on Apple devices only"):
        android.run_android(phone_artifact(tmp_path / "b", "model.pte", backend="coreml"), tool)
    with pytest.raises(BenchError, match=r"entry points \['decode'\] are not in the artifact"):
        android.run_android(phone_artifact(tmp_path / "c", "model.pte"), tool, entry_points=["decode"])
    assert calls(log) == []


# --- iOS -------------------------------------------------------------------------------------------------


def test_harness_package_is_there_and_prints_what_the_parser_reads() -> None:
    swift = {p.relative_to(HARNESS).as_posix(): p.read_text() for p in HARNESS.rglob("*.swift")}
    assert set(swift) >= {"Package.swift", "Sources/RapsamBench/Bench.swift", "Sources/RapsamBench/Inputs.swift",
                          "Sources/RapsamBench/Manifest.swift", "Tests/RapsamBenchTests/RapsamBenchTests.swift"}
    bench = swift["Sources/RapsamBench/Bench.swift"]
    assert f'marker = "{ios.MARKER}"' in bench and ".convertToSnakeCase" in bench
    result = bench[bench.index("struct EntryResult"):bench.index("public func line()")]
    keys = {re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower() for name in re.findall(r"public var (\w+)", result)}
    assert keys >= {"entry_point", "status", "reason", "compute_units", "warmup", "load_ms", "first_ms",
                    "latencies_ms", "device", "os", "platform", "simulator", "processor_count"}
    config = swift["Sources/RapsamBench/Manifest.swift"]
    assert all(f'"{key}"' in config for key in ("entry_points", "compute_units"))
    assert all(f'case "{unit}"' in bench for unit in ios.COMPUTE_UNITS)
    assert (HARNESS / ios.RESOURCES).is_dir()


def test_ios_run_stages_the_harness_and_reads_its_lines(log: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_OUTPUT", "xcodebuild_test_ok.txt")
    folder = coreml_artifact(tmp_path / "coreml")
    shown: list[str] = []
    results = ios.run_ios(folder, "platform=iOS,name=Bench iPhone", entry_points=["encode", "segment"], warmup=2,
                          runs=5, team="ABCDE12345", progress=shown.append)
    version, test = calls(log)
    assert version == {"args": ["-version"]}
    derived_data = test["args"][6]
    assert derived_data.endswith("DerivedData") and not Path(derived_data).exists()  # in the removed scratch folder
    assert test == {
        "args": ["test", "-scheme", "RapsamBench", "-destination", "platform=iOS,name=Bench iPhone",
                 "-derivedDataPath", derived_data, "-allowProvisioningUpdates", "DEVELOPMENT_TEAM=ABCDE12345",
                 "CODE_SIGN_STYLE=Automatic"],
        "package": True, "bench": {"entry_points": ["encode", "segment"], "compute_units": "ALL", "warmup": 2,
                                   "runs": 5},
        "artifact": ["encode.mlpackage", "manifest.json", "segment.mlpackage"],
    }
    assert "** TEST SUCCEEDED **" in shown and not (HARNESS / ios.RESOURCES / "bench.json").exists()
    saved = roundtrip(results, tmp_path)
    assert saved.machine == {"kind": "ios", "device": "iPhone16,1", "os": "iOS 17.5.1", "simulator": False,
                             "cpu_cores": 6}
    assert saved.versions["xcode"] == "15.4 (15F31d)"
    encode, segment = saved.measurements
    assert (encode.runtime, encode.device, dict(encode.options)) == ("coreml", "ios:iPhone16,1",
                                                                     {"compute_units": "ALL"})
    assert (encode.warmup, encode.runs, encode.first_run_ms) == (2, 5, 95.75 + 41.25)
    assert encode.latency_ms == pytest.approx({"p50": 12.25, "p90": 12.8, "p99": 12.98, "mean": 12.25,
                                               "min": 11.5, "max": 13.0})
    assert segment.latency_ms["p50"] == 20.5


def test_ios_failed_entry_and_missing_line_are_failed_rows(log: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_OUTPUT", "xcodebuild_test_partial.txt")
    monkeypatch.setenv("FAKE_RC", "65")
    results = ios.run_ios(coreml_artifact(tmp_path / "coreml"), "platform=iOS,name=Bench iPhone",
                          entry_points=["encode", "prompt", "segment"], compute_units="CPU_AND_NE", runs=3)
    encode, prompt, segment = roundtrip(results, tmp_path).measurements
    assert encode.status == "ok" and encode.options["compute_units"] == "CPU_AND_NE"
    assert prompt.status == "failed" and "with error code: -5" in prompt.reason and "/private/var/" in prompt.reason
    assert segment.status == "failed" and "printed no line for it" in segment.reason


def test_ios_no_matching_destination_names_what_xcodebuild_sees(log: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_OUTPUT", "xcodebuild_no_destination.txt")
    monkeypatch.setenv("FAKE_RC", "70")
    with pytest.raises(BenchError, match=r"no device matches --destination \"platform=iOS,name=Nobody's iPhone\"; "
                       r"xcodebuild sees: My Mac \(macOS\), iPhone 15 Pro \(iOS Simulator\) \(a phone must"):
        ios.run_ios(coreml_artifact(tmp_path / "coreml"), "platform=iOS,name=Nobody's iPhone")


def test_ios_build_failure_shows_the_last_lines(log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_OUTPUT", "xcodebuild_build_failed.txt")
    monkeypatch.setenv("FAKE_RC", "65")
    shown: list[str] = []
    with pytest.raises(BenchError, match=r"failed \(exit 65\) before the harness reported: .* pass --team"):
        ios.run_ios(coreml_artifact(tmp_path / "coreml"), "platform=iOS,name=Bench iPhone", progress=shown.append)
    assert "(1 failure)" in shown[-1] and any("requires a development team" in line for line in shown[-20:])


def test_ios_needs_xcode(log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = coreml_artifact(tmp_path / "coreml")
    monkeypatch.setenv("FAKE_XCODE_BROKEN", "1")
    with pytest.raises(BenchError, match="xcodebuild does not run \\(xcode-select: error: .*xcode-select -s"):
        ios.run_ios(folder, "platform=iOS,name=x")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BenchError, match="needs macOS with Xcode: xcodebuild is not on PATH"):
        ios.run_ios(folder, "platform=iOS,name=x")


def test_ios_refuses_other_artifacts(log: Path, tmp_path: Path) -> None:
    pte = phone_artifact(tmp_path / "et", "model.pte")
    with pytest.raises(BenchError, match="holds a executorch artifact; rapsam-bench ios runs Core ML"):
        ios.run_ios(pte.parent, "platform=iOS,name=x")
    assert calls(log) == []


def test_parse_ios_lines_takes_prefixed_lines_and_rejects_broken_ones() -> None:
    line = {"entry_point": "encode", "status": "ok", "device": "iPhone16,1", "os": "iOS 17.5", "latencies_ms": [1.5]}
    text = f"noise\n2024-06-12 10:15:03.5 xctest[12:34] RAPSAM_BENCH {json.dumps(line)}\nmore noise\n"
    assert ios.parse_ios_lines(text) == [line]
    with pytest.raises(BenchError, match="is not JSON"):
        ios.parse_ios_lines("RAPSAM_BENCH {broken")
    with pytest.raises(BenchError, match="needs latencies_ms"):
        ios.parse_ios_lines("RAPSAM_BENCH " + json.dumps({**line, "latencies_ms": []}))
    with pytest.raises(BenchError, match="has no device"):
        ios.parse_ios_lines("RAPSAM_BENCH " + json.dumps({k: v for k, v in line.items() if k != "device"}))


# --- Xcode performance reports ---------------------------------------------------------------------------


def test_coreml_report_json_becomes_median_rows_with_op_placement(tmp_path: Path) -> None:
    results = coreml_report.import_coreml_report(DATA / "coreml_report.json",
                                                 artifact=coreml_artifact(tmp_path / "coreml"))
    saved = roundtrip(results, tmp_path)
    assert saved.machine["soc"] == "A17 Pro" and saved.versions["xcode"] == "15.4"
    encode, segment = saved.measurements
    assert (encode.device, encode.model, encode.input_size) == ("ios:iPhone 15 Pro", "rapsam_edgenext_s", (512, 512))
    assert set(encode.latency_ms.values()) == {11.84}
    assert encode.first_run_ms == pytest.approx(96.2 + 11.84)
    assert dict(encode.options) == {"compute_units": "ALL", "latency_from": "Xcode performance report median",
                                    "ops_on": "Neural Engine 4, GPU 1, CPU 1"}
    assert "ops_on" not in segment.options


def test_coreml_report_csv_needs_the_artifact_for_model_facts(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="pass --artifact"):
        coreml_report.import_coreml_report(DATA / "coreml_report.csv")
    results = coreml_report.import_coreml_report(DATA / "coreml_report.csv",
                                                 artifact=coreml_artifact(tmp_path / "coreml"))
    _, panoptic = roundtrip(results, tmp_path).measurements
    assert (panoptic.entry_point, panoptic.latency_ms["p50"], panoptic.first_run_ms) == ("panoptic", 4.1, 44.1)


def test_coreml_report_without_median_is_refused(tmp_path: Path) -> None:
    report = json.loads((DATA / "coreml_report.json").read_text())
    del report["entry_points"]["segment"]["median_prediction_ms"]
    (tmp_path / "r.json").write_text(json.dumps(report))
    with pytest.raises(BenchError, match="entry point segment needs median_prediction_ms"):
        coreml_report.load_coreml_report(tmp_path / "r.json")


# --- command line ----------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    """The subcommands as the lead's `rapsam-bench` wires them: each module's register()."""
    parser = argparse.ArgumentParser(prog="rapsam-bench")
    commands = parser.add_subparsers(dest="command", required=True)
    android.register(commands)
    ios.register(commands)
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_writes_results_and_errors_are_one_line_exit_2(log: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FAKE_OUTPUT", "benchmark_model_litert.txt")
    monkeypatch.chdir(tmp_path)
    tflite = phone_artifact(tmp_path / "tfl", "model.tflite")
    tool = runner(tmp_path, "benchmark_model")
    assert main(["android", "--artifact", str(tflite), "--runner", str(tool), "--entry-points", "encode",
                 "--warmup", "2", "--runs", "3"]) == 0
    out = tmp_path / "results" / "bench-android-pixel-8-pro-litert.json"
    assert read_results(out).measurements[0].latency_ms["p50"] == pytest.approx(94.23)
    assert f"wrote {Path('results') / out.name}" in capsys.readouterr().out
    monkeypatch.setenv("FAKE_DEVICES", "adb_devices_none.txt")
    assert main(["android", "--artifact", str(tflite), "--runner", str(tool)]) == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith("error: no Android device found")
    report_out = tmp_path / "report.json"
    assert main(["coreml-report", str(DATA / "coreml_report.json"), "--artifact",
                 str(coreml_artifact(tmp_path / "coreml")), "--out", str(report_out)]) == 0
    assert len(read_results(report_out).measurements) == 2


# --- the sample apps' benchmark modes (--app) --------------------------------------------------------------

GOLDEN = DATA / "app_bench_lines.txt"  # what Kotlin's StageTimer writes (core's BenchLinesTest checks it)
# The samples BenchLinesTest records, per stage.
GOLDEN_SAMPLES = {
    "load": [412.5],
    "preprocess": [1.25, 1.5, 1.0, 1.75, 1.25, 1.5, 1.0, 1.25, 1.5, 2.0],
    "encode": [41.0, 42.5, 40.25, 43.0, 44.75],
    "prompt": [6.5, 7.0, 6.25, 6.75, 8.0],
    "segment": [48.0, 47.5, 49.25, 48.5, 51.0],
    "postprocess": [3.5, 3.25, 3.75, 3.5, 4.0],
    "frame": [53.0, 52.25, 54.5, 53.5, 56.75],
}
PHONE_UDID = "00008120-001A2C3E0E91A01E"


@pytest.fixture
def app_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Fake adb and xcrun that play the sample apps first on PATH; the file their calls are recorded in."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    install(bin_dir, "adb", "fake_adb.py")
    install(bin_dir, "xcrun", "fake_xcrun.py")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "calls.jsonl"))
    monkeypatch.setenv("FAKE_DATA", str(DATA))
    return tmp_path / "calls.jsonl"


def test_python_reads_the_golden_line_kotlins_stage_timer_writes() -> None:
    *ok, failed = schema.parse_app_lines(GOLDEN.read_text())
    measurements = [schema.app_measurement(record) for record in ok]
    assert [m.entry_point for m in measurements] == list(GOLDEN_SAMPLES)
    for m in measurements:
        samples = GOLDEN_SAMPLES[m.entry_point]
        assert m.runs == len(samples)
        assert m.latency_ms == pytest.approx(schema.latency_summary(samples), abs=1e-4)  # the line rounds to 0.1 us
        assert (m.runtime, m.device, m.model, m.input_size, m.precision) == (
            "executorch", "android:Pixel 8 Pro", "rapsam_edgenext_demo", (128, 128), "fp32")
    load, encode = measurements[0], measurements[2]
    assert (load.warmup, load.first_run_ms, load.fps) == (0, 412.5, None)
    assert (encode.warmup, encode.fps) == (3, pytest.approx(1000 / 42.5))
    assert dict(encode.options) == {"source": "app", "backend": "executorch", "image": "coffee.png 640x426",
                                    "runtime": "ExecuTorch 1.5.1 XNNPACK, 4 threads"}
    assert failed["status"] == "failed" and failed["reason"].startswith("no artifact nope in assets/models")


@pytest.mark.parametrize("line, message", [
    ('RAPSAM_BENCH {"stage": "encode"', "is not JSON"),
    ('RAPSAM_BENCH {"status": "ok", "stage": "encode"}', "has no platform"),
    ('RAPSAM_BENCH {"status": "failed"}', "says failed without a reason"),
    ('RAPSAM_BENCH {"status": "done"}', "status other than ok or failed"),
])
def test_app_line_that_breaks_the_format_is_named(line: str, message: str) -> None:
    with pytest.raises(schema.ResultsError, match=message):
        schema.parse_app_lines(f"I RapSAMBench: {line}")


def test_android_app_installs_starts_waits_and_reads_logcat(app_log: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_LOGCAT", "logcat_app_ok.txt")
    monkeypatch.setenv("FAKE_LOGCAT_PENDING", "2")  # the app is still running for two polls
    apk = tmp_path / "app-release.apk"
    apk.write_bytes(b"PK\x03\x04 apk")
    shown: list[str] = []
    results = android.run_android_app(artifact="rapsam_edgenext_demo-128x128-executorch", backend="executorch",
                                      apk=apk, warmup=3, runs=5, threads=4, poll_s=0, progress=shown.append)
    prefix = ["-s", SERIAL]
    start = ("am start -W -S -n ai.rapsam.app/ai.rapsam.app.BenchmarkActivity --ei runs 5 --ei warmup 3 "
             "--es artifact rapsam_edgenext_demo-128x128-executorch --es backend executorch --ei threads 4")
    poll = [[*prefix, "shell", "pidof ai.rapsam.app"],
            [*prefix, "logcat", "-d", "-t", "1712917867.000", "-s", "RapSAMBench:I"]]
    assert calls(app_log) == [
        ["devices", "-l"],
        [*prefix, "shell", "getprop"],
        [*prefix, "install", "-r", str(apk)],
        [*prefix, "shell", "date +%s"],
        [*prefix, "shell", start],
        *poll, *poll, *poll,
    ]
    assert shown[-1] == f"android:Pixel 8 Pro: {start}"
    saved = roundtrip(results, tmp_path)
    assert saved.machine["device"] == "Pixel 8 Pro" and saved.settings["backend"] == "executorch"
    assert saved.versions["app-release.apk"].startswith("sha256:")
    by_stage = {m.entry_point: m for m in saved.measurements}
    assert list(by_stage) == list(GOLDEN_SAMPLES)
    assert by_stage["frame"].latency_ms == pytest.approx({"p50": 53.5, "p90": 55.85, "p99": 56.66, "mean": 54.0,
                                                          "min": 52.25, "max": 56.75})
    assert by_stage["load"].first_run_ms == 412.5
    assert android.app_out(results) == Path("results/bench-app-android-pixel-8-pro-executorch.json")


@pytest.mark.parametrize("env, message", [
    ({"FAKE_LOGCAT": "logcat_app_failed.txt"},
     (r"the app's benchmark failed on the device: no artifact nope in assets/models \(bundled: "
      r"rapsam_edgenext_demo-128x128-executorch\) \(`adb -s R5CW30ABCDE logcat -d -s RapSAMBench` has the stack")),
    ({"FAKE_AM": "am_start_not_installed.txt"},
     (r"am start failed \(Error: Activity class \{ai.rapsam.app/ai.rapsam.app.BenchmarkActivity\} does not exist.\): "
      r"is ai.rapsam.app installed\? .* pass --apk")),
    ({"FAKE_LOGCAT_PENDING": "9", "FAKE_DEAD": "1"}, r"ai.rapsam.app stopped before its benchmark finished \(a crash"),
    ({"FAKE_LOGCAT_PENDING": "9"}, r"did not finish in 0s .* pass a longer --timeout"),
])
def test_android_app_failures_are_one_line_errors(app_log: Path, monkeypatch: pytest.MonkeyPatch, env: dict,
                                                  message: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(BenchError, match=message):
        android.run_android_app(timeout_s=0, poll_s=0)


def test_android_app_done_without_lines_says_to_rebuild(app_log: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "logcat.txt").write_text("04-12 10:31:09.950 12345 12389 I RapSAMBench: done: 0 lines\n")
    monkeypatch.setenv("FAKE_LOGCAT", str(tmp_path / "logcat.txt"))
    with pytest.raises(BenchError, match="printed no RAPSAM_BENCH lines: is the installed ai.rapsam.app older"):
        android.run_android_app(poll_s=0)


def test_ios_app_installs_launches_on_a_phone_and_reads_the_console(app_log: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_CONSOLE", "app_console_ios.txt")
    bundle = tmp_path / "RapSAMApp.app"
    bundle.mkdir()
    (bundle / "Info.plist").write_text("<plist/>")
    results = ios.run_ios_app(device=PHONE_UDID, bundle=bundle, artifact="rapsam_edgenext_demo-128x128-coreml",
                              compute_units="CPU_AND_NE", warmup=3, runs=20)
    assert calls(app_log) == [
        ["devicectl", "device", "install", "app", "--device", PHONE_UDID, str(bundle)],
        ["devicectl", "device", "process", "launch", "--console", "--terminate-existing", "--device", PHONE_UDID,
         "org.rapsam.RapSAMApp", "--", "-benchmark", "-runs", "20", "-warmup", "3", "-artifact",
         "rapsam_edgenext_demo-128x128-coreml", "-compute-units", "CPU_AND_NE"],
    ]
    saved = roundtrip(results, tmp_path)
    assert saved.machine == {"kind": "ios", "device": "iPhone16,1", "os": "iOS 17.5.1", "simulator": False,
                             "cpu_cores": 6}
    by_stage = {m.entry_point: m for m in saved.measurements}
    assert list(by_stage) == list(GOLDEN_SAMPLES)
    encode = by_stage["encode"]
    assert (encode.runtime, encode.device, encode.runs, encode.options["runtime"]) == (
        "coreml", "ios:iPhone16,1", 20, "Core ML (ALL)")
    assert encode.latency_ms == pytest.approx({"p50": 3.5, "p90": 3.8, "p99": 4.06, "mean": 3.55, "min": 3.25,
                                               "max": 4.25})
    assert by_stage["load"].first_run_ms == 1893.25


def test_ios_app_on_a_simulator_and_its_errors(app_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_CONSOLE", "app_console_ios_failed.txt")
    monkeypatch.setenv("FAKE_RC", "2")
    with pytest.raises(BenchError, match=r"failed on the device: no artifact nope in Models/ .*the app's console"):
        ios.run_ios_app(simulator="booted", artifact="nope", runtime="executorch")
    assert calls(app_log)[-1] == ["simctl", "launch", "--console", "--terminate-running-process", "booted",
                                  "org.rapsam.RapSAMApp", "-benchmark", "-runs", "20", "-warmup", "3", "-artifact",
                                  "nope", "-runtime", "executorch"]
    (tmp_path / "empty.txt").write_text("An error was encountered processing the command (code=4):\n")
    monkeypatch.setenv("FAKE_CONSOLE", str(tmp_path / "empty.txt"))
    with pytest.raises(BenchError, match=r"`simctl launch` exited with 2 \(.*code=4\):\): is org.rapsam.RapSAMApp "
                                         r"installed on the simulator booted\? .* --bundle"):
        ios.run_ios_app(simulator="booted")
    with pytest.raises(BenchError, match="pass --device <UDID>"):
        ios.run_ios_app()


def test_cli_app_modes_write_results_and_refuse_runner_options(app_log: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FAKE_LOGCAT", "logcat_app_ok.txt")
    monkeypatch.setenv("FAKE_CONSOLE", "app_console_ios.txt")
    monkeypatch.chdir(tmp_path)
    assert main(["android", "--app", "--artifact", "artifacts/rapsam_edgenext_demo-128x128-executorch",
                 "--warmup", "3", "--runs", "5"]) == 0
    out = tmp_path / "results" / "bench-app-android-pixel-8-pro-executorch.json"
    assert read_results(out).measurements[2].latency_ms["p50"] == 42.5
    assert "--es artifact rapsam_edgenext_demo-128x128-executorch" in calls(app_log)[3][-1]
    assert "executorch frame 128x128 on android:Pixel 8 Pro: p50 53.5 ms" in capsys.readouterr().out
    assert main(["ios", "--app", "--device", PHONE_UDID]) == 0
    assert (tmp_path / "results" / "bench-app-ios-iphone16-1-coreml.json").is_file()
    assert main(["android", "--app", "--runner", "executor_runner"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "error: --runner time a bare artifact, not the app: drop them or --app")
    assert main(["android", "--artifact", "model.pte"]) == 2
    assert "--artifact and --runner are needed" in capsys.readouterr().err
