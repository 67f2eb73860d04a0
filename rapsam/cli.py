"""Command-line entry points: each parses arguments and calls one library function."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rapsam.config import VARIANTS

# rapsam-bench's default: the paper's mobile variant (the demo model is too small to say much about speed).
BENCH_MODEL = "rapsam_edgenext_s"


def _size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 800x1333 (HxW), got {text!r}") from None
    if height <= 0 or width <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return height, width


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def info_main(argv: list[str] | None = None) -> int:
    from rapsam.checkpoint import build_model
    from rapsam.complexity import PAPER_ROWS, model_cost, padded_size

    parser = argparse.ArgumentParser(
        prog="rapsam-info", description="Parameters and GMACs of a RAP-SAM variant, per component."
    )
    parser.add_argument("model", nargs="?", help=f"variant name ({', '.join(VARIANTS)})")
    parser.add_argument("--size", type=_size, default=(800, 1333), help="input HxW (default 800x1333)")
    parser.add_argument("--weights", help="our .safetensors checkpoint (default: random init)")
    parser.add_argument("--list", action="store_true", help="list the registered variants")
    parser.add_argument("--paper", action="store_true", help="compare with the paper's table 3 rows")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(VARIANTS))
        return 0
    size = padded_size(*args.size)
    if args.paper:
        print(f"{'variant':<22}{'params (M)':>12}{'paper':>8}{'GMACs':>9}{'paper':>8}   at {size[0]}x{size[1]}")
        for row in PAPER_ROWS:
            total = model_cost(build_model(row.variant), size)[-1]
            print(f"{row.variant:<22}{total.params / 1e6:>12.2f}{row.params_m:>8.1f}"
                  f"{total.macs_paper / 1e9:>9.1f}{row.gmacs:>8.1f}")
        return 0
    if args.model is None and args.weights is None:
        return _fail("name a model (rapsam-info --list shows them) or pass --weights")
    try:
        model = build_model(args.model, args.weights)
    except (KeyError, ValueError) as exc:
        return _fail(str(exc).strip("'\""))
    note = "" if size == args.size else f" (padded from {args.size[0]}x{args.size[1]} to a multiple of 32)"
    print(f"{model.config.name}  backbone={model.config.backbone}  input {size[0]}x{size[1]}{note}")
    print(f"{'component':<12}{'params (M)':>12}{'GMACs all':>12}{'GMACs paper':>13}")
    for row in model_cost(model, size):
        print(f"{row.name:<12}{row.params / 1e6:>12.3f}{row.macs_all / 1e9:>12.2f}{row.macs_paper / 1e9:>13.2f}")
    print("all: every MAC torch's flop counter sees (incl. mask einsums); "
          "paper: the same without the deformable convs, as mmdet's get_flops counts")
    return 0


# CLI flag -> converter option; each converter ignores the options it does not take when --target all.
_TARGET_FLAGS = {
    "deployment_target": ("--deployment-target", {"choices": ["iOS16", "iOS17", "iOS18"], "help": "coreml: minimum iOS (default iOS17)"}),
    "compute_units": ("--compute-units", {"choices": ["ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE"], "help": "coreml: compute units (default ALL)"}),
    "image_input": ("--image-input", {"action": "store_true", "default": None, "help": "coreml: image input type for Vision pipelines"}),
    "backend": ("--backend", {"help": "executorch: xnnpack (default) or portable"}),
    "strict_delegation": ("--strict-delegation", {"action": "store_true", "default": None, "help": "executorch: fail if a compute op would run on portable kernels"}),
    "opset": ("--opset", {"type": int, "help": "onnx: opset (default 18)"}),
    "ir_version": ("--ir-version", {"type": int, "help": "onnx: IR version written (default 9, loads in onnxruntime-web)"}),
}


def convert_main(argv: list[str] | None = None) -> int:
    from rapsam.convert import DEFAULT_MODEL, check_artifact, convert
    from rapsam.convert.base import TARGET_MODULES, ConversionError
    from rapsam.export import ENTRY_POINTS
    from rapsam.models.backbones.pretrained import CheckpointError

    parser = argparse.ArgumentParser(
        prog="rapsam-convert",
        description="Convert RAP-SAM to CoreML / ExecuTorch / TFLite / ONNX with a manifest and a parity report.",
    )
    parser.add_argument("--target", choices=[*TARGET_MODULES, "all"], help="the artifact format")
    parser.add_argument("--check", metavar="FOLDER", help="re-run the parity check on a converted folder")
    parser.add_argument("--model", help=f"registered variant (default {DEFAULT_MODEL}, or the one in --weights)")
    parser.add_argument("--weights", help="our .safetensors checkpoint, or the official rapsam_r50_12e.pth with "
                        "--classifier (default: the built-in weights of the demo model; a seeded random init, "
                        "said in the manifest, for the other variants)")
    parser.add_argument("--random-init", action="store_true", help="ignore built-in weights: a seeded random init")
    parser.add_argument("--classifier", help="official .pth weights: the class text-embedding file (see rapsam-import)")
    parser.add_argument("--dataset", help="official .pth weights: coco or coco+ytvis (default: from the classifier)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random init without --weights")
    parser.add_argument("--input-size", type=_size, help="HxW, multiples of 32 (default: the model's, 512x512; "
                        "128x128 for the demo)")
    parser.add_argument("--entry-points", default=",".join(ENTRY_POINTS), help="comma list (default all four)")
    parser.add_argument("--num-prompts", type=int, default=4, help="K, prompt slots of the prompt entry point (default 4)")
    parser.add_argument("--precision", choices=["fp32", "fp16"], help="default: fp16 for coreml, fp32 elsewhere")
    parser.add_argument("--out", default="artifacts", help="output folder (default ./artifacts)")
    parser.add_argument("--no-parity", action="store_true", help="skip the parity check")
    parser.add_argument("--no-parity-gate", action="store_true", help="keep the artifact when parity fails (marked in the manifest)")
    for key, (flag, kwargs) in _TARGET_FLAGS.items():
        parser.add_argument(flag, dest=key, **kwargs)
    parser.add_argument("--no-simplify", dest="simplify", action="store_false", default=None, help="onnx: skip onnxsim")
    parser.add_argument("--vectors", action="store_true",
                        help="also write the apps' test vectors into each artifact's vectors/ (see rapsam-vectors)")
    _quantize_arguments(parser)
    args = parser.parse_args(argv)
    if (args.target is None) == (args.check is None):
        parser.error("give exactly one of --target or --check")
    try:
        if args.check:
            report = check_artifact(args.check, weights=args.weights, classifier=args.classifier, dataset=args.dataset)
            return 0 if report.passed else 1
        options = {k: getattr(args, k) for k in [*_TARGET_FLAGS, "simplify"] if getattr(args, k) is not None}
        results = convert(
            args.target, model=args.model, weights=args.weights, classifier=args.classifier, dataset=args.dataset,
            seed=args.seed, input_size=args.input_size,
            entry_points=[e.strip() for e in args.entry_points.split(",") if e.strip()],
            num_prompts=args.num_prompts, precision=args.precision, out_dir=args.out,
            parity=not args.no_parity, parity_gate=not args.no_parity_gate, random_init=args.random_init,
            quantize=args.quantize, calib=args.calib, calib_count=args.calib_count, keep_float=args.keep_float,
            auto_keep=args.auto_keep, eval_data=args.eval_data, keep_accuracy=args.keep_accuracy, options=options,
        )
    except (ConversionError, CheckpointError, KeyError, ValueError) as exc:
        return _fail(str(exc).strip("'\""))
    for result in results:
        gates = " and ".join(result.failed_gates) or "parity"
        state = "written" if result.written else f"NOT written ({gates} gate failed)"
        print(f"{result.target}: {result.folder} {state}")
        if args.vectors and result.written:
            print(f"{result.target}: {_artifact_vectors(result, args.model, args.weights)}")
    return 0 if all(r.written for r in results) else 1


def _artifact_vectors(result: Any, model: str | None, weights: str | None) -> str:
    """Test vectors of a converted artifact, from its own runtime (Core ML off macOS: the MIL reference
    evaluator); where that cannot run here, from the PyTorch model it was converted from, at its input size."""
    import numpy as np

    from rapsam.convert.base import MissingBackendError
    from rapsam.pipeline import open_predictor
    from rapsam.vectors import write_vectors

    precision = result.manifest["precision"]["compute"]
    try:
        predictor = open_predictor(result.folder)
        predictor.runner.run("encode", {"image": np.zeros((1, 3, *predictor.input_size), np.float32)})
        note = ""
    except (MissingBackendError, NotImplementedError, RuntimeError, OSError) as exc:
        predictor = open_predictor(model, weights=weights, input_size=tuple(result.manifest["input_size"]))
        note = f" (from the PyTorch model: {str(exc).splitlines()[0][:120]})"
    return f"vectors {write_vectors(predictor, result.folder / 'vectors', precision=precision)}{note}"


def _source_arguments(parser: argparse.ArgumentParser) -> None:
    """What `rapsam.pipeline.open_predictor` opens: an artifact folder or a model name, with its weights."""
    parser.add_argument("source", nargs="?", help="a folder written by rapsam-convert (runs in its runtime) or a "
                        "registered model name (default: the built-in demo model)")
    parser.add_argument("--weights", help="our .safetensors checkpoint for a model name")


def vectors_main(argv: list[str] | None = None) -> int:
    from rapsam.convert.base import ConversionError
    from rapsam.pipeline import open_predictor
    from rapsam.vectors import VectorsError, check_vectors, checks_table, write_vectors

    parser = argparse.ArgumentParser(
        prog="rapsam-vectors",
        description="Write the test vectors every sample app must reproduce (photos, prompts, a clip; entry-point "
        "outputs, panoptic maps, prompt masks, track ids), or check a model or artifact against them.",
    )
    _source_arguments(parser)
    parser.add_argument("--input-size", type=_size, help="HxW for a model name (default: the model's)")
    parser.add_argument("--out", help="where to write (default: SOURCE/vectors for an artifact, else vectors/MODEL)")
    parser.add_argument("--check", metavar="FOLDER", help="instead of writing, check SOURCE against these vectors")
    args = parser.parse_args(argv)
    try:
        predictor = open_predictor(args.source, weights=args.weights, input_size=args.input_size)
        if args.check:
            checks = check_vectors(predictor, args.check)
            print(checks_table(checks))
            return 0 if all(c.passed for c in checks) else 1
        is_artifact = args.source is not None and predictor.name == str(args.source)
        out = args.out or (f"{args.source}/vectors" if is_artifact else f"vectors/{args.source or 'default'}")
        print(f"wrote {write_vectors(predictor, out, progress=lambda m: print(m, file=sys.stderr, flush=True))}")
    except (VectorsError, ConversionError, FileNotFoundError, ValueError, KeyError) as exc:
        return _fail(str(exc).strip("'\""))
    return 0


def import_main(argv: list[str] | None = None) -> int:
    from rapsam.checkpoint import save_checkpoint
    from rapsam.models.backbones.pretrained import CheckpointError
    from rapsam.official import CLASSIFIER_FILES, DATASETS, import_official

    parser = argparse.ArgumentParser(
        prog="rapsam-import",
        description="Convert the authors' released RAP-SAM (rapsam_r50_12e.pth + classifier file) to our checkpoint.",
    )
    parser.add_argument("checkpoint", help="the official rapsam_r50_12e.pth")
    parser.add_argument("--classifier", required=True,
                        help=f"class text embeddings: {CLASSIFIER_FILES['coco+ytvis']} (the 155 training classes) "
                        f"or {CLASSIFIER_FILES['coco']} (COCO panoptic's 133)")
    parser.add_argument("--dataset", choices=list(DATASETS), help="vocabulary (default: from the classifier's class count)")
    parser.add_argument("-o", "--output", help="our .safetensors checkpoint (default: rapsam_r50_official_<dataset>.safetensors)")
    parser.add_argument("--no-strict", dest="strict", action="store_false",
                        help="report, instead of refusing, official tensors without a place in our model and ours left unfilled")
    args = parser.parse_args(argv)
    try:
        model, report = import_official(
            args.checkpoint, args.classifier, dataset=args.dataset, strict=args.strict,
            progress=lambda m: print(m, file=sys.stderr, flush=True),
        )
        output = args.output or f"rapsam_r50_official_{report.dataset.replace('+', '_')}.safetensors"
        if not output.endswith(".safetensors"):
            return _fail(f"--output {output} must end in .safetensors (our checkpoint format)")
        save_checkpoint(model, output, provenance=report.provenance())
    except (CheckpointError, ValueError) as exc:
        return _fail(str(exc))
    taxonomy = model.config.taxonomy
    classes, prototypes, dim = report.classifier_shape
    pre = report.preprocessor
    dropped = f"{len(report.ignored)} ignored" if report.ignored else "none dropped"
    unfilled = f", {len(report.left_at_init)} of ours left at init" if report.left_at_init else ""
    print(f"imported {report.num_tensors - len(report.ignored)} of {report.num_tensors} tensors into "
          f"{model.config.name}; {dropped}{unfilled}")
    print(f"classes: {taxonomy.name}, {sum(taxonomy.is_thing)} things + {classes - sum(taxonomy.is_thing)} stuff; "
          f"classifier {classes}x{prototypes}x{dim} (sha256 {report.classifier_sha256[:12]}), "
          f"temperature {model.config.temperature}")
    print(f"preprocessing ({report.preprocessor_source}): mean {list(pre['mean'])} std {list(pre['std'])}, "
          f"bgr_to_rgb={pre['bgr_to_rgb']}: the network sees {'RGB' if pre['bgr_to_rgb'] else 'BGR'}; artifacts take RGB")
    print(f"wrote {output}")
    print(f"next: rapsam-convert --weights {output} --target coreml")
    return 0


def bench_main(argv: list[str] | None = None) -> int:
    from rapsam.bench import android, ios, report
    from rapsam.bench.desktop import (
        RUNTIMES,
        TORCH_RUNTIMES,
        MeasureSpec,
        format_table,
        paper_table,
        profile_table,
        run_desktop,
        run_paper,
    )
    from rapsam.bench.schema import ResultsError, write_results
    from rapsam.bench.timing import BenchError, resolve_device
    from rapsam.fileio import atomic_path
    from rapsam.models.deform_conv import SAMPLERS

    parser = argparse.ArgumentParser(
        prog="rapsam-bench",
        description="Latency of RAP-SAM per runtime, entry point and input size: this machine (default), "
        "a phone (android, ios), or a merged report of results files (report).",
    )
    parser.add_argument("--model", default=BENCH_MODEL, help=f"registered variant (default {BENCH_MODEL})")
    parser.add_argument("--weights", help="our .safetensors checkpoint (default: seeded random init; speed is the same)")
    parser.add_argument("--input-size", type=_size, action="append", help="HxW, repeatable (default 512x512)")
    parser.add_argument("--entry-points", default="encode,panoptic,prompt,segment", help="comma list (default all four)")
    parser.add_argument("--runtimes", help=f"comma list of {', '.join(RUNTIMES)} (default: eager, onnxruntime, "
                        "executorch, litert on the CPU; eager and torch-compile on CUDA)")
    parser.add_argument("--precisions", default=None, help="comma list of fp32, fp16, bf16, and int8-static, "
                        "int8-dynamic for the artifact runtimes (quantized on synthetic scenes) (default fp32; "
                        "fp32,fp16,bf16 with --paper on CUDA)")
    parser.add_argument("--compile-precisions", help="precisions torch-compile runs (default: all of --precisions)")
    parser.add_argument("--compile-mode", help="torch.compile mode (default: default; on CUDA the compiled kernels "
                        "are then replayed from one CUDA graph; reduce-overhead and max-autotune use Inductor's own)")
    parser.add_argument("--deform-sampler", choices=SAMPLERS,
                        help="PyTorch runtimes: how the neck's deformable convs sample (default grid_sample; "
                        "gather_pixels_last fuses under torch.compile on GPUs)")
    parser.add_argument("--freeze", action="store_true",
                        help="torch-compile with Inductor's freezing: weights as constants, BatchNorm folded into convs")
    parser.add_argument("--channels-last", action="store_true",
                        help="PyTorch runtimes on NHWC tensors (often faster for fp16 convolutions on a GPU)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="default: cuda if present")
    parser.add_argument("--threads", type=int, help="CPU threads of every runtime (default: each runtime's own)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls before timing (default 5)")
    parser.add_argument("--runs", type=int, default=30, help="timed calls (default 30)")
    parser.add_argument("--num-prompts", type=int, default=4, help="prompt slots of the prompt entry point (default 4)")
    parser.add_argument("--artifacts", default="bench-artifacts", help="where converted artifacts are kept and reused")
    parser.add_argument("--no-isolate", dest="isolate", action="store_false", default=None,
                        help="measure in this process (default on CUDA; the CPU default is one process each)")
    parser.add_argument("--paper", action="store_true",
                        help="the paper's setting: segment at 1333x800 batch 1 for each table-3 variant")
    parser.add_argument("--models", help="with --paper: comma list of the variants to run, in that order (default all)")
    parser.add_argument("--out", help="results JSON (default results/bench-<device>[-paper].json)")
    parser.add_argument("--plot", help="also write a PNG chart of the results")
    parser.add_argument("--profile", help="also write torch.profiler tables of each PyTorch measurement to this file")
    commands = parser.add_subparsers(dest="command", metavar="{android,ios,coreml-report,report}")
    for module in (android, ios, report):
        module.register(commands)
    args = parser.parse_args(argv)
    if args.command is not None:
        return args.func(args)

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        device = resolve_device(args.device)
        precisions = args.precisions or ("fp32,fp16,bf16" if args.paper and device == "cuda" else "fp32")
        options = {
            "runtimes": args.runtimes.split(",") if args.runtimes else None,
            "precisions": precisions.split(","),
            "compile_precisions": args.compile_precisions.split(",") if args.compile_precisions else None,
            "compile_mode": args.compile_mode,
            "channels_last": args.channels_last, "freeze": args.freeze,
            "deform_sampler": args.deform_sampler,
            "threads": args.threads, "warmup": args.warmup, "runs": args.runs, "num_prompts": args.num_prompts,
            "artifacts": args.artifacts, "isolate": args.isolate,
        }
        out = args.out or f"results/bench-{device}{'-paper' if args.paper else ''}.json"
        if args.paper:
            models = args.models.split(",") if args.models else None
            results = run_paper(device=device, models=models, extra_sizes=args.input_size or (), progress=progress,
                                save=lambda partial: write_results(partial, out), **options)
        else:
            results = run_desktop(
                model=args.model, weights=args.weights, input_sizes=args.input_size or [(512, 512)],
                entry_points=[e.strip() for e in args.entry_points.split(",") if e.strip()], device=device,
                progress=progress, **options,
            )
        write_results(results, out)
        print(format_table(results))
        if args.paper:
            print(paper_table(results))
        print(f"wrote {out}")
        if args.plot:
            print(f"wrote {report.plot_report([results], args.plot)}")
        if args.profile:
            tables = [profile_table(MeasureSpec(
                runtime=m.runtime, device=m.device, model=m.model, entry_point=m.entry_point,
                input_size=tuple(m.input_size), precision=m.precision, weights=args.weights, threads=args.threads,
                num_prompts=args.num_prompts, compile_mode=options["compile_mode"], channels_last=args.channels_last,
                freeze=args.freeze, deform_sampler=args.deform_sampler,
            )) for m in results.measurements if m.status == "ok" and m.runtime in TORCH_RUNTIMES]
            with atomic_path(args.profile) as tmp:
                tmp.write_text("\n\n".join(tables) + "\n")
            print(f"wrote {args.profile}")
    except (BenchError, ResultsError, KeyError, ValueError) as exc:
        return _fail(str(exc).strip("'\""))
    return 0


def _quantize_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("quantization (rapsam-quantize lists every target's schemes)")
    group.add_argument("--quantize", metavar="SCHEME", help="quantize with this scheme of the target")
    group.add_argument("--calib", metavar="DATA", help="calibration data: an image folder, a COCO panoptic root, "
                       "or 'synthetic'")
    group.add_argument("--calib-count", type=int, default=64, help="calibration images (default 64)")
    group.add_argument("--keep-float", action="append", default=[], metavar="PATTERN",
                       help="module names (fnmatch) left in float, e.g. 'panoptic_head.prompt_*' (repeatable)")
    group.add_argument("--auto-keep", type=int, default=0, metavar="N",
                       help="rank layers by how much int8 alone changes the masks and keep the N worst in float")
    group.add_argument("--eval-data", metavar="DATA", help="held-out data of the accuracy gate (default: the "
                       "synthetic scenes for the demo model; COCO val for the others)")
    group.add_argument("--keep-accuracy", type=float, default=0.95,
                       help="the gate: the fraction of fp32 PQ and prompt mIoU to keep (default 0.95)")


def quantize_main(argv: list[str] | None = None) -> int:
    """`rapsam-quantize`: the schemes of every target, or (with --target) rapsam-convert --quantize."""
    from rapsam.quantize.base import QUANTIZER_MODULES, QuantizationError, get_quantizer

    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["report"]:
        return _quantize_report(args[1:])
    if "--target" in args or any(a.startswith("--target=") for a in args):
        return convert_main(args)
    for target in QUANTIZER_MODULES:
        try:
            quantizer = get_quantizer(target)
        except (QuantizationError, ImportError) as exc:
            print(f"{target}: unavailable ({exc})")
            continue
        for scheme, meaning in quantizer.schemes.items():
            calibrated = " (calibrated: --calib DATA)" if scheme in quantizer.calibrated else ""
            print(f"{target:<11} {scheme:<14} {meaning}{calibrated}")
    print("usage: rapsam-quantize --target T --quantize SCHEME [--calib DATA]  (= rapsam-convert --quantize)")
    print("       rapsam-quantize report FOLDER... [--bench RESULTS.json] [--out PREFIX]")
    return 0


def _quantize_report(argv: list[str]) -> int:
    from rapsam.quantize.base import QuantizationError
    from rapsam.quantize.report import write_report

    parser = argparse.ArgumentParser(prog="rapsam-quantize report",
                                     description="One table of size, task metrics and latency of converted folders")
    parser.add_argument("folders", nargs="+", help="folders written by rapsam-convert (fp32 and quantized)")
    parser.add_argument("--bench", action="append", default=[], help="rapsam-bench results JSON (repeatable)")
    parser.add_argument("--out", default="results/quantization", help="writes OUT.json and OUT.md")
    args = parser.parse_args(argv)
    try:
        print(write_report(args.folders, args.out, args.bench))
    except (QuantizationError, OSError, ValueError) as exc:
        return _fail(str(exc))
    return 0


def train_main(argv: list[str] | None = None) -> int:
    from rapsam.data import DatasetError
    from rapsam.training.config import CONFIGS, PAPER_GLOBAL_BATCH, TrainConfigError, load_config
    from rapsam.training.trainer import TrainingError, train

    parser = argparse.ArgumentParser(
        prog="rapsam-train",
        description="Joint co-training (COCO panoptic + COCO-SAM prompts + YouTube-VIS / pseudo-videos). "
        "One process, or DDP under: torchrun --nproc_per_node=N -m rapsam.training CONFIG",
    )
    parser.add_argument("config", help=f"a TOML file or a registered config: {', '.join(sorted(CONFIGS))}")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (repeatable), e.g. --set iterations=100 --set amp=bf16")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT/last.pt, exactly")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        summary = train(config, resume=args.resume)
    except (TrainConfigError, TrainingError, DatasetError, FileNotFoundError) as exc:
        return _fail(str(exc))
    print(f"{summary.iterations} iterations in {summary.seconds:.0f} s: {summary.iterations_per_s:.2f} it/s, "
          f"{summary.images_per_s:.1f} images/s, peak memory {summary.peak_memory_mb:.0f} MB, "
          f"final loss {summary.final_loss:.3f}; the paper's 12 epochs at this rate: "
          f"{summary.paper_schedule_hours:.1f} h on {PAPER_GLOBAL_BATCH // config.batch_size} such processes")
    if summary.weights is not None:
        print(f"wrote {summary.weights}")
        print(f"next: rapsam-eval --weights {summary.weights} --synthetic {config.synthetic}"
              if config.synthetic else f"next: rapsam-eval --weights {summary.weights} --coco DATA")
    return 0


def eval_main(argv: list[str] | None = None) -> int:
    import json

    from rapsam.data import DatasetError
    from rapsam.evaluation.evaluate import evaluate, results_table
    from rapsam.fileio import atomic_path
    from rapsam.pipeline import open_predictor

    parser = argparse.ArgumentParser(
        prog="rapsam-eval",
        description="PQ (COCO panoptic), 1-point/box mIoU (COCO-SAM prompts), mAP (YouTube-VIS) of the PyTorch "
        "model or of a converted artifact through its runtime.",
    )
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--weights", help="our .safetensors checkpoint (PyTorch)")
    what.add_argument("--artifact", help="a folder written by rapsam-convert (runs in its runtime)")
    parser.add_argument("--model", help="registered variant (default: the weights' own, or the default model)")
    parser.add_argument("--coco", help="COCO panoptic root")
    parser.add_argument("--ytvis", help="YouTube-VIS 2019 root")
    parser.add_argument("--synthetic", help="a synthetic data root (its coco/ and ytvis/)")
    parser.add_argument("--split", default="val", help="val (default) or train")
    parser.add_argument("--tasks", default="panoptic,prompt,video", help="comma list (default all three)")
    parser.add_argument("--input-size", type=_size, help="HxW for PyTorch (default: the model's)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N images / videos")
    parser.add_argument("--out", help="also write the results as JSON")
    args = parser.parse_args(argv)
    coco, ytvis = args.coco, args.ytvis
    if args.synthetic:
        coco, ytvis = coco or f"{args.synthetic}/coco", ytvis or f"{args.synthetic}/ytvis"
    if coco is None and ytvis is None:
        return _fail("give data: --coco ROOT and/or --ytvis ROOT, or --synthetic ROOT")
    try:
        if args.artifact:
            predictor = open_predictor(args.artifact)
        else:
            predictor = open_predictor(args.model, weights=args.weights, input_size=args.input_size)
        results = evaluate(predictor, coco=coco, ytvis=ytvis, split=args.split,
                           tasks=tuple(t.strip() for t in args.tasks.split(",")), limit=args.limit,
                           progress=lambda m: print(m, file=sys.stderr, flush=True))
    except (DatasetError, FileNotFoundError, ValueError, KeyError, RuntimeError) as exc:
        return _fail(str(exc).strip("'\""))
    print(results_table(results))
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text(json.dumps(results, indent=2, default=float) + "\n")
        print(f"wrote {args.out}")
    return 0


def _point(text: str) -> tuple[float, float]:
    x, y = (float(v) for v in text.split(","))
    return x, y


def _box(text: str) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(v) for v in text.split(","))
    return x0, y0, x1, y1


def demo_main(argv: list[str] | None = None) -> int:
    from pathlib import Path

    from rapsam.convert.base import ConversionError
    from rapsam.demo import DemoError, camera_frames, demo_image, demo_video, read_image, read_video
    from rapsam.pipeline import open_predictor

    parser = argparse.ArgumentParser(
        prog="rapsam-demo",
        description="Run an artifact through its runtime (or the PyTorch model) on an image, a video or a camera: "
        "overlay PNGs, prompt masks, an animated GIF with track ids, and the segments printed.",
    )
    _source_arguments(parser)
    media = parser.add_mutually_exclusive_group(required=True)
    media.add_argument("--image", help="an image file")
    media.add_argument("--video", help="a video file (GIF, or mp4/avi/mov with imageio's pyav plugin)")
    media.add_argument("--camera", type=int, metavar="N", help="camera index (needs opencv-python)")
    parser.add_argument("--points", type=_point, nargs="+", default=[], metavar="X,Y", help="clicks, image pixels")
    parser.add_argument("--box", type=_box, nargs="+", default=[], metavar="X0,Y0,X1,Y1", help="boxes, image pixels")
    parser.add_argument("--max-frames", type=int, default=100, help="video / camera: frames to run (default 100)")
    parser.add_argument("--out", default="demo-out", help="folder for the pictures (default ./demo-out)")
    args = parser.parse_args(argv)
    if (args.points or args.box) and not args.image:
        parser.error("--points / --box go with --image")
    try:
        predictor = open_predictor(args.source, weights=args.weights)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        if args.image:
            result = demo_image(predictor, read_image(args.image), out / Path(args.image).stem,
                                points=args.points, boxes=args.box)
        else:
            frames = (read_video(args.video, args.max_frames) if args.video
                      else camera_frames(args.camera, args.max_frames))
            stem = out / (Path(args.video).stem if args.video else f"camera{args.camera}")
            result = demo_video(predictor, frames, stem, progress=lambda m: print(m, file=sys.stderr, flush=True))
    except (DemoError, ConversionError, FileNotFoundError, ValueError, KeyError) as exc:
        return _fail(str(exc).strip("'\""))
    print("\n".join(result.lines))
    for path in result.files:
        print(f"wrote {path}")
    return 0
