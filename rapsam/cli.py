"""Command-line entry points: each parses arguments and calls one library function."""

from __future__ import annotations

import argparse
import sys

from rapsam.config import VARIANTS


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
    from rapsam.complexity import PAPER_ROWS, model_cost, padded_size
    from rapsam.checkpoint import build_model

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
    "deployment_target": ("--deployment-target", dict(choices=["iOS16", "iOS17", "iOS18"], help="coreml: minimum iOS (default iOS17)")),
    "compute_units": ("--compute-units", dict(choices=["ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE"], help="coreml: compute units (default ALL)")),
    "image_input": ("--image-input", dict(action="store_true", default=None, help="coreml: image input type for Vision pipelines")),
    "backend": ("--backend", dict(help="executorch: xnnpack (default) or portable")),
    "strict_delegation": ("--strict-delegation", dict(action="store_true", default=None, help="executorch: fail if a compute op would run on portable kernels")),
    "opset": ("--opset", dict(type=int, help="onnx: opset (default 18)")),
    "ir_version": ("--ir-version", dict(type=int, help="onnx: IR version written (default 9, loads in onnxruntime-web)")),
}


def convert_main(argv: list[str] | None = None) -> int:
    from rapsam.convert import DEFAULT_INPUT_SIZE, DEFAULT_MODEL, check_artifact, convert
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
                        "--classifier (default: seeded random init, said in the manifest)")
    parser.add_argument("--classifier", help="official .pth weights: the class text-embedding file (see rapsam-import)")
    parser.add_argument("--dataset", help="official .pth weights: coco or coco+ytvis (default: from the classifier)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random init without --weights")
    parser.add_argument("--input-size", type=_size, default=DEFAULT_INPUT_SIZE, help="HxW, multiples of 32 (default 512x512)")
    parser.add_argument("--entry-points", default=",".join(ENTRY_POINTS), help="comma list (default all four)")
    parser.add_argument("--num-prompts", type=int, default=4, help="K, prompt slots of the prompt entry point (default 4)")
    parser.add_argument("--precision", choices=["fp32", "fp16"], help="default: fp16 for coreml, fp32 elsewhere")
    parser.add_argument("--out", default="artifacts", help="output folder (default ./artifacts)")
    parser.add_argument("--no-parity", action="store_true", help="skip the parity check")
    parser.add_argument("--no-parity-gate", action="store_true", help="keep the artifact when parity fails (marked in the manifest)")
    for key, (flag, kwargs) in _TARGET_FLAGS.items():
        parser.add_argument(flag, dest=key, **kwargs)
    parser.add_argument("--no-simplify", dest="simplify", action="store_false", default=None, help="onnx: skip onnxsim")
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
            parity=not args.no_parity, parity_gate=not args.no_parity_gate, options=options,
        )
    except (ConversionError, CheckpointError, KeyError, ValueError) as exc:
        return _fail(str(exc).strip("'\""))
    for result in results:
        state = "written" if result.written else "NOT written (parity gate failed)"
        print(f"{result.target}: {result.folder} {state}")
    return 0 if all(r.written for r in results) else 1


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
    print(f"imported {report.num_tensors} tensors into {model.config.name}; none dropped")
    print(f"classes: {taxonomy.name}, {sum(taxonomy.is_thing)} things + {classes - sum(taxonomy.is_thing)} stuff; "
          f"classifier {classes}x{prototypes}x{dim} (sha256 {report.classifier_sha256[:12]}), "
          f"temperature {model.config.temperature}")
    print(f"preprocessing ({report.preprocessor_source}): mean {list(pre['mean'])} std {list(pre['std'])}, "
          f"bgr_to_rgb={pre['bgr_to_rgb']}: the network sees {'RGB' if pre['bgr_to_rgb'] else 'BGR'}; artifacts take RGB")
    print(f"wrote {output}")
    print(f"next: rapsam-convert --weights {output} --target coreml")
    return 0
