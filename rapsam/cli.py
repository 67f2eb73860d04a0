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
    parser.add_argument("--weights", help="our .safetensors checkpoint (default: seeded random init, said in the manifest)")
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
            return 0 if check_artifact(args.check, weights=args.weights).passed else 1
        options = {k: getattr(args, k) for k in [*_TARGET_FLAGS, "simplify"] if getattr(args, k) is not None}
        results = convert(
            args.target, model=args.model, weights=args.weights, seed=args.seed, input_size=args.input_size,
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
