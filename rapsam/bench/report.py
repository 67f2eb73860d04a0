"""`rapsam-bench report`: results files from many machines -> one Markdown table and one PNG chart.

Every file is read through `read_results`, which validates. A row is one Measurement; its device is shown
as a short label built from the file's `machine` section (CPU model and cores, GPU name, phone and SoC).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rapsam.bench.schema import Measurement, Results, ResultsError, read_results
from rapsam.complexity import PAPER_ROWS
from rapsam.fileio import atomic_path

# The RAP-SAM paper's speeds: one A100, 1333x800, batch 1.
PAPER_A100_FPS = {row.variant: row.a100_fps for row in PAPER_ROWS if row.a100_fps is not None}
METRICS = ("p50", "fps")
_MISSING = "–"
_VALUE_ONLY_OPTIONS = ("compile_mode", "delegate", "provider")  # their values name themselves: xnnpack, CUDA
_CPU_NOISE = re.compile(r"\((R|TM|tm)\)|\bCPU\b|\bProcessor\b|\d+-Core|@ *[\d.]+ *GHz|with Radeon .*$")


class ReportError(ValueError):
    """Nothing to report, or a report that cannot be drawn."""


@dataclass(frozen=True)
class Row:
    measurement: Measurement
    device: str  # short label of the machine and device it ran on


# ---- reading --------------------------------------------------------------------------------------------------

def load_many(paths: Iterable[str | Path]) -> list[Results]:
    """Results files and folders of them (every *.json inside) -> Results, in order, each file once."""
    files: dict[Path, Path] = {}  # resolved -> as given
    for path in map(Path, paths):
        found = sorted(path.glob("*.json")) if path.is_dir() else [path]
        if not found:
            raise ReportError(f"{path}: folder holds no .json results files")
        files.update((file.resolve(), file) for file in found if file.resolve() not in files)
    if not files:
        raise ReportError("no results files given")
    results = []
    for file in files.values():
        try:
            results.append(read_results(file))
        except (OSError, UnicodeDecodeError) as exc:
            raise ResultsError(f"{file}: cannot be read ({exc})") from None
    return results


# ---- labels and numbers ---------------------------------------------------------------------------------------

def fmt(value: float | None) -> str:
    """Three significant digits, never in scientific notation and never a bare 0.000."""
    if value is None:
        return _MISSING
    if value == 0:
        return "0"
    if not math.isfinite(value):
        return str(value)
    rounded = float(f"{value:.3g}")
    decimals = max(0, 2 - math.floor(math.log10(abs(rounded))))
    return f"{rounded:.{decimals}f}"


def host_label(machine: Mapping[str, Any]) -> str:
    """The machine's CPU, or a phone's model and SoC: 'AMD Ryzen 9 7950X (16 cores)', 'Pixel 8 (Tensor G3)'."""
    if machine.get("soc") or not machine.get("cpu_model"):
        name, soc = machine.get("device") or machine.get("cpu_model") or "unknown machine", machine.get("soc")
        return f"{name} ({soc})" if soc else str(name)
    model = " ".join(_CPU_NOISE.sub(" ", str(machine["cpu_model"])).split())
    cores = machine.get("cpu_cores")
    return f"{model} ({cores} cores)" if cores else model


def gpu_names(machine: Mapping[str, Any]) -> list[str]:
    gpus = machine.get("gpus") or []
    names = [str(g.get("name", "GPU") if isinstance(g, Mapping) else g) for g in gpus]
    return [" ".join(n.replace("NVIDIA", "").replace("GeForce", "").split()) for n in names]


def device_label(machine: Mapping[str, Any], device: str) -> str:
    """What a measurement ran on: the CPU for 'cpu', the GPU's name for 'cuda[:N]', the phone for 'android:...'."""
    kind, _, detail = device.partition(":")
    if kind == "cpu":
        return host_label(machine)
    if kind == "cuda":
        names = gpu_names(machine)
        index = int(detail) if detail.isdigit() else 0
        return names[index] if index < len(names) else device
    if kind in ("android", "ios"):
        soc = machine.get("soc")
        name = detail or machine.get("device") or kind
        return f"{name} ({soc})" if soc else name
    return f"{host_label(machine)} {device}"


def source_label(machine: Mapping[str, Any]) -> str:
    return " + ".join([host_label(machine), *gpu_names(machine)])


def runtime_label(m: Measurement) -> str:
    """The runtime and every option it ran with: 'onnxruntime (CPU, 4 threads)', 'torch-compile (max-autotune)'."""
    options = [_option_text(key, value) for key, value in sorted(m.options.items())]
    return f"{m.runtime} ({', '.join(options)})" if options else m.runtime


def _option_text(key: str, value: Any) -> str:
    if key == "threads":
        return f"{value} threads"
    return str(value) if key in _VALUE_ONLY_OPTIONS else f"{key}={value}"


def size_label(m: Measurement) -> str:
    height, width = m.input_size
    return f"{height}x{width}" + (f" b{m.batch}" if m.batch != 1 else "")


def fps_of(m: Measurement) -> float | None:
    if m.fps is not None or m.latency_ms is None:
        return m.fps
    return m.batch * 1000.0 / m.latency_ms["p50"]


def gflops_of(m: Measurement) -> float | None:
    if m.gflops_per_s is not None or m.gmacs is None or m.latency_ms is None:
        return m.gflops_per_s
    return 2 * m.gmacs * 1000.0 / m.latency_ms["p50"]


# ---- rows -----------------------------------------------------------------------------------------------------

def collect_rows(results_list: Sequence[Results]) -> list[Row]:
    """Every measurement with its device label, sorted: model, entry point, size, device, then fastest first.

    Labels that two files share (two runs on one kind of machine) get the file's number, as in the source list.
    """
    labelled = [(index, m, device_label(r.machine, m.device))
                for index, r in enumerate(results_list) for m in r.measurements]
    files_per_label: dict[str, set[int]] = {}
    for index, _, label in labelled:
        files_per_label.setdefault(label, set()).add(index)
    rows = [Row(m, f"{label} [{index + 1}]" if len(files_per_label[label]) > 1 else label)
            for index, m, label in labelled]
    return sorted(rows, key=_sort_key)


def _sort_key(row: Row) -> tuple:
    m = row.measurement
    height, width = m.input_size
    p50 = m.latency_ms["p50"] if m.latency_ms is not None else math.inf
    return (m.model, m.entry_point, height * width, m.input_size, m.batch, row.device, p50, runtime_label(m),
            m.precision)


# ---- Markdown -------------------------------------------------------------------------------------------------

_COLUMNS = ("model", "entry point", "size", "precision", "runtime", "device", "p50 ms", "p90 ms", "p99 ms", "FPS",
            "first run ms", "peak MB", "artifact MB", "GFLOP/s")
_NUMERIC_FROM = _COLUMNS.index("p50 ms")
_TABLE_NOTE = ("Latency per call at the batch shown; peak MB is device memory (dev) where the runtime reports it, "
               "else the process's peak RSS.")


def markdown_report(results_list: Sequence[Results]) -> str:
    """Source files, one table of the ok measurements, then the skipped and failed ones with their reasons."""
    if not results_list:
        raise ReportError("no results to report")
    rows = collect_rows(results_list)
    lines = ["# rapsam-bench report", "", "Sources:", ""]
    for index, r in enumerate(results_list):
        created = r.created[:10] or "date unknown"
        host = f" on {r.machine['hostname']}" if r.machine.get("hostname") else ""
        lines.append(f"- [{index + 1}] {source_label(r.machine)}{host}: {created}, "
                     f"rapsam {r.versions.get('rapsam', 'unknown')}")
    ok = [row for row in rows if row.measurement.status == "ok"]
    lines.append("")
    if ok:
        lines.append(_table_line(_COLUMNS))
        lines.append(_table_line(["---"] * _NUMERIC_FROM + ["---:"] * (len(_COLUMNS) - _NUMERIC_FROM)))
        lines += [_table_line(_cells(row)) for row in ok]
        lines += ["", _TABLE_NOTE]
    else:
        lines.append("No successful measurements.")
    not_run = [row for row in rows if row.measurement.status != "ok"]
    if not_run:
        lines += ["", "Not measured:", ""]
        lines += [f"- {row.measurement.status}: {_row_title(row)}: {row.measurement.reason}" for row in not_run]
    return "\n".join(lines) + "\n"


def _cells(row: Row) -> list[str]:
    m = row.measurement
    latency = m.latency_ms or {}
    if m.peak_device_mb is not None:
        peak = f"{fmt(m.peak_device_mb)} dev"
    else:
        peak = f"{fmt(m.peak_rss_mb)} RSS" if m.peak_rss_mb is not None else _MISSING
    return [m.model, m.entry_point, size_label(m), m.precision, runtime_label(m), row.device,
            *(fmt(latency.get(key)) for key in ("p50", "p90", "p99")), fmt(fps_of(m)), fmt(m.first_run_ms), peak,
            fmt(m.artifact_mb), fmt(gflops_of(m))]


def _row_title(row: Row) -> str:
    m = row.measurement
    return f"{m.model} {m.entry_point} {size_label(m)} {m.precision} {runtime_label(m)} on {row.device}"


def _table_line(cells: Iterable[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


# ---- chart ----------------------------------------------------------------------------------------------------

def plot_report(results_list: Sequence[Results], path: str | Path, metric: str = "p50") -> Path:
    """Horizontal bars of p50 latency (or FPS) per runtime and device, one panel per (model, entry, size)."""
    if metric not in METRICS:
        raise ReportError(f"metric must be one of {', '.join(METRICS)}, not {metric!r}")
    groups: dict[tuple, list[Row]] = {}
    for row in collect_rows(results_list):
        if row.measurement.status == "ok":
            m = row.measurement
            groups.setdefault((m.model, m.entry_point, size_label(m)), []).append(row)
    if not groups:
        raise ReportError("no successful measurements to plot")
    figure_class, canvas_class = _matplotlib()
    bar_count = sum(len(rows) for rows in groups.values())
    # Each bar gets a fixed height, so ~20 labels never overlap; each panel adds room for its title and axis.
    figure = figure_class(figsize=(11, 1.4 + 0.32 * bar_count + 0.9 * len(groups)), layout="constrained")
    canvas_class(figure)
    axes = figure.subplots(len(groups), 1, squeeze=False,
                           gridspec_kw={"height_ratios": [len(rows) + 2 for rows in groups.values()]})[:, 0]
    devices = sorted({row.device for rows in groups.values() for row in rows})
    colors = {device: f"C{index % 10}" for index, device in enumerate(devices)}
    handles: dict[str, Any] = {}
    for ax, ((model, entry, size), rows) in zip(axes, groups.items()):
        handles.update(_draw_group(ax, rows, metric, colors, title=f"{model} · {entry} · {size}"))
    better = "lower is better" if metric == "p50" else "higher is better"
    figure.suptitle(f"RAP-SAM {'p50 latency' if metric == 'p50' else 'throughput'} per runtime and device "
                    f"({better})")
    figure.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=min(3, len(handles)),
                  fontsize=8)
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    return path


def _draw_group(ax: Any, rows: Sequence[Row], metric: str, colors: Mapping[str, str], *, title: str) -> dict:
    """One panel, bars top to bottom in table order; returns the legend handles it drew, by label."""
    values = [row.measurement.latency_ms["p50"] if metric == "p50" else fps_of(row.measurement) for row in rows]
    labels = [f"{runtime_label(row.measurement)} · {row.measurement.precision}" for row in rows]
    positions = range(len(rows))
    bars = ax.barh(positions, values, color=[colors[row.device] for row in rows], height=0.7)
    ax.bar_label(bars, labels=[fmt(v) for v in values], padding=3, fontsize=7)
    ax.set_yticks(list(positions), labels, fontsize=8)
    ax.set_ylim(len(rows) - 0.5, -1.3)  # top to bottom, with a free row on top for the paper's label
    ax.set_title(title, fontsize=10, loc="left")
    ax.set_xlabel("p50 latency (ms)" if metric == "p50" else "frames per second (FPS)")
    handles = {row.device: bar for row, bar in zip(rows, bars)}
    paper_fps = PAPER_A100_FPS.get(rows[0].measurement.model)
    reference = None
    if paper_fps is not None:
        reference = 1000.0 / paper_fps if metric == "p50" else paper_fps
        line = ax.axvline(reference, color="black", linestyle="--", linewidth=1, alpha=0.7)
        unit = "ms" if metric == "p50" else "FPS"
        ax.annotate(f" paper A100: {fmt(reference)} {unit}", (reference, -0.9), fontsize=7, va="center")
        handles["paper, one A100, 1333x800, batch 1"] = line
    ax.set_xlim(0, 1.18 * max([*values, reference or 0]))
    return handles


def _matplotlib() -> tuple[type, type]:
    """matplotlib's Figure and Agg canvas; no pyplot, so no global backend or figure state is touched."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ReportError("the chart needs matplotlib: pip install 'rapsam[bench]'") from None
    return Figure, FigureCanvasAgg


# ---- command line ---------------------------------------------------------------------------------------------

def register(subparsers: Any) -> None:
    """Add `report` to a `rapsam-bench` argparse subparsers object; `args.func(args)` returns the exit code."""
    parser = subparsers.add_parser(
        "report", help="merge results files into a Markdown table and a chart",
        description="Merge rapsam-bench results files from many machines into one Markdown table "
                    "(stdout unless --markdown) and, with --plot, one PNG chart.")
    parser.add_argument("results", nargs="*", type=Path, help="results .json files, or folders of them")
    parser.add_argument("--markdown", type=Path, metavar="PATH", help="write the table here (default: stdout)")
    parser.add_argument("--plot", type=Path, metavar="PATH.png", help="also draw the chart to this PNG")
    parser.add_argument("--metric", choices=METRICS, default="p50", help="chart bars: p50 latency or FPS")
    parser.set_defaults(func=report_main)


def report_main(args: argparse.Namespace) -> int:
    """Notes on written files go to stderr, so stdout stays pure Markdown."""
    if args.plot is not None and args.plot.suffix.lower() != ".png":
        return _fail(f"--plot writes a PNG; name it .png, not {args.plot.name}")
    try:
        results_list = load_many(args.results)
        text = markdown_report(results_list)
        if args.plot is not None:
            plot_report(results_list, args.plot, metric=args.metric)
            print(f"wrote {args.plot}", file=sys.stderr)
    except (ResultsError, ReportError) as exc:
        return _fail(str(exc))
    if args.markdown is None:
        sys.stdout.write(text)
        return 0
    with atomic_path(args.markdown) as tmp:
        tmp.write_text(text)
    print(f"wrote {args.markdown}", file=sys.stderr)
    return 0


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2
