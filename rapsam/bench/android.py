"""`rapsam-bench android`: the entry points of one artifact timed on a phone through adb.

A `.pte` runs in ExecuTorch's `executor_runner` (one run per method, `--method_name`), a `.tflite` in TFLite's
`benchmark_model` (one run per signature, `--signature_to_run_for`). The artifact and the runner are pushed to
/data/local/tmp/rapsam-bench/, run with `adb shell`, their printed timings parsed, and the folder removed. The
runners make their own inputs (ones, random values): this network's latency does not depend on them. Model,
input size and precision come from the manifest.json `rapsam-convert` writes beside the artifact.

With --app it runs the sample app's benchmark mode instead (sample_apps/android, BenchmarkActivity): the whole
pipeline (load, letterbox, encode, prompt, segment, post-processing, tracked frame) as the app runs it, started
with `am start` and read from logcat, one Measurement per stage.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import rapsam
from rapsam.bench.schema import (
    APP_MARKER,
    Measurement,
    Results,
    ResultsError,
    app_measurement,
    latency_summary,
    parse_app_lines,
    write_results,
)
from rapsam.bench.timing import BenchError

REMOTE_DIR = "/data/local/tmp/rapsam-bench"
RUNTIMES = {".pte": "executorch", ".tflite": "litert"}
# benchmark_model flags per delegate; "cpu" is TFLite's built-in kernels, XNNPACK switched off.
TFLITE_DELEGATES = {
    "xnnpack": ("--use_xnnpack=true",),
    "gpu": ("--use_gpu=true",),
    "nnapi": ("--use_nnapi=true",),
    "cpu": ("--use_xnnpack=false",),
}
RUNNER_TIMEOUT_S = 1800
APP_PACKAGE = "ai.rapsam.app"  # the sample app's applicationId
APP_ACTIVITY = "ai.rapsam.app.BenchmarkActivity"  # its class: the same whatever the package's suffix
APP_TAG = "RapSAMBench"  # BenchmarkActivity's logcat tag
APP_BACKENDS = ("executorch", "litert", "litert-gpu")
APP_TIMEOUT_S = 600
_APP_DONE = re.compile(r"\bdone: \d+ lines?\b")  # BenchmarkActivity's last log line
_NUMBER = r"[-+]?(?:nan|inf|\d+\.?\d*(?:[eE][-+]?\d+)?)"
_DETAIL = re.compile(r"^(usb|product|model|device|transport_id):(.*)$")
_ET_PREFIX = re.compile(r"^[DIWEF] \d\d:\d\d:\d\d\.\d+ executorch:\S+\] ")

Progress = Callable[[str], None]


def _quiet(message: str) -> None:
    pass


# --- adb -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdbDevice:
    serial: str
    state: str  # device, unauthorized, offline, no permissions (...), ...
    details: Mapping[str, str]  # model, product, device, usb, transport_id


def parse_devices(text: str) -> list[AdbDevice]:
    """`adb devices -l` -> its devices; the header and the daemon's '* daemon ...' notes are skipped."""
    devices = []
    for line in text.splitlines():
        if not line.strip() or line.startswith(("List of devices", "*")):
            continue
        serial, *tokens = line.split()
        details = dict(m.groups() for m in map(_DETAIL.match, tokens) if m)
        state = " ".join(t for t in tokens if not _DETAIL.match(t))
        devices.append(AdbDevice(serial, state, details))
    return devices


def pick_device(devices: Sequence[AdbDevice], serial: str | None) -> AdbDevice:
    """The one device to use, or a BenchError that says how to get it ready."""
    if serial is not None:
        matching = [d for d in devices if d.serial == serial]
        if not matching:
            listed = ", ".join(d.serial for d in devices) or "none"
            raise BenchError(f"no device {serial!r} in `adb devices -l` (it lists: {listed})")
        device = matching[0]
    elif not devices:
        raise BenchError("no Android device found (`adb devices -l` lists none): connect one with USB debugging on")
    elif len(devices) > 1:
        raise BenchError(f"{len(devices)} devices attached ({', '.join(d.serial for d in devices)}): "
                         "pick one with --serial")
    else:
        device = devices[0]
    if device.state == "unauthorized":
        raise BenchError(f"device {device.serial} is unauthorized: unlock it, accept the 'Allow USB debugging?' "
                         "prompt, and run again")
    if device.state != "device":
        raise BenchError(f"device {device.serial} is {device.state!r}, not ready: reconnect it and run again")
    return device


@dataclass(frozen=True)
class Adb:
    """One device through one adb executable: every command names the device with `-s`."""

    executable: str
    serial: str

    def run(self, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
        return _run([self.executable, "-s", self.serial, *args], timeout_s)

    def check(self, *args: str) -> str:
        done = self.run(*args)
        if done.returncode != 0:
            raise BenchError(f"adb {' '.join(args)} failed (exit {done.returncode}): {last_line(done)}")
        return done.stdout


def connect(adb: str, serial: str | None) -> Adb:
    if shutil.which(adb) is None:
        raise BenchError(f"{adb} is not on PATH: install Android platform-tools (sdkmanager 'platform-tools', "
                         "or your package manager's android-tools) or pass --adb")
    done = _run([adb, "devices", "-l"], timeout_s=60)
    if done.returncode != 0:
        raise BenchError(f"adb devices -l failed (exit {done.returncode}): {last_line(done)}")
    return Adb(adb, pick_device(parse_devices(done.stdout), serial).serial)


def _run(command: Sequence[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(list(command), capture_output=True, text=True, errors="replace", timeout=timeout_s,
                              check=False)
    except subprocess.TimeoutExpired:
        raise BenchError(f"`{shlex.join(command)}` did not finish in {timeout_s:.0f}s") from None


def last_line(done: subprocess.CompletedProcess[str]) -> str:
    """What went wrong: the last two lines naming an error (without ExecuTorch's log prefix), else the last line."""
    lines = [_ET_PREFIX.sub("", line.strip()) for line in (done.stdout + "\n" + done.stderr).splitlines()]
    lines = [line for line in lines if line]
    telling = [line for line in lines if re.search(r"error|fail|fatal|abort|not found", line, re.IGNORECASE)]
    return " / ".join(telling[-2:] or lines[-1:] or [f"exit code {done.returncode}, no output"])[:300]


def parse_getprop(text: str) -> dict[str, str]:
    """`adb shell getprop` lines `[key]: [value]` -> {key: value}."""
    return dict(re.findall(r"^\[([^\]]+)\]: \[(.*)\]\s*$", text, flags=re.MULTILINE))


def machine_facts(props: Mapping[str, str]) -> dict[str, Any]:
    """The results file's machine section for a phone (ro.soc.model exists from Android 12 on)."""
    release = props.get("ro.build.version.release", "unknown")
    return {
        "kind": "android",
        "device": props.get("ro.product.model", "unknown"),
        "manufacturer": props.get("ro.product.manufacturer"),
        "soc": props.get("ro.soc.model") or props.get("ro.board.platform"),
        "soc_manufacturer": props.get("ro.soc.manufacturer"),
        "os": f"Android {release}",
        "android_version": release,
        "sdk": props.get("ro.build.version.sdk"),
        "abi": props.get("ro.product.cpu.abi"),
    }


# --- runner output -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunnerTimings:
    """What executor_runner (ExecuTorch 1.3+, which has --method_name and times each iteration) printed."""

    load_ms: float  # loading the method: memory planning, delegate init
    iterations_ms: tuple[float, ...]


def parse_executor_runner_output(text: str) -> RunnerTimings:
    done = re.search(r"Model executed successfully \d+ time\(s\)", text)
    load = re.search(rf"Model loaded in ({_NUMBER}) ms", text)
    iterations = tuple(float(ms) for ms in re.findall(rf"Iteration \d+ of \d+: ({_NUMBER}) ms", text))
    if done is None:
        raise BenchError("executor_runner printed no 'Model executed successfully' line")
    if not iterations or load is None:
        raise BenchError("executor_runner printed no per-iteration times: build it from ExecuTorch 1.3 or newer")
    return RunnerTimings(load_ms=float(load.group(1)), iterations_ms=iterations)


@dataclass(frozen=True)
class BenchmarkModelTimings:
    """benchmark_model's summary of one signature, in ms; p5/median/p95 where the build prints them."""

    init_ms: float
    first_ms: float  # the first warm-up run
    warmup_runs: int
    runs: int
    avg_ms: float
    min_ms: float
    max_ms: float
    std_ms: float
    median_ms: float | None
    p95_ms: float | None
    peak_memory_mb: float | None  # with --report_peak_memory_footprint=true

    def latency(self) -> tuple[dict[str, float], str]:
        """latency_ms and where it came from: the tool prints no p90/p99, so p90 is its p95 (or max) and p99
        its max, both upper bounds; without a median, p50 is the mean."""
        if self.median_ms is not None and self.p95_ms is not None:
            p50, p90, source = self.median_ms, self.p95_ms, "benchmark_model median/p95/max"
        else:
            p50, p90, source = self.avg_ms, self.max_ms, "benchmark_model avg/min/max"
        return {"p50": p50, "p90": p90, "p99": self.max_ms, "mean": self.avg_ms, "min": self.min_ms,
                "max": self.max_ms}, source


_SUMMARY = re.compile(rf"Inference timings in us: Init: ({_NUMBER}), First inference: ({_NUMBER}), "
                      rf"Warmup \(avg\): ({_NUMBER}), Inference \(avg\): ({_NUMBER})")


def parse_benchmark_model_output(text: str) -> BenchmarkModelTimings:
    """The two run-statistics lines (`count=... min=... max=... avg=... std=...`, then ` p5= median= p95=` in
    newer builds; warm-up first, timed runs last) and the `Inference timings in us:` summary."""
    summary = _SUMMARY.search(text)
    stats = [dict(re.findall(rf"(\w+)=({_NUMBER})", m.group(0)))
             for m in re.finditer(r"^(?:INFO: )?count=\d+.*$", text, flags=re.MULTILINE)]
    if summary is None or len(stats) < 2:
        raise BenchError("benchmark_model printed no 'Inference timings in us' summary")
    init_us, first_us = float(summary.group(1)), float(summary.group(2))
    warmup, timed = stats[0], stats[-1]
    us = {key: float(value) for key, value in timed.items()}
    avg = us.get("avg", us.get("curr", float(summary.group(4))))  # "count=N curr=X(all same)" has no avg
    peak = re.search(rf"Overall peak memory footprint \(MB\) via periodic monitoring: ({_NUMBER})", text)
    return BenchmarkModelTimings(
        init_ms=init_us / 1000, first_ms=first_us / 1000, warmup_runs=int(warmup["count"]), runs=int(us["count"]),
        avg_ms=avg / 1000, min_ms=us.get("min", avg) / 1000, max_ms=us.get("max", avg) / 1000,
        std_ms=us.get("std", 0.0) / 1000,
        median_ms=us["median"] / 1000 if "median" in us else None, p95_ms=us["p95"] / 1000 if "p95" in us else None,
        peak_memory_mb=float(peak.group(1)) if peak else None,
    )


# --- commands ------------------------------------------------------------------------------------------


def executor_runner_command(runner: str, model: str, method: str, *, executions: int,
                            threads: int | None) -> list[str]:
    command = [runner, f"--model_path={model}", f"--method_name={method}", f"--num_executions={executions}"]
    return command + ([f"--cpu_threads={threads}"] if threads else [])


def benchmark_model_command(runner: str, model: str, signature: str, *, warmup: int, runs: int, threads: int | None,
                            delegate: str, peak_memory: bool) -> list[str]:
    """At least one warm-up run: benchmark_model's 'First inference' is the first of them. min_secs=0 makes
    the run counts exact instead of 'at least one second'."""
    command = [runner, f"--graph={model}", f"--signature_to_run_for={signature}", f"--warmup_runs={max(warmup, 1)}",
               "--warmup_min_secs=0", f"--num_runs={runs}", "--min_secs=0", *TFLITE_DELEGATES[delegate]]
    command += [f"--num_threads={threads}"] if threads else []
    return command + (["--report_peak_memory_footprint=true"] if peak_memory else [])


def remote_shell(command: Sequence[str], taskset: str | None) -> str:
    """One `adb shell` string: quoted, optionally pinned to the cores of a CPU mask."""
    return shlex.join([*(["taskset", taskset] if taskset else []), *command])


# --- one run -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArtifactFacts:
    """What the manifest says the artifact is: every Measurement carries it."""

    model: str
    input_size: tuple[int, int]
    precision: str
    entries: Mapping[str, Mapping[str, Any]]  # entry point -> its manifest section
    target: Mapping[str, Any]
    versions: Mapping[str, str]


def read_manifest(path: Path) -> ArtifactFacts:
    if not path.is_file():
        raise BenchError(f"no {path.name} at {path.parent}: benchmark a folder written by rapsam-convert")
    try:
        manifest = json.loads(path.read_text())
        size = manifest["input_size"]
        return ArtifactFacts(model=manifest["model"]["name"], input_size=(int(size[0]), int(size[1])),
                             precision=manifest["precision"]["compute"], entries=manifest["entry_points"],
                             target=manifest["target"], versions=manifest.get("versions", {}))
    except (json.JSONDecodeError, KeyError, TypeError, IndexError) as exc:
        raise BenchError(f"{path} is not a rapsam manifest ({type(exc).__name__}: {exc})") from None


def select_entries(facts: ArtifactFacts, wanted: Sequence[str] | None) -> list[str]:
    entries = list(wanted or facts.entries)
    unknown = [e for e in entries if e not in facts.entries]
    if unknown:
        raise BenchError(f"entry points {unknown} are not in the artifact (it has {', '.join(facts.entries)})")
    return entries


def _check_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise BenchError(f"{what} not found: {path}")


def _delegate(runtime: str, facts: ArtifactFacts, delegate: str | None) -> str:
    """A .tflite takes its delegate at run time; a .pte was lowered to one (the manifest's backend)."""
    if runtime == "litert":
        return delegate or "xnnpack"
    backend = str(facts.target.get("backend", "xnnpack"))
    if backend == "coreml":
        raise BenchError("this .pte was lowered to ExecuTorch's Core ML delegate: it runs on Apple devices only")
    if delegate is not None and delegate != backend:
        raise BenchError(f"a .pte carries its delegate ({backend} here); --delegate applies to .tflite files")
    return backend


@dataclass(frozen=True)
class RunPlan:
    """The settings every entry point of one run shares."""

    runtime: str
    device: str
    facts: ArtifactFacts
    runner: str  # on the phone
    model: str  # on the phone
    threads: int | None
    delegate: str
    warmup: int
    runs: int
    peak_memory: bool
    taskset: str | None
    artifact_mb: float

    def command(self, entry: str) -> list[str]:
        method = self.facts.entries[entry].get("method") or entry
        if self.runtime == "executorch":
            return executor_runner_command(self.runner, self.model, method, executions=self.warmup + self.runs,
                                           threads=self.threads)
        return benchmark_model_command(self.runner, self.model, method, warmup=self.warmup, runs=self.runs,
                                       threads=self.threads, delegate=self.delegate, peak_memory=self.peak_memory)

    def options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"threads": self.threads or "runner default", "delegate": self.delegate}
        return options | ({"taskset": self.taskset} if self.taskset else {})

    def base(self, entry: str) -> dict[str, Any]:
        return {"runtime": self.runtime, "device": self.device, "model": self.facts.model, "entry_point": entry,
                "input_size": self.facts.input_size, "precision": self.facts.precision}


def measure_entry(adb: Adb, plan: RunPlan, entry: str) -> Measurement:
    """One runner invocation on the phone -> one Measurement; a crash or missing timings -> a failed one."""
    runner_name = Path(plan.runner).name

    def failed(reason: str) -> Measurement:
        return Measurement(**plan.base(entry), options=plan.options(), status="failed", reason=reason[:300])

    try:
        done = adb.run("shell", remote_shell(plan.command(entry), plan.taskset), timeout_s=RUNNER_TIMEOUT_S)
    except BenchError as exc:  # timed out
        return failed(str(exc))
    if done.returncode != 0:
        return failed(f"{runner_name} exited with {done.returncode}: {last_line(done)}")
    output = done.stdout + "\n" + done.stderr
    try:
        if plan.runtime == "executorch":
            return _executorch_measurement(plan, entry, parse_executor_runner_output(output))
        return _tflite_measurement(plan, entry, parse_benchmark_model_output(output))
    except BenchError as exc:
        return failed(f"{exc}: {last_line(done)}")


def _executorch_measurement(plan: RunPlan, entry: str, timings: RunnerTimings) -> Measurement:
    """All executions are timed: the first `warmup` are dropped, the first of all is the first run."""
    expected = plan.warmup + plan.runs
    if len(timings.iterations_ms) != expected:
        raise BenchError(f"executor_runner timed {len(timings.iterations_ms)} iterations, not {expected}")
    samples = timings.iterations_ms[plan.warmup:]
    latency = latency_summary(samples)
    return Measurement(**plan.base(entry), options=plan.options(), warmup=plan.warmup, runs=len(samples),
                       latency_ms=latency, fps=1000.0 / latency["p50"],
                       first_run_ms=timings.load_ms + timings.iterations_ms[0], artifact_mb=plan.artifact_mb)


def _tflite_measurement(plan: RunPlan, entry: str, timings: BenchmarkModelTimings) -> Measurement:
    latency, source = timings.latency()
    return Measurement(
        **plan.base(entry), options=plan.options() | {"latency_from": source}, warmup=timings.warmup_runs,
        runs=timings.runs, latency_ms=latency, fps=1000.0 / latency["p50"],
        first_run_ms=timings.init_ms + timings.first_ms, peak_rss_mb=timings.peak_memory_mb,
        artifact_mb=plan.artifact_mb,
    )


def run_android(
    artifact: str | Path,
    runner: str | Path,
    *,
    entry_points: Sequence[str] | None = None,
    threads: int | None = None,
    delegate: str | None = None,
    warmup: int = 5,
    runs: int = 30,
    serial: str | None = None,
    taskset: str | None = None,
    peak_memory: bool = False,
    keep: bool = False,
    adb: str = "adb",
    settings: Mapping[str, Any] | None = None,
    progress: Progress = _quiet,
) -> Results:
    """Push `artifact` and `runner`, time each entry point, clean up. What a runner cannot run is a failed row;
    what stops the whole run (no adb, no device, a missing file) is a BenchError."""
    artifact, runner = Path(artifact), Path(runner)
    runtime = RUNTIMES.get(artifact.suffix)
    if runtime is None:
        raise BenchError(f"--artifact must be a .pte or .tflite file, not {artifact.name}")
    _check_file(artifact, "artifact")
    _check_file(runner, "runner")
    if runs < 1 or warmup < 0:
        raise BenchError(f"need --runs >= 1 and --warmup >= 0, got {runs} and {warmup}")
    facts = read_manifest(artifact.parent / "manifest.json")
    entries = select_entries(facts, entry_points)
    chosen_delegate = _delegate(runtime, facts, delegate)
    phone = connect(adb, serial)
    machine = machine_facts(parse_getprop(phone.check("shell", "getprop")))
    plan = RunPlan(runtime=runtime, device=f"android:{machine['device']}", facts=facts,
                   runner=f"{REMOTE_DIR}/{runner.name}", model=f"{REMOTE_DIR}/{artifact.name}", threads=threads,
                   delegate=chosen_delegate, warmup=warmup, runs=runs, peak_memory=peak_memory, taskset=taskset,
                   artifact_mb=artifact.stat().st_size / 2**20)
    progress(f"{plan.device} ({machine['soc']}, {machine['os']}): pushing {artifact.name} and {runner.name}")
    measurements: list[Measurement] = []
    try:
        phone.check("shell", f"mkdir -p {REMOTE_DIR}")
        phone.check("push", str(artifact), plan.model)
        phone.check("push", str(runner), plan.runner)
        phone.check("shell", f"chmod 755 {plan.runner}")
        for entry in entries:
            progress(f"[{runtime}] {entry}: {warmup} warm-up + {runs} runs, {chosen_delegate}")
            measurements.append(measure_entry(phone, plan, entry))
            progress(f"[{runtime}] {entry}: {summary(measurements[-1])}")
    finally:
        if not keep:
            cleanup = phone.run("shell", f"rm -rf {REMOTE_DIR}")
            if cleanup.returncode != 0:
                progress(f"could not remove {REMOTE_DIR} from the phone: {last_line(cleanup)}")
    return Results(
        machine=machine, versions=_versions(runner, facts), measurements=measurements,
        settings={"artifact": str(artifact), "runner": str(runner), "entry_points": entries, "threads": threads,
                  "delegate": delegate, "warmup": warmup, "runs": runs, "serial": serial, "taskset": taskset,
                  "peak_memory": peak_memory, **(settings or {})},
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def _versions(runner: Path, facts: ArtifactFacts) -> dict[str, str]:
    """This rapsam, the runner binary by content (it prints no version), and what converted the artifact."""
    digest = hashlib.sha256(runner.read_bytes()).hexdigest()[:16]
    exported = {f"export.{name}": str(version) for name, version in facts.versions.items()}
    return {"rapsam": rapsam.__version__, "python": platform.python_version(), runner.name: f"sha256:{digest}",
            **exported}


def summary(m: Measurement) -> str:
    if m.status != "ok":
        return f"{m.status} ({m.reason})"
    return f"p50 {m.latency_ms['p50']:.1f} ms, p90 {m.latency_ms['p90']:.1f} ms"


def default_out(results: Results) -> Path:
    """results/bench-<device>-<runtime>.json, the device's name made file-safe."""
    first = results.measurements[0]
    device = re.sub(r"[^A-Za-z0-9]+", "-", first.device).strip("-").lower()
    return Path("results") / f"bench-{device}-{first.runtime}.json"


def save_and_print(results: Results, out: Path | None, describe: Callable[[Measurement], str] | None = None, *,
                   default: Callable[[Results], Path] = default_out) -> int:
    """Write the results (default path from the device and runtime), print a line per entry point and the
    path; the exit code is 1 when some entry point failed (its row says why), else 0."""
    path = write_results(results, out or default(results))
    for m in results.measurements:
        line = describe(m) if describe else summary(m)
        print(f"{m.runtime} {m.entry_point} {m.input_size[0]}x{m.input_size[1]} on {m.device}: {line}")
    print(f"wrote {path}")
    return 0 if all(m.status == "ok" for m in results.measurements) else 1


# --- the sample app's benchmark mode ---------------------------------------------------------------------


def app_records(text: str, *, where: str, fix: str) -> list[dict[str, Any]]:
    """The `RAPSAM_BENCH` lines of an app's output, all ok (shared with `rapsam-bench ios --app`); a failed line
    or no line at all is a BenchError that says where to look (`where`) and what to do (`fix`)."""
    try:
        records = parse_app_lines(text)
    except ResultsError as exc:
        raise BenchError(f"{exc} (rebuild the app from this checkout: its line format may be older)") from None
    failed = [r for r in records if r["status"] == "failed"]
    if failed:
        raise BenchError(f"the app's benchmark failed on the device: {failed[0]['reason']} ({where})")
    if not records:
        raise BenchError(f"the app printed no {APP_MARKER} lines: {fix}")
    return records


def am_start_command(package: str, *, artifact: str | None, backend: str | None, runs: int, warmup: int,
                     threads: int | None, image: str | None) -> list[str]:
    """`am start` of BenchmarkActivity with the extras it reads; -W waits for the launch, -S stops a running app."""
    command = ["am", "start", "-W", "-S", "-n", f"{package}/{APP_ACTIVITY}", "--ei", "runs", str(runs),
               "--ei", "warmup", str(warmup)]
    for kind, name, value in (("--es", "artifact", artifact), ("--es", "backend", backend),
                              ("--ei", "threads", threads), ("--es", "image", image)):
        command += [kind, name, str(value)] if value else []
    return command


def wait_for_app(phone: Adb, package: str, since: str, *, timeout_s: float, poll_s: float) -> str:
    """BenchmarkActivity's log lines since `since` (the phone's clock, epoch seconds), once it logged 'done'."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = bool(phone.run("shell", f"pidof {package}").stdout.strip())
        log = phone.check("logcat", "-d", "-t", f"{since}.000", "-s", f"{APP_TAG}:I")
        if _APP_DONE.search(log):
            return log
        if not alive:
            raise BenchError(f"{package} stopped before its benchmark finished (a crash?): "
                             f"`adb -s {phone.serial} logcat -d -b crash` says why")
        if time.monotonic() > deadline:
            raise BenchError(f"the app did not finish in {timeout_s:.0f}s (no 'done' line under {APP_TAG} in "
                             f"logcat): pass a longer --timeout or fewer --runs; `adb -s {phone.serial} logcat -s "
                             f"{APP_TAG}` shows how far it got")
        time.sleep(poll_s)


def run_android_app(
    *,
    artifact: str | None = None,
    backend: str | None = None,
    apk: str | Path | None = None,
    package: str = APP_PACKAGE,
    warmup: int = 3,
    runs: int = 20,
    threads: int | None = None,
    image: str | None = None,
    serial: str | None = None,
    adb: str = "adb",
    timeout_s: float = APP_TIMEOUT_S,
    poll_s: float = 2.0,
    settings: Mapping[str, Any] | None = None,
    progress: Progress = _quiet,
) -> Results:
    """Run the sample app's benchmark mode on a phone (installing `apk` first when given) and read its lines:
    one Measurement per pipeline stage. `artifact` names a folder the app bundles (assets/models/<artifact>)."""
    if runs < 1 or warmup < 0:
        raise BenchError(f"need --runs >= 1 and --warmup >= 0, got {runs} and {warmup}")
    if backend is not None and backend not in APP_BACKENDS:
        raise BenchError(f"--backend must be one of {', '.join(APP_BACKENDS)}, not {backend!r}")
    if apk is not None:
        _check_file(Path(apk), "apk")
    phone = connect(adb, serial)
    machine = machine_facts(parse_getprop(phone.check("shell", "getprop")))
    if apk is not None:
        progress(f"installing {Path(apk).name} on {machine['device']}")
        phone.check("install", "-r", str(apk))
    since = phone.check("shell", "date +%s").strip()
    if not since.isdigit():
        raise BenchError(f"`adb shell date +%s` printed {since[:40]!r}, not the phone's time in seconds")
    command = am_start_command(package, artifact=artifact, backend=backend, runs=runs, warmup=warmup,
                               threads=threads, image=image)
    progress(f"android:{machine['device']}: {shlex.join(command)}")
    started = phone.run("shell", remote_shell(command, None))
    errors = re.findall(r"^Error.*$", started.stdout + "\n" + started.stderr, flags=re.MULTILINE)
    if started.returncode != 0 or errors:
        raise BenchError(f"am start failed ({errors[-1] if errors else last_line(started)}): is {package} "
                         "installed? Build it (sample_apps/android/README.md) and pass --apk, or ./gradlew installDebug")
    log = wait_for_app(phone, package, since, timeout_s=timeout_s, poll_s=poll_s)
    records = app_records(
        log, where=f"`adb -s {phone.serial} logcat -d -s {APP_TAG}` has the stack trace",
        fix=f"is the installed {package} older than this rapsam? Rebuild it and pass --apk")
    versions = {"rapsam": rapsam.__version__, "python": platform.python_version()}
    if apk is not None:
        versions[Path(apk).name] = f"sha256:{hashlib.sha256(Path(apk).read_bytes()).hexdigest()[:16]}"
    return Results(
        machine=machine, versions=versions, measurements=[app_measurement(r) for r in records],
        settings={"app": package, "apk": str(apk) if apk else None, "artifact": artifact, "backend": backend,
                  "warmup": warmup, "runs": runs, "threads": threads, "image": image, "serial": serial,
                  **(settings or {})},
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def app_out(results: Results) -> Path:
    """results/bench-app-<device>-<runtime>.json: beside, not over, the bare entry points' file."""
    path = default_out(results)
    return path.with_name(path.name.replace("bench-", "bench-app-", 1))


# --- command line --------------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    """Add `android` to a `rapsam-bench` argparse subparsers object; `args.func(args)` returns the exit code."""
    parser = subparsers.add_parser(
        "android", help="time a .pte or .tflite on an Android phone through adb",
        description="Push an artifact of rapsam-convert and its runner (executor_runner for .pte, benchmark_model "
                    "for .tflite; docs/bench-devices.md says how to build them) to a phone, time each entry point, "
                    "and write a results file. With --app, run the sample app's benchmark mode instead "
                    "(sample_apps/android) and time each stage of its pipeline. Exit 0: all measured; 1: some "
                    "entry points failed; 2: an error.")
    parser.add_argument("--artifact", type=Path, help="model.pte or model.tflite, manifest.json beside; with --app "
                        "the artifact folder the app bundles (its name; default the app's first)")
    parser.add_argument("--runner", type=Path, help="executor_runner or benchmark_model for the phone (not with --app)")
    app = parser.add_argument_group("the sample app's benchmark mode")
    app.add_argument("--app", action="store_true", help="start the app's BenchmarkActivity and read its lines")
    app.add_argument("--apk", type=Path, help="adb install -r this APK first (default: use the installed app)")
    app.add_argument("--package", default=APP_PACKAGE, help=f"the app's applicationId (default {APP_PACKAGE})")
    app.add_argument("--backend", choices=APP_BACKENDS, help="the app's back end (default: its first for the artifact)")
    app.add_argument("--image", help="picture on the phone, absolute or inside the artifact folder (default: the "
                     "artifact's test-vector photo, else a synthetic 640x480 one)")
    app.add_argument("--timeout", type=float, default=APP_TIMEOUT_S,
                     help=f"seconds to wait for the app to finish (default {APP_TIMEOUT_S})")
    parser.add_argument("--entry-points", help="comma list (default: every entry point of the artifact)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: the runner's own choice)")
    parser.add_argument("--delegate", choices=list(TFLITE_DELEGATES),
                        help=".tflite: xnnpack (default), gpu, nnapi or cpu; a .pte carries its delegate")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs first (default 5)")
    parser.add_argument("--runs", type=int, default=30, help="timed runs (default 30)")
    parser.add_argument("--serial", help="adb serial of the phone (needed when several are attached)")
    parser.add_argument("--taskset", metavar="MASK", help="pin the runner to a CPU mask, e.g. f0 (big cores of many "
                        "phones): steadier numbers")
    parser.add_argument("--peak-memory", action="store_true",
                        help=".tflite: benchmark_model's peak-memory monitor (a thread; runs may slow a little)")
    parser.add_argument("--keep", action="store_true", help=f"leave {REMOTE_DIR} on the phone")
    parser.add_argument("--adb", default="adb", help="adb executable (default: adb on PATH)")
    parser.add_argument("--out", type=Path, help="results JSON (default results/bench-android-<phone>-<runtime>.json)")
    parser.set_defaults(func=android_main)


def android_main(args: argparse.Namespace) -> int:
    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    entries = [e.strip() for e in args.entry_points.split(",") if e.strip()] if args.entry_points else None
    try:
        if args.app:
            return save_and_print(_run_app(args, progress), args.out, default=app_out)
        if args.artifact is None or args.runner is None:
            raise BenchError("--artifact and --runner are needed to time an artifact (or pass --app to run the "
                             "sample app's benchmark mode)")
        results = run_android(
            args.artifact, args.runner, entry_points=entries, threads=args.threads, delegate=args.delegate,
            warmup=args.warmup, runs=args.runs, serial=args.serial, taskset=args.taskset,
            peak_memory=args.peak_memory, keep=args.keep, adb=args.adb, progress=progress,
        )
        return save_and_print(results, args.out)
    except (BenchError, ResultsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run_app(args: argparse.Namespace, progress: Progress) -> Results:
    unused = [flag for flag, value in (("--runner", args.runner), ("--entry-points", args.entry_points),
                                       ("--delegate", args.delegate), ("--taskset", args.taskset),
                                       ("--peak-memory", args.peak_memory), ("--keep", args.keep)) if value]
    if unused:
        raise BenchError(f"{', '.join(unused)} time a bare artifact, not the app: drop them or --app")
    return run_android_app(
        artifact=args.artifact.name if args.artifact else None, backend=args.backend, apk=args.apk,
        package=args.package, warmup=args.warmup, runs=args.runs, threads=args.threads, image=args.image,
        serial=args.serial, adb=args.adb, timeout_s=args.timeout, progress=progress)
