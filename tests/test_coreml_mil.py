"""The Core ML reference evaluator (`rapsam.convert.mil`), op by op against torch, in fp32 and fp16.

Each case builds a one-op ML Program with coremltools' MIL builder (the op's real parameter names and
defaults), runs it through the evaluator, and compares with torch's own op: fp32 to float rounding; fp16
(inputs cast to fp16, the op, a cast back, as coremltools writes fp16 programs) against torch on the
fp16-rounded inputs with its result rounded to fp16, within one fp16 step, overflows (inf) included.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

ct = pytest.importorskip("coremltools")

from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import types

from rapsam.convert import mil

OPS_FILE = Path(__file__).parent / "data" / "coreml_mil_ops.json"
RNG = np.random.default_rng(0)


def _normal(*shape: int, scale: float = 3.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def _positive(*shape: int) -> np.ndarray:
    return (RNG.uniform(0.1, 5.0, shape)).astype(np.float32)


def _near_fp16_max(*shape: int) -> np.ndarray:
    """Magnitudes around fp16's largest value (65504), both signs: sums and products overflow."""
    return (RNG.uniform(3.0e4, 6.5e4, shape) * RNG.choice([-1.0, 1.0], shape)).astype(np.float32)


@dataclass(frozen=True)
class Case:
    op: str
    build: Callable[..., object]  # MIL vars -> the op's output var
    reference: Callable[..., torch.Tensor]  # torch tensors -> expected output
    inputs: tuple[np.ndarray, ...]
    fp16: bool = True  # also run as an fp16 program
    label: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.op}-{self.label}" if self.label else self.op


def _program(case: Case, fp16: bool) -> mil.MILFunction:
    specs = [mb.TensorSpec(shape=a.shape, dtype=types.fp32 if a.dtype == np.float32 else
                           types.bool if a.dtype == np.bool_ else types.int32) for a in case.inputs]

    def body(*xs):
        if fp16:
            xs = [mb.cast(x=x, dtype="fp16") if x.dtype == types.fp32 else x for x in xs]
        out = case.build(*xs)
        outs = out if isinstance(out, (list, tuple)) else [out]
        if fp16:
            outs = [mb.cast(x=o, dtype="fp32") if o.dtype == types.fp16 else o for o in outs]
        return tuple(outs)

    # the builder names the program's inputs after the function's parameters
    def one(x0):
        return body(x0)

    def two(x0, x1):
        return body(x0, x1)

    def three(x0, x1, x2):
        return body(x0, x1, x2)

    program = mb.program(input_specs=specs, opset_version=ct.target.iOS17)((one, two, three)[len(case.inputs) - 1])
    return mil.from_pymil(program.functions["main"])


def _run(case: Case, fp16: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    function = _program(case, fp16)
    feeds = dict(zip((v.name for v in function.inputs), case.inputs))
    got = mil.evaluate(function, feeds)
    tensors = [torch.from_numpy(a) for a in case.inputs]
    if fp16:
        tensors = [t.half().float() if t.is_floating_point() else t for t in tensors]
    expected = case.reference(*tensors)
    expected = list(expected) if isinstance(expected, (list, tuple)) else [expected]
    if fp16:
        expected = [e.half().float() if e.is_floating_point() else e for e in expected]
    return [torch.from_numpy(got[name]) for name in function.outputs], expected


def _compare(got: torch.Tensor, expected: torch.Tensor, fp16: bool) -> None:
    assert got.shape == expected.shape
    if not expected.is_floating_point():
        assert torch.equal(got.to(expected.dtype), expected)
        return
    expected = expected.float()
    # the same non-finite positions (an fp16 overflow must be an inf, never a clipped number)
    assert torch.equal(torch.isinf(got), torch.isinf(expected)), "overflow positions differ"
    assert torch.equal(torch.isnan(got), torch.isnan(expected))
    finite = torch.isfinite(expected)
    if fp16:  # within one fp16 step of the value (rounding can land either side of a tie)
        step = torch.where(expected.abs() < 6.1e-5, torch.full_like(expected, 2.0**-24), expected.abs() * 2.0**-10)
        assert bool(((got - expected).abs()[finite] <= step[finite] * 1.01).all()), \
            f"max error {(got - expected).abs()[finite].max():.3g}"
    else:
        torch.testing.assert_close(got[finite], expected[finite], rtol=2e-6, atol=2e-6)


def _like(x, value: float):
    """A float constant in the dtype of the var `x` (fp16 programs take fp16 parameters)."""
    return np.float16(value) if x.dtype == types.fp16 else np.float32(value)


def _unary(op: str, torch_fn: Callable, domain: Callable[..., np.ndarray] = _normal, **params) -> list[Case]:
    build = (lambda x: getattr(mb, op)(x=x, **{k: _like(x, v) if isinstance(v, float) else v for k, v in params.items()}))
    return [Case(op, build, torch_fn, (domain(2, 3, 5),), label="random"),
            Case(op, build, torch_fn, (domain(1),), label="one-element"),
            Case(op, build, torch_fn, (np.zeros((0, 4), np.float32),), fp16=False, label="empty")]


def _binary(op: str, torch_fn: Callable, boundary: bool = True) -> list[Case]:
    build = (lambda x, y: getattr(mb, op)(x=x, y=y))
    cases = [Case(op, build, torch_fn, (_normal(2, 3, 4), _normal(2, 3, 4)), label="random"),
             Case(op, build, torch_fn, (_normal(2, 1, 4), _normal(3, 1)), label="broadcast"),
             Case(op, build, torch_fn, (_normal(1), _normal(1)), label="one-element")]
    if boundary:
        cases.append(Case(op, build, torch_fn, (_near_fp16_max(4, 8), _near_fp16_max(4, 8)), label="fp16-boundary"))
    return cases


def _cases() -> list[Case]:
    cases: list[Case] = []
    for op, fn in (("add", torch.add), ("sub", torch.sub), ("mul", torch.mul), ("maximum", torch.maximum),
                   ("minimum", torch.minimum)):
        cases += _binary(op, fn)
    cases += _binary("real_div", torch.div, boundary=False)
    cases.append(Case("real_div", lambda x, y: mb.real_div(x=x, y=y), torch.div,
                      (_near_fp16_max(4, 8), np.full((4, 8), 0.25, np.float32)), label="fp16-overflow"))
    cases.append(Case("pow", lambda x, y: mb.pow(x=x, y=y), torch.pow, (_positive(3, 4), _normal(3, 4, scale=1.0))))
    cases.append(Case("pow", lambda x: mb.pow(x=x, y=np.float32(2.0)), lambda x: x**2, (_near_fp16_max(3, 4) / 100,),
                      fp16=False, label="square-large"))
    for op, fn in (("equal", torch.eq), ("not_equal", torch.ne), ("greater", torch.gt), ("greater_equal", torch.ge),
                   ("less", torch.lt), ("less_equal", torch.le)):
        x = np.round(_normal(3, 4))
        cases.append(Case(op, lambda a, b, op=op: getattr(mb, op)(x=a, y=b), fn, (x, np.round(_normal(3, 4)))))
    bools = (RNG.random((3, 4)) > 0.5, RNG.random((3, 4)) > 0.5)
    for op, fn in (("logical_and", torch.logical_and), ("logical_or", torch.logical_or)):
        cases.append(Case(op, lambda a, b, op=op: getattr(mb, op)(x=a, y=b), fn, bools, fp16=False))
    cases.append(Case("logical_not", lambda a: mb.logical_not(x=a), torch.logical_not, bools[:1], fp16=False))
    for op, fn in (("abs", torch.abs), ("ceil", torch.ceil), ("floor", torch.floor), ("round", torch.round), ("cos", torch.cos),
                   ("sin", torch.sin), ("erf", torch.erf), ("tanh", torch.tanh), ("relu", torch.relu),
                   ("sigmoid", torch.sigmoid), ("silu", F.silu), ("relu6", F.relu6), ("identity", lambda x: x)):
        cases += _unary(op, fn)
    cases += _unary("exp", torch.exp)
    cases.append(Case("exp", lambda x: mb.exp(x=x), torch.exp, (np.array([11.0, 11.1, -20.0, 0.0], np.float32),),
                      label="fp16-overflow"))  # e^11.1 > 65504
    cases += _unary("square", torch.square)
    cases.append(Case("square", lambda x: mb.square(x=x), torch.square, (np.array([255.0, 256.0, 300.0], np.float32),),
                      label="fp16-overflow"))
    cases += _unary("sqrt", torch.sqrt, _positive)
    cases += _unary("rsqrt", lambda x: torch.rsqrt(x + 1e-12), _positive)
    cases += _unary("log", lambda x: torch.log(x + 1e-45), _positive)
    cases += _unary("leaky_relu", lambda x: F.leaky_relu(x, 0.125), alpha=0.125)
    cases += _unary("sigmoid_hard", lambda x: torch.clamp(0.25 * x + 0.5, 0, 1), alpha=0.25, beta=0.5)  # exact in fp16
    cases += _unary("clip", lambda x: torch.clamp(x, -1.0, 2.0), alpha=-1.0, beta=2.0)
    cases.append(Case("clip", lambda x: mb.clip(x=x, alpha=_like(x, 0.0), beta=_like(x, 2.0**-14)),
                      lambda x: torch.clamp(x, 0.0, 2.0**-14), (_normal(4, 6) * 1e-4,), label="hard-mask-step"))
    for mode, fn in (("EXACT", F.gelu), ("TANH_APPROXIMATION", lambda x: F.gelu(x, approximate="tanh")),
                     ("SIGMOID_APPROXIMATION", lambda x: x * torch.sigmoid(1.702 * x))):
        cases.append(Case("gelu", lambda x, mode=mode: mb.gelu(x=x, mode=mode), fn, (_normal(2, 8),), label=mode))
    for axis in (-1, 1):
        cases.append(Case("softmax", lambda x, axis=axis: mb.softmax(x=x, axis=axis),
                          lambda x, axis=axis: torch.softmax(x, axis), (_normal(2, 5, 7),), label=f"axis{axis}"))
    cases.append(Case("softmax", lambda x: mb.softmax(x=x, axis=-1), lambda x: torch.softmax(x, -1),
                      (_near_fp16_max(2, 9),), label="large-logits"))
    cases.append(Case("cast", lambda x: mb.cast(x=x, dtype="int32"), lambda x: torch.trunc(x).int(),
                      (_normal(3, 4),), fp16=False, label="to-int32"))
    cases.append(Case("cast", lambda x: mb.cast(x=mb.cast(x=x, dtype="fp16"), dtype="fp32"),
                      lambda x: x.half().float(), (_near_fp16_max(4, 4) * 1.2,), fp16=False, label="fp16-roundtrip"))
    for op, fn in (("reduce_mean", torch.mean), ("reduce_sum", torch.sum), ("reduce_max", torch.amax),
                   ("reduce_min", torch.amin), ("reduce_l2_norm", lambda x, dim, keepdim: x.norm(dim=dim, keepdim=keepdim))):
        cases.append(Case(op, lambda x, op=op: getattr(mb, op)(x=x, axes=[1, 2], keep_dims=True),
                          lambda x, fn=fn: fn(x, dim=(1, 2), keepdim=True), (_normal(2, 3, 4, 5),), label="keep"))
        cases.append(Case(op, lambda x, op=op: getattr(mb, op)(x=x, axes=[-1], keep_dims=False),
                          lambda x, fn=fn: fn(x, dim=-1, keepdim=False), (_normal(3, 1),), label="one-element"))
    cases.append(Case("reduce_sum", lambda x: mb.reduce_sum(x=x, axes=[-1]), lambda x: x.sum(-1),
                      (_near_fp16_max(2, 8),), label="fp16-boundary"))
    cases.append(Case("reduce_argmax", lambda x: mb.reduce_argmax(x=x, axis=1, keep_dims=False),
                      lambda x: torch.argmax(x, 1).int(), (_normal(3, 7),)))
    weight, bias = _normal(6, 5, scale=0.3), _normal(6)
    cases.append(Case("linear", lambda x: mb.linear(x=x, weight=weight, bias=bias),
                      lambda x: F.linear(x, torch.from_numpy(weight), torch.from_numpy(bias)), (_normal(2, 3, 5),)))
    cases.append(Case("matmul", lambda x, y: mb.matmul(x=x, y=y), torch.matmul, (_normal(2, 3, 4), _normal(2, 4, 5))))
    cases.append(Case("matmul", lambda x, y: mb.matmul(x=x, y=y, transpose_x=True, transpose_y=True),
                      lambda x, y: x.transpose(-1, -2) @ y.transpose(-1, -2), (_normal(2, 4, 3), _normal(2, 5, 4)),
                      label="transposed"))
    cases.append(Case("matmul", lambda x, y: mb.matmul(x=x, y=y), torch.matmul,
                      (_near_fp16_max(1, 2, 8) / 100, _near_fp16_max(1, 8, 3) / 100), label="fp16-overflow"))
    cases += _conv_cases()
    cases += _norm_and_pool_cases()
    cases += _layout_cases()
    cases += _resample_cases()
    cases += _quantize_cases()
    return cases


def _conv_cases() -> list[Case]:
    cases = []
    weight, bias = _normal(6, 4, 3, 3, scale=0.3), _normal(6)
    for label, params, torch_kwargs, pre_pad in (
        ("custom-pad", {"pad_type": "custom", "pad": [1, 2, 0, 1]}, {}, (0, 1, 1, 2)),
        ("same-stride2", {"pad_type": "same", "strides": [2, 2]}, {"stride": 2}, (1, 1, 0, 1)),  # 8x9 -> 4x5
        ("valid-dilated", {"pad_type": "valid", "dilations": [2, 2]}, {"dilation": 2}, (0, 0, 0, 0)),
    ):
        cases.append(Case("conv", lambda x, p=params: mb.conv(x=x, weight=weight, bias=bias, **p),
                          lambda x, k=torch_kwargs, pp=pre_pad: F.conv2d(
                              F.pad(x, pp), torch.from_numpy(weight), torch.from_numpy(bias), **k),
                          (_normal(1, 4, 8, 9),), label=label))
    depthwise = _normal(4, 1, 3, 3)
    cases.append(Case("conv", lambda x: mb.conv(x=x, weight=depthwise, pad_type="custom", pad=[1, 1, 1, 1], groups=4),
                      lambda x: F.conv2d(x, torch.from_numpy(depthwise), padding=1, groups=4),
                      (_normal(1, 4, 6, 6),), label="depthwise"))
    up = _normal(4, 3, 2, 2, scale=0.5)
    cases.append(Case("conv_transpose", lambda x: mb.conv_transpose(x=x, weight=up, strides=[2, 2], pad_type="valid"),
                      lambda x: F.conv_transpose2d(x, torch.from_numpy(up), stride=2), (_normal(1, 4, 5, 6),)))
    up3 = _normal(4, 3, 3, 3, scale=0.5)
    cases.append(Case("conv_transpose", lambda x: mb.conv_transpose(x=x, weight=up3, strides=[2, 2], pad_type="custom",
                                                                    pad=[1, 1, 1, 1]),
                      lambda x: F.conv_transpose2d(x, torch.from_numpy(up3), stride=2, padding=1),
                      (_normal(1, 4, 5, 6),), label="custom-pad"))
    return cases


def _norm_and_pool_cases() -> list[Case]:
    gamma, beta = _normal(8), _normal(8)
    cases = [
        Case("layer_norm", lambda x: mb.layer_norm(x=x, axes=[-1], gamma=gamma, beta=beta, epsilon=1e-6),
             lambda x: F.layer_norm(x, (8,), torch.from_numpy(gamma), torch.from_numpy(beta), 1e-6), (_normal(2, 5, 8),)),
        # large activations: the fp32 variance must not overflow where fp16 storage alone would
        Case("layer_norm", lambda x: mb.layer_norm(x=x, axes=[-1], epsilon=1e-5),
             lambda x: F.layer_norm(x, (8,), eps=1e-5), (_near_fp16_max(3, 8),), label="large"),
        Case("layer_norm", lambda x: mb.layer_norm(x=x, axes=[1], epsilon=1e-5),
             lambda x: F.layer_norm(x.transpose(1, -1), (4,), eps=1e-5).transpose(1, -1), (_normal(2, 4, 3, 3),),
             label="channels"),
    ]
    mean, variance = _normal(4), _positive(4)
    cases.append(Case("batch_norm", lambda x: mb.batch_norm(x=x, mean=mean, variance=variance, gamma=gamma[:4],
                                                            beta=beta[:4], epsilon=1e-5),
                      lambda x: F.batch_norm(x, torch.from_numpy(mean), torch.from_numpy(variance),
                                             torch.from_numpy(gamma[:4]), torch.from_numpy(beta[:4]), eps=1e-5),
                      (_normal(1, 4, 3, 3),)))
    cases.append(Case("avg_pool", lambda x: mb.avg_pool(x=x, kernel_sizes=[2, 2], strides=[2, 2], pad_type="valid"),
                      lambda x: F.avg_pool2d(x, 2), (_normal(1, 3, 6, 8),)))
    cases.append(Case("avg_pool", lambda x: mb.avg_pool(x=x, kernel_sizes=[3, 3], strides=[2, 2], pad_type="custom",
                                                        pad=[1, 1, 1, 1], exclude_padding_from_average=True),
                      lambda x: F.avg_pool2d(x, 3, 2, padding=1, count_include_pad=False), (_normal(1, 3, 7, 7),),
                      label="exclude-padding"))
    cases.append(Case("max_pool", lambda x: mb.max_pool(x=x, kernel_sizes=[3, 3], strides=[2, 2], pad_type="custom",
                                                        pad=[1, 1, 1, 1]),
                      lambda x: F.max_pool2d(x, 3, 2, padding=1), (_normal(1, 3, 7, 7),)))
    return cases


def _layout_cases() -> list[Case]:
    x = _normal(2, 3, 4)
    return [
        Case("concat", lambda a, b: mb.concat(values=[a, b], axis=1), lambda a, b: torch.cat([a, b], 1),
             (x, _normal(2, 5, 4))),
        Case("concat", lambda a, b: mb.concat(values=[a, b], axis=-1, interleave=True),
             lambda a, b: torch.stack([a, b], -1).flatten(-2), (x, _normal(2, 3, 4)), label="interleave"),
        Case("stack", lambda a, b: mb.stack(values=[a, b], axis=1), lambda a, b: torch.stack([a, b], 1), (x, x + 1)),
        Case("split", lambda a: mb.split(x=a, split_sizes=[1, 3], axis=2), lambda a: torch.split(a, [1, 3], 2), (x,)),
        Case("split", lambda a: mb.split(x=a, num_splits=2, axis=-1), lambda a: torch.split(a, 2, -1), (x,),
             label="num_splits"),
        Case("reshape", lambda a: mb.reshape(x=a, shape=[4, -1]), lambda a: a.reshape(4, -1), (x,)),
        Case("transpose", lambda a: mb.transpose(x=a, perm=[2, 0, 1]), lambda a: a.permute(2, 0, 1), (x,)),
        Case("expand_dims", lambda a: mb.expand_dims(x=a, axes=[0, -1]), lambda a: a[None, ..., None], (x,)),
        Case("squeeze", lambda a: mb.squeeze(x=a, axes=[1]), lambda a: a.squeeze(1), (_normal(2, 1, 3),)),
        Case("tile", lambda a: mb.tile(x=a, reps=[1, 2, 3]), lambda a: a.repeat(1, 2, 3), (x,)),
        Case("slice_by_index", lambda a: mb.slice_by_index(x=a, begin=[0, 1, 0], end=[2, 3, 4], stride=[1, 1, 2]),
             lambda a: a[:, 1:3, ::2], (x,)),
        Case("slice_by_index", lambda a: mb.slice_by_index(x=a, begin=[0, 2, 0], end=[0, 0, 0],
                                                           end_mask=[True, False, True], squeeze_mask=[False, True, False]),
             lambda a: a[:, 2, :], (x,), label="squeeze-mask"),
        Case("slice_by_index", lambda a: mb.slice_by_index(x=a, begin=[0, 0, 3], end=[2, 3, 0], stride=[1, 1, -1],
                                                           begin_mask=[True, True, False], end_mask=[True, True, True]),
             lambda a: a.flip(-1), (x,), label="reversed"),
        Case("gather", lambda a, i: mb.gather(x=a, indices=i, axis=1), lambda a, i: a[:, i.long()],
             (x, np.array([2, 0, -1], np.int32))),
        Case("fill_like", lambda a: mb.fill_like(ref_tensor=a, value=2.5), lambda a: torch.full_like(a, 2.5), (x,)),
        Case("select", lambda c, a, b: mb.select(cond=c, a=a, b=b), lambda c, a, b: torch.where(c, a, b),
             (RNG.random((2, 3, 4)) > 0.5, x, _normal(2, 3, 4))),
        Case("pad", lambda a: mb.pad(x=a, pad=[0, 0, 1, 2, 3, 0], mode="constant", constant_val=_like(a, 1.5)),
             lambda a: F.pad(a, (3, 0, 1, 2), value=1.5), (x,)),
        Case("pad", lambda a: mb.pad(x=a, pad=[0, 0, 0, 0, 1, 1, 2, 2], mode="reflect"),
             lambda a: F.pad(a, (2, 2, 1, 1), mode="reflect"), (_normal(1, 2, 4, 5),), label="reflect"),
    ]


def _resample_cases() -> list[Case]:
    image = _normal(1, 3, 5, 7)
    grid = RNG.uniform(-1.2, 1.2, (1, 4, 6, 2)).astype(np.float32)  # some samples fall outside: padding
    cases = []
    for align in (False, True):
        cases.append(Case("upsample_bilinear",
                          lambda x, al=align: mb.upsample_bilinear(x=x, scale_factor_height=2.0, scale_factor_width=3.0,
                                                                   align_corners=al),
                          lambda x, al=align: F.interpolate(x, scale_factor=(2, 3), mode="bilinear", align_corners=al),
                          (image,), label=f"align{align}"))
        cases.append(Case("resample",
                          lambda x, g, al=align: mb.resample(x=x, coordinates=g, sampling_mode="bilinear",
                                                             padding_mode="constant", padding_value=_like(x, 0.0),
                                                             coordinates_mode="normalized_minus_one_to_one",
                                                             align_corners=al),
                          lambda x, g, al=align: F.grid_sample(x, g, align_corners=al), (image, grid),
                          label=f"align{align}"))
    cases.append(Case("resample", lambda x, g: mb.resample(x=x, coordinates=g, sampling_mode="bilinear",
                                                           padding_mode="border", padding_value=_like(x, 0.0),
                                                           coordinates_mode="unnormalized", align_corners=True),
                      lambda x, g: F.grid_sample(x, (g * 2 / torch.tensor([6.0, 4.0])) - 1, padding_mode="border",
                                                 align_corners=True),
                      (image, (grid + 1) * np.array([3.0, 2.0], np.float32)), label="unnormalized-border"))
    cases.append(Case("resample", lambda x, g: mb.resample(x=x, coordinates=g, sampling_mode="bilinear",
                                                           padding_mode="constant", padding_value=_like(x, 2.0),
                                                           coordinates_mode="normalized_minus_one_to_one",
                                                           align_corners=False),
                      lambda x, g: F.grid_sample(x - 2.0, g, align_corners=False) + 2.0, (image, grid),
                      label="pad-value", fp16=False))
    return cases


def _quantize_cases() -> list[Case]:
    scale = np.float32(0.05)
    zero = np.int8(3)
    return [
        Case("quantize", lambda x: mb.quantize(input=x, scale=scale, zero_point=zero, output_dtype="int8"),
             lambda x: torch.clamp(torch.round(x / 0.05) + 3, -128, 127).to(torch.int8), (_normal(3, 40),), fp16=False),
        Case("dequantize", lambda x: mb.dequantize(input=mb.quantize(input=x, scale=scale, zero_point=zero,
                                                                     output_dtype="int8"), scale=scale, zero_point=zero),
             lambda x: (torch.clamp(torch.round(x / 0.05) + 3, -128, 127) - 3) * 0.05, (_normal(3, 40),), fp16=False),
    ]


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_op_matches_torch_in_fp32(case: Case) -> None:
    got, expected = _run(case, fp16=False)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        _compare(g, e, fp16=False)


FP16_CASES = [c for c in CASES if c.fp16]


@pytest.mark.parametrize("case", FP16_CASES, ids=[c.id for c in FP16_CASES])
def test_op_matches_torch_in_fp16(case: Case) -> None:
    got, expected = _run(case, fp16=True)
    for g, e in zip(got, expected):
        _compare(g, e, fp16=True)


def test_every_op_has_a_test_and_every_converted_op_an_implementation() -> None:
    """The op list of every registered variant's converted programs (tests/data/coreml_mil_ops.json, made by
    scripts/coreml_op_survey.py) is covered by the evaluator, and every op the evaluator has is tested here."""
    tested = {c.op for c in CASES} | {"const"}
    assert set(mil.OPS) <= tested, f"ops without a test: {sorted(set(mil.OPS) - tested)}"
    survey = json.loads(OPS_FILE.read_text())
    used = set().union(*(set(ops) for ops in survey["variants"].values()))
    assert used - {"const"} <= set(mil.OPS), f"converted ops the evaluator lacks: {sorted(used - set(mil.OPS))}"
    assert set(survey["variants"]) == set(__import__("rapsam.config", fromlist=["VARIANTS"]).VARIANTS)


def test_fp16_overflow_is_inf_not_a_clipped_number() -> None:
    case = Case("add", lambda x, y: mb.add(x=x, y=y), torch.add,
                (np.array([60000.0, -60000.0, 1.0], np.float32), np.array([10000.0, -10000.0, 1.0], np.float32)))
    got, _ = _run(case, fp16=True)
    assert got[0].tolist() == [math.inf, -math.inf, 2.0]


def test_an_unknown_op_is_named_not_skipped() -> None:
    case = Case("atan", lambda x: mb.atan(x=x), torch.atan, (_normal(3),))
    with pytest.raises(mil.MILError, match=r"MIL op atan \(.*\) is not implemented by the reference evaluator"):
        _run(case, fp16=False)


@pytest.mark.parametrize("nbits", [4, 6])
def test_palettized_weights_decompress_as_coremltools_does(nbits: int) -> None:
    from coremltools.converters.mil.mil.ops.defs.iOS16.constexpr_ops import constexpr_lut_to_dense

    lut = _normal(2**nbits)
    indices = RNG.integers(0, 2**nbits, 5 * 7)
    packed = np.packbits(((indices[:, None] >> np.arange(nbits)) & 1).astype(np.uint8).ravel(), bitorder="little")
    ours = mil.decompress("constexpr_lut_to_dense", {"lut": lut, "indices": packed, "shape": np.array([5, 7], np.uint32)})
    theirs = constexpr_lut_to_dense.decompress(lut, packed, np.array([5, 7]))
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(ours, lut[indices].reshape(5, 7))


def test_int8_weights_decompress_as_coremltools_does() -> None:
    from coremltools.converters.mil.mil.ops.defs.iOS16.constexpr_ops import constexpr_affine_dequantize
    from coremltools.converters.mil.mil.ops.defs.iOS18.compression import constexpr_blockwise_shift_scale

    data = RNG.integers(-128, 128, (6, 4)).astype(np.int8)
    scale, zero = _positive(6).astype(np.float16), RNG.integers(-3, 3, 6).astype(np.int8)
    ours = mil.decompress("constexpr_affine_dequantize", {"quantized_data": data, "zero_point": zero, "scale": scale,
                                                          "axis": 0})
    np.testing.assert_array_equal(ours, constexpr_affine_dequantize.decompress(data, zero, scale, 0))
    block_scale, offset = _positive(6, 2).astype(np.float16), RNG.integers(-3, 3, (6, 2)).astype(np.int8)
    ours = mil.decompress("constexpr_blockwise_shift_scale", {"data": data, "scale": block_scale, "offset": offset})
    np.testing.assert_allclose(ours.astype(np.float32),
                               constexpr_blockwise_shift_scale.decompress(data, block_scale, offset).astype(np.float32),
                               rtol=1e-3)
