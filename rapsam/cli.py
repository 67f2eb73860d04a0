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
