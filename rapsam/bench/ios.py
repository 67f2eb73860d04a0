"""`rapsam-bench ios`: the entry points of a Core ML artifact timed on an iPhone, iPad or Mac by the
apps/ios-bench harness, through `xcodebuild test`.

The harness is a Swift package whose one test compiles each .mlpackage on the device, loads it with the chosen
compute units, and prints a line `RAPSAM_BENCH {json}` per entry point: each timed prediction, the compile,
load and first-prediction times, the device model and OS. This module stages a scratch copy of the package
with the artifact and bench.json in its test resources, runs `xcodebuild test` there, streams its progress,
and turns the lines into a results file.

With --app it runs the sample app's benchmark mode instead (sample_apps/ios, `-benchmark`): the whole pipeline
as the app runs it, launched with `xcrun simctl launch --console` (simulator) or `xcrun devicectl device process
launch --console` (phone), one Measurement per stage from the app's console.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import rapsam
from rapsam.bench.android import (
    ArtifactFacts,
    app_out,
    app_records,
    last_line,
    read_manifest,
    save_and_print,
    select_entries,
)
from rapsam.bench.schema import Measurement, Results, ResultsError, app_measurement, latency_summary
from rapsam.bench.timing import BenchError

HARNESS = Path(__file__).resolve().parents[2] / "apps" / "ios-bench"
RESOURCES = Path("Tests") / "RapsamBenchTests" / "Resources"  # inside the harness package
SCHEME = "RapsamBench"
MARKER = "RAPSAM_BENCH"
COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")  # coremltools' names, as the manifest has them
APP_BUNDLE_ID = "org.rapsam.RapSAMApp"  # the sample app (sample_apps/ios/RapSAMApp/project.yml)
APP_RUNTIMES = ("coreml", "executorch")
APP_TIMEOUT_S = 600
_SHOWN = ("Test Case", "Test Suite 'All tests'", "** ", "Testing failed", "error:")

Progress = Callable[[str], None]


def _quiet(message: str) -> None:
    pass


# --- the harness's lines -------------------------------------------------------------------------------


def parse_ios_lines(text: str) -> list[dict[str, Any]]:
    """Every `RAPSAM_BENCH {json}` line in the output, in order, checked (a line may carry a log prefix)."""
    records = []
    for line in text.splitlines():
        _, marker, payload = line.partition(f"{MARKER} ")
        if not marker:
            continue
        try:
            record = json.loads(payload)
        except json.JSONDecodeError as exc:
            raise BenchError(f"a {MARKER} line is not JSON ({exc}): {payload[:120]}") from None
        _check_record(record)
        records.append(record)
    return records


def _check_record(record: Any) -> None:
    if not isinstance(record, dict):
        raise BenchError(f"a {MARKER} line holds a {type(record).__name__}, not an object")
    for name in ("entry_point", "status", "device", "os"):
        if not isinstance(record.get(name), str):
            raise BenchError(f"a {MARKER} line has no {name}: {json.dumps(record)[:120]}")
    if record["status"] not in ("ok", "failed"):
        raise BenchError(f"{MARKER} {record['entry_point']}: status must be ok or failed, not {record['status']!r}")
    latencies = record.get("latencies_ms")
    if record["status"] == "ok" and not (
        isinstance(latencies, list) and latencies and all(isinstance(x, (int, float)) for x in latencies)
    ):
        raise BenchError(f"{MARKER} {record['entry_point']}: an ok line needs latencies_ms, a list of numbers")


def coreml_device(platform_name: str | None, model: str) -> str:
    """ios:iPhone16,1 for iPhones and iPads, macos:Mac14,2 for Macs."""
    return f"{'macos' if platform_name == 'macOS' else 'ios'}:{model}"


def coreml_measurement(record: Mapping[str, Any], facts: ArtifactFacts, artifact_mb: float | None) -> Measurement:
    base = {"runtime": "coreml", "device": coreml_device(record.get("platform"), record["device"]),
            "model": facts.model, "entry_point": record["entry_point"], "input_size": facts.input_size,
            "precision": facts.precision, "options": {"compute_units": record.get("compute_units")}}
    if record["status"] != "ok":
        return Measurement(**base, status="failed", reason=str(record.get("reason") or "failed on the device")[:300])
    latency = latency_summary([float(x) for x in record["latencies_ms"]])
    load, first = record.get("load_ms"), record.get("first_ms")
    return Measurement(**base, warmup=int(record.get("warmup", 0)), runs=len(record["latencies_ms"]),
                       latency_ms=latency, fps=1000.0 / latency["p50"],
                       first_run_ms=load + first if load is not None and first is not None else None,
                       artifact_mb=artifact_mb)


def apple_machine(record: Mapping[str, Any]) -> dict[str, Any]:
    return {"kind": "macos" if record.get("platform") == "macOS" else "ios", "device": record["device"],
            "os": record["os"], "simulator": bool(record.get("simulator", False)),
            "cpu_cores": record.get("processor_count")}


# --- xcodebuild ----------------------------------------------------------------------------------------


def xcode_version(xcodebuild: str) -> str:
    """'15.4 (15F31d)' from `xcodebuild -version`, or a BenchError that says what to install."""
    if shutil.which(xcodebuild) is None:
        raise BenchError(f"rapsam-bench ios needs macOS with Xcode: {xcodebuild} is not on PATH")
    done = subprocess.run([xcodebuild, "-version"], capture_output=True, text=True, errors="replace", check=False)
    if done.returncode != 0:
        raise BenchError(f"xcodebuild does not run ({last_line(done)}): install Xcode and select it with "
                         "`sudo xcode-select -s /Applications/Xcode.app`")
    lines = done.stdout.splitlines() + ["", ""]
    build = lines[1].removeprefix("Build version ").strip()
    return lines[0].removeprefix("Xcode ").strip() + (f" ({build})" if build else "")


def stage_harness(harness: Path, artifact: Path, files: Sequence[str], config: Mapping[str, Any],
                  scratch: Path) -> Path:
    """A copy of the harness package with the artifact's manifest and packages and bench.json in its test
    resources: the checkout stays as it is."""
    if not (harness / "Package.swift").is_file():
        raise BenchError(f"no iOS harness at {harness} (apps/ios-bench of the rapsam repository): pass --harness")
    package = scratch / "ios-bench"
    shutil.copytree(harness, package, ignore=shutil.ignore_patterns(".build", ".swiftpm", "artifact", "bench.json"))
    resources = package / RESOURCES / "artifact"
    resources.mkdir(parents=True)
    shutil.copy2(artifact / "manifest.json", resources / "manifest.json")
    for name in files:
        source = artifact / name
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, resources / name)  # .mlpackage is a folder
    (package / RESOURCES / "bench.json").write_text(json.dumps(dict(config), indent=2) + "\n")
    return package


def xcodebuild_command(xcodebuild: str, destination: str, derived_data: Path, *, scheme: str = SCHEME,
                       team: str | None = None) -> list[str]:
    """`xcodebuild test`; derived data goes to the scratch folder, not ~/Library/Developer/Xcode/DerivedData."""
    command = [xcodebuild, "test", "-scheme", scheme, "-destination", destination,
               "-derivedDataPath", str(derived_data)]
    if team:  # a real device runs signed test bundles
        command += ["-allowProvisioningUpdates", f"DEVELOPMENT_TEAM={team}", "CODE_SIGN_STYLE=Automatic"]
    return command


def stream(command: Sequence[str], cwd: Path, progress: Progress) -> tuple[int, list[str]]:
    """Run `command`, pass its test and failure lines to `progress` as they come; its exit code and all lines."""
    lines = []
    with subprocess.Popen(list(command), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace") as process:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.rstrip("\n")
            lines.append(line)
            if line.lstrip().startswith(_SHOWN):
                progress(line.strip())
    return process.returncode, lines


def check_run(returncode: int, records: Sequence[Mapping[str, Any]], lines: Sequence[str], destination: str,
              progress: Progress) -> None:
    """Lines from the harness are the outcome, whatever the exit code; without any, say why the run failed."""
    if records:
        if returncode != 0:
            progress(f"xcodebuild exited with {returncode} after the harness reported; its failed rows say why")
        return
    text = "\n".join(lines)
    if "Unable to find a destination matching" in text:
        available = text.split("Available destinations", 1)[-1].split("Ineligible destinations", 1)[0]
        seen = [f"{name} ({kind})" for kind, name in re.findall(r"\{ platform:([^,}]+),[^}]*?name:([^}]+?) \}",
                                                                available)]
        raise BenchError(f"no device matches --destination {destination!r}; xcodebuild sees: "
                         f"{', '.join(seen) or 'none'} (a phone must be unlocked, paired and in developer mode)")
    for line in lines[-20:]:
        progress(line)
    if returncode != 0:
        hint = "; pass --team with your development team ID" if "requires a development team" in text else ""
        raise BenchError(f"xcodebuild test failed (exit {returncode}) before the harness reported: its last lines "
                         f"are above{hint}")
    raise BenchError(f"xcodebuild test succeeded but printed no {MARKER} lines: is --scheme the harness's?")


# --- one run -------------------------------------------------------------------------------------------


def _size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


def run_ios(
    artifact: str | Path,
    destination: str,
    *,
    entry_points: Sequence[str] | None = None,
    compute_units: str | None = None,
    warmup: int = 5,
    runs: int = 30,
    team: str | None = None,
    scheme: str = SCHEME,
    harness: str | Path = HARNESS,
    xcodebuild: str = "xcodebuild",
    settings: Mapping[str, Any] | None = None,
    progress: Progress = _quiet,
) -> Results:
    """Stage the harness with `artifact` (a Core ML folder of rapsam-convert), run it on `destination`, and
    read its lines. An entry point that failed on the device is a failed row; no lines at all is a BenchError."""
    folder = Path(artifact)
    facts = read_manifest(folder / "manifest.json")
    if facts.target.get("name") != "coreml":
        raise BenchError(f"{folder} holds a {facts.target.get('name')} artifact; rapsam-bench ios runs Core ML "
                         "folders (rapsam-convert --target coreml)")
    entries = select_entries(facts, entry_points)
    files = sorted({str(facts.entries[e]["file"]) for e in entries})
    missing = [name for name in files if not (folder / name).exists()]
    if missing:
        raise BenchError(f"{folder} lacks {', '.join(missing)}, which its manifest names")
    units = compute_units or str(facts.target.get("compute_units", "ALL"))
    if units not in COMPUTE_UNITS:
        raise BenchError(f"compute units {units!r} is not one of {', '.join(COMPUTE_UNITS)}")
    if runs < 1 or warmup < 0:
        raise BenchError(f"need --runs >= 1 and --warmup >= 0, got {runs} and {warmup}")
    xcode = xcode_version(xcodebuild)
    config = {"entry_points": entries, "compute_units": units, "warmup": warmup, "runs": runs}
    with tempfile.TemporaryDirectory(prefix="rapsam-ios-bench-") as scratch:
        package = stage_harness(Path(harness), folder, files, config, Path(scratch))
        command = xcodebuild_command(xcodebuild, destination, Path(scratch) / "DerivedData", scheme=scheme, team=team)
        progress(f"Xcode {xcode}: {shlex.join(command)}")
        returncode, lines = stream(command, package, progress)
    records = parse_ios_lines("\n".join(lines))
    check_run(returncode, records, lines, destination, progress)
    if any(r.get("simulator") for r in records):
        progress("note: a simulator runs Core ML on the Mac's CPU: these are not a phone's numbers")
    by_entry = {r["entry_point"]: r for r in records}
    stopped = {"status": "failed", "device": records[0]["device"], "platform": records[0].get("platform"),
               "compute_units": units, "reason": "the harness printed no line for it (the test stopped early; "
               "see xcodebuild's output)"}
    measurements = [coreml_measurement(by_entry.get(e, {**stopped, "entry_point": e}), facts,
                                       _size_mb(folder / facts.entries[e]["file"])) for e in entries]
    return Results(
        machine=apple_machine(records[0]), measurements=measurements,
        versions={"rapsam": rapsam.__version__, "python": platform.python_version(), "xcode": xcode,
                  **{f"export.{k}": str(v) for k, v in facts.versions.items()}},
        settings={"artifact": str(folder), "destination": destination, "entry_points": entries,
                  "compute_units": units, "warmup": warmup, "runs": runs, "team": team, "scheme": scheme,
                  **(settings or {})},
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


# --- the sample app's benchmark mode ---------------------------------------------------------------------


def app_launch_command(xcrun: str, *, device: str | None, simulator: str | None, bundle_id: str,
                       arguments: Sequence[str]) -> list[str]:
    """Launch the app with its console on this terminal; it prints its lines and exits (Benchmark.swift)."""
    if simulator is not None:
        return [xcrun, "simctl", "launch", "--console", "--terminate-running-process", simulator, bundle_id,
                *arguments]
    return [xcrun, "devicectl", "device", "process", "launch", "--console", "--terminate-existing", "--device",
            str(device), bundle_id, "--", *arguments]


def app_install_command(xcrun: str, bundle: Path, *, device: str | None, simulator: str | None) -> list[str]:
    if simulator is not None:
        return [xcrun, "simctl", "install", simulator, str(bundle)]
    return [xcrun, "devicectl", "device", "install", "app", "--device", str(device), str(bundle)]


def app_arguments(*, artifact: str | None, runtime: str | None, compute_units: str | None, warmup: int, runs: int,
                  image: str | None) -> list[str]:
    """The app's -benchmark options (BenchmarkOptions.parse in Benchmark.swift)."""
    arguments = ["-benchmark", "-runs", str(runs), "-warmup", str(warmup)]
    for flag, value in (("-artifact", artifact), ("-runtime", runtime), ("-compute-units", compute_units),
                        ("-image", image)):
        arguments += [flag, value] if value else []
    return arguments


def _xcrun(command: Sequence[str], timeout_s: float, what: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(list(command), capture_output=True, text=True, errors="replace", timeout=timeout_s,
                              check=False)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what} did not finish in {timeout_s:.0f}s: pass a longer --timeout or fewer --runs") from None


def run_ios_app(
    *,
    device: str | None = None,
    simulator: str | None = None,
    bundle: str | Path | None = None,
    bundle_id: str = APP_BUNDLE_ID,
    artifact: str | None = None,
    runtime: str | None = None,
    compute_units: str | None = None,
    warmup: int = 3,
    runs: int = 20,
    image: str | None = None,
    xcrun: str = "xcrun",
    timeout_s: float = APP_TIMEOUT_S,
    settings: Mapping[str, Any] | None = None,
    progress: Progress = _quiet,
) -> Results:
    """Run the sample app's benchmark mode on a phone (`device`, devicectl) or a simulator (`simulator`, simctl),
    installing the `bundle` (RapSAMApp.app) first when given, and read its lines: one Measurement per stage.
    `artifact` names a folder the app bundles (Models/<artifact>)."""
    if (device is None) == (simulator is None):
        raise BenchError("pass --device <UDID> (a phone, through devicectl) or --simulator <UDID or booted>")
    if runs < 1 or warmup < 0:
        raise BenchError(f"need --runs >= 1 and --warmup >= 0, got {runs} and {warmup}")
    if runtime is not None and runtime not in APP_RUNTIMES:
        raise BenchError(f"--runtime must be one of {', '.join(APP_RUNTIMES)}, not {runtime!r}")
    if compute_units is not None and compute_units not in COMPUTE_UNITS:
        raise BenchError(f"compute units {compute_units!r} is not one of {', '.join(COMPUTE_UNITS)}")
    if bundle is not None and not (Path(bundle) / "Info.plist").is_file():
        raise BenchError(f"{bundle} is not an app bundle (no Info.plist): pass the RapSAMApp.app Xcode built")
    if shutil.which(xcrun) is None:
        raise BenchError(f"rapsam-bench ios --app needs macOS with Xcode: {xcrun} is not on PATH")
    target = f"simulator {simulator}" if simulator is not None else f"device {device}"
    if bundle is not None:
        install = app_install_command(xcrun, Path(bundle), device=device, simulator=simulator)
        progress(shlex.join(install))
        done = _xcrun(install, 600, "installing the app")
        if done.returncode != 0:
            raise BenchError(f"installing {Path(bundle).name} on the {target} failed: {last_line(done)}")
    arguments = app_arguments(artifact=artifact, runtime=runtime, compute_units=compute_units, warmup=warmup,
                              runs=runs, image=image)
    command = app_launch_command(xcrun, device=device, simulator=simulator, bundle_id=bundle_id, arguments=arguments)
    progress(shlex.join(command))
    done = _xcrun(command, timeout_s, "the app's benchmark")
    launch = " ".join(command[1:3])
    fix = (f"`{launch}` exited with {done.returncode} ({last_line(done)}): is {bundle_id} installed on the {target}? "
           "Build it (sample_apps/ios/README.md) and pass --bundle path/to/RapSAMApp.app"
           if done.returncode != 0 else
           f"is the installed {bundle_id} older than this rapsam? Rebuild it and pass --bundle")
    records = app_records(done.stdout + "\n" + done.stderr, where=f"the app's console: `{shlex.join(command)}`",
                          fix=fix)
    first = records[0]
    if first.get("simulator"):
        progress("note: a simulator runs the models on the Mac's CPU: these are not a phone's numbers")
    return Results(
        machine={"kind": "ios", "device": first["device"], "os": first.get("os"),
                 "simulator": bool(first.get("simulator", False)), "cpu_cores": first.get("cores")},
        versions={"rapsam": rapsam.__version__, "python": platform.python_version()},
        measurements=[app_measurement(r) for r in records],
        settings={"app": bundle_id, "bundle": str(bundle) if bundle else None, "device": device,
                  "simulator": simulator, "artifact": artifact, "runtime": runtime, "compute_units": compute_units,
                  "warmup": warmup, "runs": runs, "image": image, **(settings or {})},
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


# --- command line --------------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    """Add `ios` (and `coreml-report`, its importer of Xcode's reports) to a `rapsam-bench` argparse subparsers
    object; `args.func(args)` returns the exit code."""
    from rapsam.bench import coreml_report

    parser = subparsers.add_parser(
        "ios", help="time a Core ML artifact on an iPhone/iPad/Mac with xcodebuild (macOS)",
        description="Run the apps/ios-bench harness with `xcodebuild test` on a device and write a results file. "
                    "With --app, run the sample app's benchmark mode instead (sample_apps/ios) and time each stage "
                    "of its pipeline. Exit 0: all measured; 1: some entry points failed; 2: an error.")
    parser.add_argument("--artifact", type=Path, help="Core ML folder of rapsam-convert; with --app the artifact "
                        "folder the app bundles (its name; default the app's first of --runtime)")
    parser.add_argument("--destination",
                        help="xcodebuild destination, e.g. 'platform=iOS,name=My iPhone' or 'platform=macOS'")
    parser.add_argument("--entry-points", help="comma list (default: every entry point of the artifact)")
    parser.add_argument("--compute-units", choices=COMPUTE_UNITS, help="default: the artifact's (manifest)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed predictions first (default 5)")
    parser.add_argument("--runs", type=int, default=30, help="timed predictions (default 30)")
    parser.add_argument("--team", help="Apple development team ID that signs the test bundle for a real device")
    parser.add_argument("--scheme", default=SCHEME, help=f"xcodebuild scheme of the harness (default {SCHEME})")
    parser.add_argument("--harness", type=Path, default=HARNESS, help="the harness package (default apps/ios-bench)")
    parser.add_argument("--xcodebuild", default="xcodebuild", help="xcodebuild executable (default: on PATH)")
    parser.add_argument("--out", type=Path, help="results JSON (default results/bench-ios-<model>-coreml.json)")
    app = parser.add_argument_group("the sample app's benchmark mode")
    app.add_argument("--app", action="store_true", help="launch RapSAMApp with -benchmark and read its console")
    app.add_argument("--device", help="UDID of a phone (xcrun devicectl list devices)")
    app.add_argument("--simulator", help="UDID of a simulator, or booted (xcrun simctl list devices)")
    app.add_argument("--bundle", type=Path, help="install this RapSAMApp.app first (default: use the installed app)")
    app.add_argument("--bundle-id", default=APP_BUNDLE_ID, help=f"the app's bundle ID (default {APP_BUNDLE_ID})")
    app.add_argument("--runtime", choices=APP_RUNTIMES, help="the app's runtime (default coreml)")
    app.add_argument("--image", help="picture path in the app's sandbox or artifact folder (default: the artifact's "
                     "test-vector photo, else a synthetic 640x480 one)")
    app.add_argument("--xcrun", default="xcrun", help="xcrun executable (default: on PATH)")
    app.add_argument("--timeout", type=float, default=APP_TIMEOUT_S,
                     help=f"seconds to wait for the app to finish (default {APP_TIMEOUT_S})")
    parser.set_defaults(func=ios_main)
    coreml_report.register(subparsers)


def ios_main(args: argparse.Namespace) -> int:
    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    entries = [e.strip() for e in args.entry_points.split(",") if e.strip()] if args.entry_points else None
    try:
        if args.app:
            return save_and_print(_run_app(args, progress), args.out, default=app_out)
        if args.artifact is None or args.destination is None:
            raise BenchError("--artifact and --destination are needed to time a Core ML artifact (or pass --app to "
                             "run the sample app's benchmark mode)")
        results = run_ios(args.artifact, args.destination, entry_points=entries, compute_units=args.compute_units,
                          warmup=args.warmup, runs=args.runs, team=args.team, scheme=args.scheme,
                          harness=args.harness, xcodebuild=args.xcodebuild, progress=progress)
        return save_and_print(results, args.out)
    except (BenchError, ResultsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run_app(args: argparse.Namespace, progress: Progress) -> Results:
    unused = [flag for flag, value in (("--destination", args.destination), ("--entry-points", args.entry_points),
                                       ("--team", args.team), ("--scheme", args.scheme != SCHEME),
                                       ("--harness", args.harness != HARNESS)) if value]
    if unused:
        raise BenchError(f"{', '.join(unused)} run the apps/ios-bench harness, not the app: drop them or --app")
    return run_ios_app(
        device=args.device, simulator=args.simulator, bundle=args.bundle, bundle_id=args.bundle_id,
        artifact=args.artifact.name if args.artifact else None, runtime=args.runtime,
        compute_units=args.compute_units, warmup=args.warmup, runs=args.runs, image=args.image, xcrun=args.xcrun,
        timeout_s=args.timeout, progress=progress)
