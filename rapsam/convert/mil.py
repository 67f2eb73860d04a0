"""Core ML numerics without a Mac: a reference evaluator of the ML Programs `rapsam-convert --target coreml`
writes, op by op, in torch on the CPU.

- The program is read from the saved `.mlpackage` (coremltools' proto -> MIL loader, weights from the package's
  blob file as stored: fp16 weights stay fp16-valued, `constexpr_*` ops decompress int8 and palettized weights
  by their documented formulas, written out here and tested against coremltools' own decompression).
- Every op computes in float32 from its inputs, and its output is rounded to the dtype the program gives it:
  an fp16 program (Core ML's default compute precision) is evaluated with fp16 storage between every pair
  of ops, as Core ML's GPU runs it by default (fp16 tensors, fp32 accumulation; Apple documents fp16
  accumulation only as the opt-in `allowLowPrecisionAccumulationOnGPU`, and the Neural Engine's internals
  not at all). `round_to_program=False` gives the same program's "shadow" in fp32, which isolates what
  fp16 storage costs from what the program computes.
- An op without an implementation here is a `MILError` naming it, never a silent skip.
- `audit` runs the program and its shadow in lockstep and reports per op: outputs that overflow fp16, ops that
  lose more than a set share of precision on their own, the first op where the fp16 run drifts from the
  shadow, and the first op whose value differs from the PyTorch graph node of the same name (MIL ops keep
  the `torch.export` node names), which pins a semantic difference (axis, padding, operand order) to one op.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

WEIGHTS_DIR = Path("Data") / "com.apple.CoreML" / "weights"
FLOAT_DTYPES = {"fp16": torch.float16, "fp32": torch.float32}
INT_DTYPES = {"int32": torch.int32, "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8,
              "uint16": torch.int32, "uint32": torch.int64, "int64": torch.int64, "bool": torch.bool}
FP16_MAX = float(torch.finfo(torch.float16).max)


class MILError(RuntimeError):
    """A program the evaluator cannot run: the message is one line that names the op and the fix."""


# --- the program ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MILVar:
    name: str
    dtype: str  # "fp16", "fp32", "int32", "bool", ...
    shape: tuple[int, ...]


@dataclass(frozen=True)
class MILOp:
    type: str
    name: str
    inputs: Mapping[str, str | tuple[str, ...]]  # parameter -> variable name (a tuple for variadic inputs)
    outputs: tuple[MILVar, ...]


@dataclass(frozen=True)
class MILFunction:
    """One function of an ML Program, flattened: constants by variable name, the other ops in program order."""

    name: str
    inputs: tuple[MILVar, ...]
    outputs: tuple[str, ...]
    constants: Mapping[str, Any]  # numpy arrays (as stored), str, bool, int, float
    ops: tuple[MILOp, ...]

    @property
    def op_types(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for op in self.ops:
            counts[op.type] = counts.get(op.type, 0) + 1
        return dict(sorted(counts.items()))

    @property
    def computes_fp16(self) -> bool:
        return any(var.dtype == "fp16" for op in self.ops for var in op.outputs)


def _dtype_name(dtype: Any) -> str:
    from coremltools.converters.mil.mil import types

    return types.builtin_to_string(dtype.get_primitive() if types.is_tensor(dtype) else dtype)


def _var(var: Any) -> MILVar:
    shape = tuple(int(s) for s in var.shape) if var.shape is not None else ()
    return MILVar(var.name, _dtype_name(var.dtype), shape)


def from_pymil(function: Any, name: str = "main") -> MILFunction:
    """Flatten a coremltools MIL function (from the builder or the proto loader)."""
    constants: dict[str, Any] = {}
    ops = []
    for op in function.operations:
        if op.blocks:
            raise MILError(f"MIL op {op.op_type} ({op.name}) has nested blocks (control flow), which the reference "
                           "evaluator does not run; keep data-dependent control flow out of the model")
        if op.op_type == "const":
            constants[op.outputs[0].name] = op.outputs[0].val
            continue
        if op.op_type.startswith("constexpr_"):
            constants[op.outputs[0].name] = decompress(op.op_type, {k: v.val for k, v in op.inputs.items()},
                                                       op.opset_version)
            continue
        inputs = {key: tuple(v.name for v in value) if isinstance(value, (list, tuple)) else value.name
                  for key, value in op.inputs.items()}
        ops.append(MILOp(op.op_type, op.name, inputs, tuple(_var(v) for v in op.outputs)))
    return MILFunction(
        name=name,
        inputs=tuple(_var(v) for v in function.inputs.values()),
        outputs=tuple(v.name for v in function.outputs),
        constants=constants,
        ops=tuple(ops),
    )


def load_function(package: str | Path, function: str | None = None) -> MILFunction:
    """One function (`main` unless named) of a saved `.mlpackage`."""
    from coremltools.converters.mil.frontend.milproto.load import load as load_proto

    from rapsam.convert.coreml import _coremltools

    package = Path(package)
    ct = _coremltools()
    try:
        spec = ct.utils.load_spec(str(package))
    except Exception as error:  # protobuf / file errors
        raise MILError(f"{package}: not a readable Core ML package ({error}); convert it again") from error
    if spec.WhichOneof("Type") != "mlProgram":
        raise MILError(f"{package}: a {spec.WhichOneof('Type')} model, not an ML Program; convert with rapsam-convert")
    name = function or "main"
    if name not in spec.mlProgram.functions:
        raise MILError(f"{package} has no function {name!r} (it has {', '.join(spec.mlProgram.functions)})")
    program = load_proto(spec, spec.specificationVersion, str(package / WEIGHTS_DIR))
    return from_pymil(program.functions[name], name)


# --- constant decompression (constexpr_* ops) -----------------------------------------------------------


def _along(values: np.ndarray, rank: int, axis: int) -> np.ndarray:
    """A scalar or a vector laid along `axis` of a rank-`rank` tensor."""
    if values.ndim == 0:
        return values
    shape = [1] * rank
    shape[axis] = values.size
    return values.reshape(shape)


def _unpack_bits(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Row-major `bits`-wide unsigned fields, least significant bit first within each byte."""
    flat = np.unpackbits(packed.astype(np.uint8), bitorder="little")[: bits * count]
    return (flat.reshape(count, bits).astype(np.int64) << np.arange(bits)).sum(1)


def _repeat_blocks(block_values: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Each entry of `block_values` repeated over its block of a tensor of `shape` (each dim divides)."""
    out = block_values
    for axis, (blocks, size) in enumerate(zip(block_values.shape, shape)):
        out = np.repeat(out, size // blocks, axis=axis)
    return out


def decompress(op_type: str, args: Mapping[str, Any], opset: str = "") -> np.ndarray:
    """A `constexpr_*` op's dense value from its stored inputs."""
    if op_type == "constexpr_affine_dequantize":
        data = args["quantized_data"]
        axis = int(args["axis"]) % data.ndim
        zero = _along(np.asarray(args["zero_point"]), data.ndim, axis).astype(np.float32)
        scale = _along(np.asarray(args["scale"]), data.ndim, axis)
        return ((data.astype(np.float32) - zero) * scale.astype(np.float32)).astype(scale.dtype)
    if op_type == "constexpr_lut_to_dense" and "shape" in args:  # iOS16: one table, packed indices
        lut, shape = args["lut"], [int(s) for s in args["shape"]]
        indices = _unpack_bits(args["indices"], int(math.log2(lut.size)), int(np.prod(shape)))
        return lut[indices].reshape(shape)
    if op_type == "constexpr_lut_to_dense":  # iOS18: tables per block, indices unpacked by the loader
        indices, lut = np.asarray(args["indices"]).astype(np.int64), args["lut"]
        if lut.shape[-1] != 1:
            raise MILError("constexpr_lut_to_dense with vector palettes (vector_size > 1) is not supported by the "
                           "reference evaluator; palettize with scalar tables (rapsam-quantize does)")
        tables = lut[..., 0]  # (*blocks, palette)
        flat_tables = tables.reshape(-1, tables.shape[-1])
        block_ids = _repeat_blocks(np.arange(len(flat_tables)).reshape(tables.shape[:-1]), indices.shape)
        return flat_tables[block_ids, indices]
    if op_type == "constexpr_blockwise_shift_scale":
        data = args["data"].astype(np.float32)
        scale = args["scale"]
        offset = args.get("offset")
        if offset is not None:
            data = data - _repeat_blocks(np.asarray(offset), data.shape).astype(np.float32)
        return (data * _repeat_blocks(scale, data.shape).astype(np.float32)).astype(scale.dtype)
    raise MILError(f"MIL op {op_type} ({opset}) is not supported by the reference evaluator; "
                   "use a compression scheme of `rapsam-quantize --target coreml`")


# --- evaluation -----------------------------------------------------------------------------------------


class Args:
    """One op's inputs: tensors (floats as float32 for the arithmetic) and constant parameters as Python."""

    def __init__(self, op: MILOp, values: Mapping[str, Any]) -> None:
        self.op = op
        self._values = values

    def __contains__(self, key: str) -> bool:
        return key in self.op.inputs

    def t(self, key: str) -> torch.Tensor:
        (tensor,) = self.ts(key)
        return tensor

    def ts(self, key: str) -> list[torch.Tensor]:
        names = self.op.inputs[key]
        values = [_tensor(self._values[n]) for n in (names if isinstance(names, tuple) else (names,))]
        return [v.float() if v.is_floating_point() else v for v in values]

    def v(self, key: str, default: Any = None) -> Any:
        """A parameter as Python (int, float, bool, str or a list of them); `default` when absent."""
        if key not in self.op.inputs:
            return default
        value = self._values[self.op.inputs[key]]  # type: ignore[index]
        if isinstance(value, torch.Tensor):
            value = value.numpy()
        if isinstance(value, np.ndarray):
            return value.tolist()
        if isinstance(value, np.generic):
            return value.item()
        return value


def _tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    array = np.asarray(value)
    if array.dtype == np.uint16 or array.dtype == np.uint32:
        array = array.astype(np.int64)
    return torch.from_numpy(np.ascontiguousarray(array))


OpFn = Callable[[Args], torch.Tensor | Sequence[torch.Tensor]]
OPS: dict[str, OpFn] = {}


def _op(*names: str) -> Callable[[OpFn], OpFn]:
    def register(fn: OpFn) -> OpFn:
        for name in names:
            OPS[name] = fn
        return fn

    return register


def _store(value: torch.Tensor, var: MILVar, round_to_program: bool) -> torch.Tensor:
    """An op's output as the program stores it: fp16 rounded (or kept float32 in the shadow), ints as ints."""
    if var.dtype in FLOAT_DTYPES:
        return value.to(FLOAT_DTYPES[var.dtype] if round_to_program else torch.float32)
    if var.dtype in INT_DTYPES:
        return value.to(INT_DTYPES[var.dtype])
    raise MILError(f"output {var.name} has dtype {var.dtype}, which the reference evaluator does not hold")


def evaluate_op(op: MILOp, values: Mapping[str, Any], round_to_program: bool = True) -> list[torch.Tensor]:
    """Run one op on `values` (variable name -> tensor or constant) and store its outputs as the program does."""
    fn = OPS.get(op.type)
    if fn is None:
        raise MILError(f"MIL op {op.type} ({op.name}) is not implemented by the reference evaluator "
                       f"(rapsam.convert.mil.OPS); add it there with a test, or rewrite that part of the model")
    try:
        result = fn(Args(op, values))
    except MILError:
        raise
    except Exception as error:
        raise MILError(f"MIL op {op.type} ({op.name}) failed in the reference evaluator: {error}") from error
    results = [result] if isinstance(result, torch.Tensor) else list(result)
    if len(results) != len(op.outputs):
        raise MILError(f"MIL op {op.type} ({op.name}) made {len(results)} outputs, the program declares {len(op.outputs)}")
    stored = []
    for value, var in zip(results, op.outputs):
        if var.shape and tuple(value.shape) != var.shape:
            raise MILError(f"MIL op {op.type} ({op.name}) made shape {tuple(value.shape)} where the program "
                           f"declares {var.shape}: an evaluator bug, report it")
        stored.append(_store(value, var, round_to_program))
    return stored


def _feed(function: MILFunction, inputs: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    feeds = {}
    for var in function.inputs:
        if var.name not in inputs:
            raise MILError(f"function {function.name} needs input {var.name!r} (got {', '.join(inputs) or 'none'})")
        value = torch.from_numpy(np.ascontiguousarray(inputs[var.name]))
        if var.shape and tuple(value.shape) != var.shape:
            raise MILError(f"input {var.name} has shape {tuple(value.shape)}; function {function.name} takes {var.shape}")
        feeds[var.name] = _store(value.float() if value.is_floating_point() else value, var, True)
    return feeds


def _last_uses(function: MILFunction) -> dict[str, int]:
    last: dict[str, int] = {}
    for index, op in enumerate(function.ops):
        for names in op.inputs.values():
            for name in names if isinstance(names, tuple) else (names,):
                last[name] = index
    return last


def _release(env: dict[str, Any], function: MILFunction, last: Mapping[str, int], index: int, keep: set[str]) -> None:
    """Free the tensors no later op reads, so a full-size program fits in memory."""
    for names in function.ops[index].inputs.values():
        for name in names if isinstance(names, tuple) else (names,):
            if last.get(name) == index and name not in keep and name not in function.constants:
                env.pop(name, None)


def evaluate(function: MILFunction, inputs: Mapping[str, np.ndarray], *, round_to_program: bool = True,
             observe: Callable[[MILOp, list[torch.Tensor]], None] | None = None) -> dict[str, np.ndarray]:
    """The function's outputs (float32 / int32 numpy) for numpy inputs by name."""
    env: dict[str, Any] = dict(function.constants)
    env.update(_feed(function, inputs))
    last, keep = _last_uses(function), set(function.outputs)
    for index, op in enumerate(function.ops):
        outputs = evaluate_op(op, env, round_to_program)
        env.update((var.name, value) for var, value in zip(op.outputs, outputs))
        if observe is not None:
            observe(op, outputs)
        _release(env, function, last, index, keep)
    return {name: _numpy(env[name]) for name in function.outputs}


def _numpy(value: Any) -> np.ndarray:
    tensor = _tensor(value)
    return (tensor.float() if tensor.is_floating_point() else tensor).numpy()


# --- per-op audit ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpFinding:
    """One op the audit flags.

    kind: "overflow" (the op's fp16 output is non-finite where its float32 result is finite), "precision" (the
    op's own fp16 rounding, on the shadow's inputs as the program stores them, loses more than the limit), "drift" (the first op where
    the fp16 run departs from the shadow beyond the limit), "diverges" (the first op whose shadow value departs
    from the PyTorch node of the same name beyond the limit while its inputs agree with theirs: a semantic
    difference such as an axis, a padding or an operand order, not rounding). Errors other than overflow are
    mean absolute errors relative to the mean reference magnitude, so a threshold op (the hard mask) that
    flips a few pixels on a rounding does not count as losing its precision.
    """

    kind: str
    op: str
    name: str
    value: float
    limit: float

    def line(self) -> str:
        what = {"overflow": "fp16 overflow in", "precision": "fp16 precision loss in", "drift": "fp16 drift from",
                "diverges": "differs from PyTorch at"}[self.kind]
        value = (f"max |x| {self.value:.3g} > fp16 max" if self.kind == "overflow" else
                 f"no PyTorch node holds its value (relative error > {self.limit:g})" if self.kind == "diverges" else
                 f"relative error {self.value:.3g} > {self.limit:g}")
        return f"{what} {self.op} {self.name}: {value}"


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean absolute error relative to the mean reference magnitude; inf where only `value` is non-finite."""
    value, reference = value.double(), reference.double()
    finite = torch.isfinite(reference)
    if not bool(torch.isfinite(value)[finite].all()):
        return math.inf
    if not bool(finite.any()):
        return 0.0
    diff = (value - reference)[finite].abs().mean().item()
    scale = reference[finite].abs().mean().item()
    return diff / scale if scale > 0 else diff


# Ops that only move data: a layout Core ML's passes choose (a transposed copy, a slice of a fused matrix
# product) has no PyTorch node to match, and is never where a semantic difference starts.
_LAYOUT_OPS = frozenset({"transpose", "reshape", "expand_dims", "squeeze", "split", "slice_by_index",
                         "concat", "stack", "tile", "cast", "identity", "gather"})
_SAMPLES = 64  # elements compared first when matching a value against the PyTorch nodes of its shape


class ReferenceIndex:
    """The PyTorch graph's node values by shape, to find which of them an op's value is (Core ML's passes
    rename, fuse and split ops, so names do not tell)."""

    def __init__(self, values: Mapping[str, torch.Tensor], limit: float) -> None:
        self.limit = limit
        self._by_shape: dict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = {}
        for value in values.values():
            if value.is_floating_point() and value.numel():
                flat = value.detach().reshape(-1).float()  # float64 only inside relative_error: half the memory
                self._by_shape.setdefault(tuple(value.shape), []).append((flat, flat[self._positions(flat.numel())]))

    @staticmethod
    def _positions(count: int) -> torch.Tensor:
        return torch.linspace(0, count - 1, min(count, _SAMPLES)).long()

    def has_shape(self, value: torch.Tensor) -> bool:
        return tuple(value.shape) in self._by_shape

    def contains(self, value: torch.Tensor) -> bool:
        candidates = self._by_shape.get(tuple(value.shape))
        if not candidates or not value.is_floating_point():
            return False
        flat = value.reshape(-1).float()
        sample = flat[self._positions(flat.numel())]
        for full, sampled in candidates:
            if relative_error(sample, sampled) <= 4 * self.limit and relative_error(flat, full) <= self.limit:
                return True
        return False


def audit(function: MILFunction, inputs: Mapping[str, np.ndarray], *, precision_limit: float = 1e-2,
          drift_limit: float = 5e-2, reference: Mapping[str, torch.Tensor] | None = None,
          reference_limit: float = 1e-2) -> list[OpFinding]:
    """Run the program and its fp32 shadow in lockstep and flag ops (see `OpFinding`).

    `reference`: the PyTorch graph's node values on the same inputs (`torch_node_values`). The first op (not a
    data move) whose inputs the graph all holds, and whose shadow value no node of its shape holds, is where
    the program starts to compute something else. Values of shapes the graph never makes (Core ML fuses two
    matrix products into one, say) are not judged: a semantic slip keeps the shape."""
    rounded: dict[str, Any] = dict(function.constants)
    shadow: dict[str, Any] = dict(function.constants)
    feeds = _feed(function, inputs)
    rounded.update(feeds)
    shadow.update(feeds)
    dtypes = {var.name: var.dtype for var in function.inputs}
    dtypes.update((var.name, var.dtype) for op in function.ops for var in op.outputs)
    last, keep = _last_uses(function), set(function.outputs) | set(feeds)
    index = ReferenceIndex(reference, reference_limit) if reference is not None else None
    held: dict[str, bool] = {name: True for name in feeds}  # does the PyTorch graph hold this value?
    findings: list[OpFinding] = []
    drift_seen = diverged = False
    for position, op in enumerate(function.ops):
        exact = evaluate_op(op, shadow, round_to_program=False)
        fp16 = evaluate_op(op, rounded, round_to_program=True)
        # the op alone: its inputs as the program stores them, its output before and after its own rounding
        unrounded = evaluate_op(op, _rounded_inputs(op, shadow, dtypes), round_to_program=False)
        inputs_held = all(held.get(name, name in function.constants) for name in _input_names(op))
        for var, value, run, before in zip(op.outputs, exact, fp16, unrounded):
            shadow[var.name], rounded[var.name] = value, run
            if index is not None:
                held[var.name] = index.contains(value) if value.is_floating_point() else inputs_held
            if var.dtype != "fp16":
                continue
            alone = before.half()
            if not bool(torch.isfinite(alone).all()) and bool(torch.isfinite(before).all()):
                findings.append(OpFinding("overflow", op.type, var.name, float(before.abs().max()), FP16_MAX))
                continue
            loss = relative_error(alone, before)
            if loss > precision_limit:
                findings.append(OpFinding("precision", op.type, var.name, loss, precision_limit))
            drift = relative_error(run, value)
            if not drift_seen and drift > drift_limit:
                drift_seen = True
                findings.append(OpFinding("drift", op.type, var.name, drift, drift_limit))
        if index is not None and not diverged and op.type not in _LAYOUT_OPS and inputs_held:
            stray = next((v for v, value in zip(op.outputs, exact)
                          if value.is_floating_point() and index.has_shape(value) and not held[v.name]), None)
            if stray is not None:
                diverged = True
                findings.append(OpFinding("diverges", op.type, stray.name, math.nan, reference_limit))
        _release(rounded, function, last, position, keep)
        _release(shadow, function, last, position, keep)
    return findings


def _input_names(op: MILOp) -> Iterator[str]:
    for names in op.inputs.values():
        yield from names if isinstance(names, tuple) else (names,)


def _rounded_inputs(op: MILOp, shadow: Mapping[str, Any], dtypes: Mapping[str, str]) -> dict[str, Any]:
    """The shadow's inputs of `op` rounded to fp16 where the program stores them in fp16."""
    values = {}
    for name in _input_names(op):
        value = shadow[name]
        values[name] = value.half() if dtypes.get(name) == "fp16" and isinstance(value, torch.Tensor) else value
    return values


def torch_node_values(program: torch.export.ExportedProgram, inputs: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every tensor node's value of an exported program (after `run_decompositions`) on `inputs`, by node name."""
    values: dict[str, torch.Tensor] = {}
    module = program.module()

    class Recorder(torch.fx.Interpreter):
        def run_node(self, node: torch.fx.Node) -> Any:
            result = super().run_node(node)
            if isinstance(result, torch.Tensor):
                values[node.name] = result.detach()
            return result

    with torch.no_grad():
        Recorder(module).run(*inputs)
    return values


# --- the ops --------------------------------------------------------------------------------------------

_BINARY: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "maximum": torch.maximum, "minimum": torch.minimum,
    "pow": torch.pow, "equal": torch.eq, "not_equal": torch.ne, "greater": torch.gt,
    "greater_equal": torch.ge, "less": torch.lt, "less_equal": torch.le,
    "logical_and": torch.logical_and, "logical_or": torch.logical_or,
}


@_op(*_BINARY)
def _binary(a: Args) -> torch.Tensor:
    return _BINARY[a.op.type](a.t("x"), a.t("y"))


@_op("real_div")
def _real_div(a: Args) -> torch.Tensor:
    return torch.div(a.t("x").float(), a.t("y").float())


_UNARY: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "abs": torch.abs, "ceil": torch.ceil, "floor": torch.floor, "round": torch.round, "cos": torch.cos, "sin": torch.sin,
    "erf": torch.erf, "exp": torch.exp, "sqrt": torch.sqrt, "square": torch.square, "tanh": torch.tanh,
    "relu": torch.relu, "sigmoid": torch.sigmoid, "silu": F.silu, "logical_not": torch.logical_not,
    "identity": lambda x: x, "relu6": F.relu6,
}


@_op(*_UNARY)
def _unary(a: Args) -> torch.Tensor:
    return _UNARY[a.op.type](a.t("x"))


@_op("rsqrt")
def _rsqrt(a: Args) -> torch.Tensor:
    return torch.rsqrt(a.t("x") + a.v("epsilon", 1e-12))


@_op("log")
def _log(a: Args) -> torch.Tensor:
    return torch.log(a.t("x") + a.v("epsilon", 1e-45))


@_op("clip")
def _clip(a: Args) -> torch.Tensor:
    return torch.clamp(a.t("x"), a.v("alpha"), a.v("beta"))


@_op("leaky_relu")
def _leaky_relu(a: Args) -> torch.Tensor:
    return F.leaky_relu(a.t("x"), a.v("alpha", 0.01))


@_op("sigmoid_hard")
def _sigmoid_hard(a: Args) -> torch.Tensor:
    return torch.clamp(a.v("alpha", 0.2) * a.t("x") + a.v("beta", 0.5), 0.0, 1.0)


@_op("gelu")
def _gelu(a: Args) -> torch.Tensor:
    x, mode = a.t("x"), a.v("mode", "EXACT")
    if mode == "EXACT":
        return F.gelu(x)
    if mode == "TANH_APPROXIMATION":
        return F.gelu(x, approximate="tanh")
    if mode == "SIGMOID_APPROXIMATION":
        return x * torch.sigmoid(1.702 * x)
    raise MILError(f"gelu mode {mode!r} is not one the reference evaluator knows")


@_op("softmax")
def _softmax(a: Args) -> torch.Tensor:
    return torch.softmax(a.t("x"), dim=a.v("axis", -1))


@_op("cast")
def _cast(a: Args) -> torch.Tensor:
    x, dtype = a.t("x"), a.v("dtype")
    if dtype in INT_DTYPES and dtype != "bool" and x.is_floating_point():
        return torch.trunc(x)  # Core ML casts float -> int toward zero, as C does
    return x


def _axes(a: Args, key: str = "axes") -> list[int] | None:
    axes = a.v(key)
    return None if axes is None else [int(axes)] if isinstance(axes, int) else [int(x) for x in axes]


def _reduce(fn: Callable[..., torch.Tensor]) -> OpFn:
    def run(a: Args) -> torch.Tensor:
        x, axes = a.t("x"), _axes(a)
        dims = list(range(x.dim())) if axes is None else axes
        return fn(x, dims, bool(a.v("keep_dims", False)))

    return run


OPS["reduce_sum"] = _reduce(lambda x, d, k: torch.sum(x, d, keepdim=k))
OPS["reduce_mean"] = _reduce(lambda x, d, k: torch.mean(x, d, keepdim=k))
OPS["reduce_max"] = _reduce(lambda x, d, k: torch.amax(x, d, keepdim=k))
OPS["reduce_min"] = _reduce(lambda x, d, k: torch.amin(x, d, keepdim=k))
OPS["reduce_l2_norm"] = _reduce(lambda x, d, k: torch.sqrt(torch.sum(x * x, d, keepdim=k)))


@_op("reduce_argmax")
def _reduce_argmax(a: Args) -> torch.Tensor:
    return torch.argmax(a.t("x"), dim=a.v("axis", -1), keepdim=bool(a.v("keep_dims", False)))


@_op("linear")
def _linear(a: Args) -> torch.Tensor:
    return F.linear(a.t("x"), a.t("weight"), a.t("bias") if "bias" in a else None)


@_op("matmul")
def _matmul(a: Args) -> torch.Tensor:
    x, y = a.t("x"), a.t("y")
    if a.v("transpose_x", False):
        x = x.transpose(-1, -2)
    if a.v("transpose_y", False):
        y = y.transpose(-1, -2)
    return torch.matmul(x, y)


def _conv_padding(a: Args, x: torch.Tensor, kernel: Sequence[int], strides: Sequence[int],
                  dilations: Sequence[int]) -> list[int]:
    """(begin, end) per spatial dim for `pad_type`."""
    pad_type = a.v("pad_type", "valid")
    spatial = x.shape[2:]
    if pad_type == "custom":
        return [int(p) for p in a.v("pad")]
    if pad_type == "valid":
        return [0] * (2 * len(spatial))
    if pad_type in ("same", "same_lower"):
        pads = []
        for size, k, s, d in zip(spatial, kernel, strides, dilations):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small, large = total // 2, total - total // 2
            pads += [small, large] if pad_type == "same" else [large, small]
        return pads
    raise MILError(f"pad_type {pad_type!r} is not one the reference evaluator knows")


def _torch_pad(pads: Sequence[int]) -> list[int]:
    """MIL's (begin, end) pairs, leading dim first, as F.pad takes them: last dim first."""
    return [p for i in reversed(range(len(pads) // 2)) for p in pads[2 * i: 2 * i + 2]]


def _strides_dilations(a: Args, spatial: int) -> tuple[list[int], list[int]]:
    return a.v("strides", [1] * spatial), a.v("dilations", [1] * spatial)


@_op("conv")
def _conv(a: Args) -> torch.Tensor:
    x, weight = a.t("x"), a.t("weight")
    spatial = x.dim() - 2
    strides, dilations = _strides_dilations(a, spatial)
    x = F.pad(x, _torch_pad(_conv_padding(a, x, weight.shape[2:], strides, dilations)))
    conv = (F.conv1d, F.conv2d, F.conv3d)[spatial - 1]
    return conv(x, weight, a.t("bias") if "bias" in a else None, stride=strides, dilation=dilations,
                groups=a.v("groups", 1))


@_op("conv_transpose")
def _conv_transpose(a: Args) -> torch.Tensor:
    x, weight = a.t("x"), a.t("weight")
    spatial = x.dim() - 2
    strides, dilations = _strides_dilations(a, spatial)
    groups = a.v("groups", 1)
    transpose = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[spatial - 1]
    full = transpose(x, weight, a.t("bias") if "bias" in a else None, stride=strides, dilation=dilations, groups=groups)
    pad_type = a.v("pad_type", "valid")
    if "output_shape" in a and a.v("output_shape") is not None:
        out = [int(s) for s in a.v("output_shape")][2:]
        pads = [p for size, want in zip(full.shape[2:], out) for p in ((size - want) // 2, size - want - (size - want) // 2)]
    elif pad_type == "custom":
        pads = [int(p) for p in a.v("pad")]
    elif pad_type == "valid":
        pads = [0] * (2 * spatial)
    elif pad_type == "same":
        extra = [size - x.shape[2 + i] * s for i, (size, s) in enumerate(zip(full.shape[2:], strides))]
        pads = [p for e in extra for p in (e // 2, e - e // 2)]
    else:
        raise MILError(f"conv_transpose pad_type {pad_type!r} is not one the reference evaluator knows")
    index = [slice(None), slice(None)] + [slice(pads[2 * i], full.shape[2 + i] - pads[2 * i + 1]) for i in range(spatial)]
    return full[tuple(index)]


@_op("layer_norm")
def _layer_norm(a: Args) -> torch.Tensor:
    x = a.t("x")
    axes = _axes(a) or list(range(x.dim()))
    mean = x.mean(axes, keepdim=True)
    variance = ((x - mean) ** 2).mean(axes, keepdim=True)
    y = (x - mean) / torch.sqrt(variance + a.v("epsilon", 1e-5))
    if "gamma" in a:
        y = y * _broadcast_trailing(a.t("gamma"), x, axes)
    if "beta" in a:
        y = y + _broadcast_trailing(a.t("beta"), x, axes)
    return y


def _broadcast_trailing(param: torch.Tensor, x: torch.Tensor, axes: Sequence[int]) -> torch.Tensor:
    """gamma / beta have the shape of x over `axes`: lay them out along those axes."""
    shape = [1] * x.dim()
    for axis, size in zip(sorted(a % x.dim() for a in axes), param.shape):
        shape[axis] = size
    return param.reshape(shape)


@_op("batch_norm")
def _batch_norm(a: Args) -> torch.Tensor:
    return F.batch_norm(a.t("x"), a.t("mean"), a.t("variance"), a.t("gamma") if "gamma" in a else None,
                        a.t("beta") if "beta" in a else None, training=False, eps=a.v("epsilon", 1e-5))


def _pool(a: Args, average: bool) -> torch.Tensor:
    x = a.t("x")
    kernel = a.v("kernel_sizes")
    strides = a.v("strides", [1] * len(kernel))
    spatial = len(kernel)
    flat = _torch_pad(_conv_padding(a, x, kernel, strides, [1] * spatial))
    if average:
        count = F.pad(torch.ones_like(x[:1, :1]), flat) if a.v("exclude_padding_from_average", False) else None
        x = F.pad(x, flat)
        pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[spatial - 1]
        total = pool(x, kernel, strides, ceil_mode=bool(a.v("ceil_mode", False)))
        return total if count is None else total / pool(count, kernel, strides, ceil_mode=bool(a.v("ceil_mode", False)))
    x = F.pad(x, flat, value=-math.inf)
    pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[spatial - 1]
    return pool(x, kernel, strides, ceil_mode=bool(a.v("ceil_mode", False)))


OPS["avg_pool"] = lambda a: _pool(a, True)
OPS["max_pool"] = lambda a: _pool(a, False)


@_op("concat")
def _concat(a: Args) -> torch.Tensor:
    values = _common(a.ts("values"))
    axis = a.v("axis") % values[0].dim()
    if a.v("interleave", False):  # a0, b0, a1, b1, ... along the axis
        return torch.stack(values, axis + 1).flatten(axis, axis + 1)
    return torch.cat(values, axis)


def _common(values: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    floating = any(v.is_floating_point() for v in values)
    return [v.float() if floating else v for v in values]


@_op("stack")
def _stack(a: Args) -> torch.Tensor:
    return torch.stack(_common(a.ts("values")), a.v("axis"))


@_op("split")
def _split(a: Args) -> list[torch.Tensor]:
    x, axis = a.t("x"), a.v("axis")
    sizes = a.v("split_sizes")
    if sizes is None:
        count = a.v("num_splits")
        sizes = [x.shape[axis] // count] * count
    return list(torch.split(x, [int(s) for s in sizes], axis))


@_op("reshape")
def _reshape(a: Args) -> torch.Tensor:
    x, shape = a.t("x"), [int(s) for s in a.v("shape")]
    shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]  # 0 copies the input's dim
    return x.reshape(shape)


@_op("transpose")
def _transpose(a: Args) -> torch.Tensor:
    return a.t("x").permute(*[int(p) for p in a.v("perm")])


@_op("expand_dims")
def _expand_dims(a: Args) -> torch.Tensor:
    x, axes = a.t("x"), _axes(a)
    rank = x.dim() + len(axes)
    for axis in sorted(axis % rank for axis in axes):
        x = x.unsqueeze(axis)
    return x


@_op("squeeze")
def _squeeze(a: Args) -> torch.Tensor:
    x, axes = a.t("x"), _axes(a)
    if axes is None:
        return x.squeeze()
    return x.squeeze(tuple(axis % x.dim() for axis in axes)) if axes else x


@_op("tile")
def _tile(a: Args) -> torch.Tensor:
    return a.t("x").repeat(*[int(r) for r in a.v("reps")])


@_op("slice_by_index")
def _slice_by_index(a: Args) -> torch.Tensor:
    x = a.t("x")
    rank = x.dim()
    begin, end = [int(b) for b in a.v("begin")], [int(e) for e in a.v("end")]
    stride = [int(s) for s in a.v("stride", [1] * rank)]
    begin_mask = a.v("begin_mask", [False] * rank)
    end_mask = a.v("end_mask", [False] * rank)
    squeeze_mask = a.v("squeeze_mask", [False] * rank)
    index: list[Any] = []
    for i in range(rank):
        if squeeze_mask[i]:
            index.append(begin[i])
            continue
        size = x.shape[i]
        if stride[i] > 0:
            start = 0 if begin_mask[i] else begin[i]
            stop = size if end_mask[i] else end[i]
            index.append(slice(start, stop, stride[i]))
        else:  # torch has no negative steps: flip, then slice forward
            start = size - 1 if begin_mask[i] else begin[i] % size
            stop = -1 if end_mask[i] else end[i] % size if end[i] >= -size else -1
            positions = list(range(start, stop, stride[i]))
            index.append(torch.tensor(positions, dtype=torch.long))
    result = x
    # advanced indices would broadcast together: apply them one axis at a time
    axis = 0
    for item in index:
        if isinstance(item, int):
            result = result.select(axis, item)
            continue
        if isinstance(item, torch.Tensor):
            result = result.index_select(axis, item)
        else:
            result = result[(slice(None),) * axis + (item,)]
        axis += 1
    return result


@_op("gather")
def _gather(a: Args) -> torch.Tensor:
    x, indices, axis = a.t("x"), a.t("indices").long(), a.v("axis", 0) % a.t("x").dim()
    if a.v("batch_dims", 0):
        raise MILError("gather with batch_dims is not supported by the reference evaluator")
    indices = torch.where(indices < 0, indices + x.shape[axis], indices)
    flat = x.index_select(axis, indices.reshape(-1))
    return flat.reshape(x.shape[:axis] + indices.shape + x.shape[axis + 1:])


@_op("fill_like")
def _fill_like(a: Args) -> torch.Tensor:
    return torch.full(tuple(a.t("ref_tensor").shape), float(a.v("value", 0.0)))


@_op("select")
def _select(a: Args) -> torch.Tensor:
    return torch.where(a.t("cond").bool(), *_common([a.t("a"), a.t("b")]))


@_op("pad")
def _pad(a: Args) -> torch.Tensor:
    x, pads = a.t("x"), [int(p) for p in a.v("pad")]
    mode = a.v("mode", "constant")
    flat = _torch_pad(pads)
    while len(flat) > 2 and flat[-2:] == [0, 0]:  # unpadded leading dims: torch's reflect/replicate pad the last few
        flat = flat[:-2]
    if mode == "constant":
        return F.pad(x, flat, value=float(a.v("constant_val", 0.0)))
    torch_mode = {"reflect": "reflect", "replicate": "replicate"}.get(mode)
    if torch_mode is None:
        raise MILError(f"pad mode {mode!r} is not one the reference evaluator knows")
    return F.pad(x, flat, mode=torch_mode)


# --- resampling ---


def _source_positions(in_size: int, out_size: int, align_corners: bool, half_pixel: bool) -> torch.Tensor:
    """Where each output pixel samples the input along one axis (bilinear), in input pixels."""
    out = torch.arange(out_size, dtype=torch.float64)
    if align_corners:
        return out * ((in_size - 1) / (out_size - 1)) if out_size > 1 else torch.zeros(out_size, dtype=torch.float64)
    ratio = in_size / out_size
    if half_pixel:
        return ((out + 0.5) * ratio - 0.5).clamp(min=0.0)
    return out * ratio


def _lerp_axis(x: torch.Tensor, axis: int, positions: torch.Tensor) -> torch.Tensor:
    size = x.shape[axis]
    low = positions.floor().clamp(0, size - 1)
    high = (low + 1).clamp(max=size - 1)
    weight = (positions - low).clamp(0, 1).to(torch.float32)
    shape = [1] * x.dim()
    shape[axis] = len(positions)
    lo = x.index_select(axis, low.long())
    hi = x.index_select(axis, high.long())
    return lo + (hi - lo) * weight.reshape(shape)


@_op("upsample_bilinear")
def _upsample_bilinear(a: Args) -> torch.Tensor:
    x = a.t("x")
    align = bool(a.v("align_corners", False))
    half_pixel = bool(a.v("half_pixel_centers", not align))
    height = math.floor(x.shape[-2] * a.v("scale_factor_height", 1))
    width = math.floor(x.shape[-1] * a.v("scale_factor_width", 1))
    x = _lerp_axis(x, x.dim() - 2, _source_positions(x.shape[-2], height, align, half_pixel))
    return _lerp_axis(x, x.dim() - 1, _source_positions(x.shape[-1], width, align, half_pixel))


@_op("resample")
def _resample(a: Args) -> torch.Tensor:
    x, grid = a.t("x"), a.t("coordinates").float()
    mode = a.v("coordinates_mode", "normalized_minus_one_to_one")
    align = bool(a.v("align_corners", False))
    height, width = x.shape[-2], x.shape[-1]
    size = torch.tensor([width, height], dtype=torch.float32)
    if mode == "normalized_zero_to_one":
        grid = grid * 2 - 1
    elif mode == "unnormalized":  # pixel indices -> [-1, 1] in the convention of `align`
        grid = grid * 2 / (size - 1) - 1 if align else (grid * 2 + 1) / size - 1
    elif mode != "normalized_minus_one_to_one":
        raise MILError(f"resample coordinates_mode {mode!r} is not one the reference evaluator knows")
    padding = a.v("padding_mode", "constant")
    sampling = a.v("sampling_mode", "bilinear")
    torch_padding = {"constant": "zeros", "border": "border", "reflection": "reflection"}.get(padding)
    if torch_padding is None or sampling not in ("bilinear", "nearest"):
        raise MILError(f"resample padding_mode {padding!r} / sampling_mode {sampling!r} is not supported by the "
                       "reference evaluator")
    fill = float(a.v("padding_value", 0.0)) if padding == "constant" else 0.0
    # a constant pad value v: sample (x - v) with zeros outside, then add v back (the weights sum to 1)
    sampled = F.grid_sample(x - fill, grid, mode=sampling, padding_mode=torch_padding, align_corners=align)
    return sampled + fill


# --- quantized activations (w8a8) ---


def _quant_params(a: Args, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    axis = a.v("axis")
    scale = a.t("scale").float()
    zero = a.t("zero_point").float() if "zero_point" in a else torch.zeros(())
    if scale.dim() == 1 and axis is not None:
        shape = [1] * rank
        shape[axis % rank] = -1
        scale = scale.reshape(shape)
        zero = zero.reshape(shape) if zero.dim() == 1 else zero
    return scale, zero


@_op("quantize")
def _quantize(a: Args) -> torch.Tensor:
    x = a.t("input")
    scale, zero = _quant_params(a, x.dim())
    low, high = (-128, 127) if a.v("output_dtype") == "int8" else (0, 255)
    return torch.clamp(torch.round(x / scale) + zero, low, high)


@_op("dequantize")
def _dequantize(a: Args) -> torch.Tensor:
    x = a.t("input").float()
    scale, zero = _quant_params(a, x.dim())
    return (x - zero) * scale


def iter_unsupported(function: MILFunction) -> Iterator[str]:
    return (op for op in function.op_types if op not in OPS)


# --- the runner the parity checker uses -----------------------------------------------------------------


class MILRunner:
    """A converted Core ML folder's entry points through the reference evaluator (any OS)."""

    def __init__(self, folder: Path, entry_files: Mapping[str, str], entry_methods: Mapping[str, str | None],
                 image_input: bool) -> None:
        from rapsam.convert.base import package_version

        self._folder, self._files, self._methods = folder, entry_files, entry_methods
        self._image_input = image_input
        self._functions: dict[str, MILFunction] = {}
        functions = [self.function(entry) for entry in entry_files]  # an op the evaluator lacks fails here
        mode = "fp16-simulated" if any(f.computes_fp16 for f in functions) else "fp32"
        self.runtime = f"MIL reference, {mode} (coremltools {package_version('coremltools')} program, torch CPU ops)"

    def function(self, entry: str) -> MILFunction:
        if entry not in self._functions:
            function = load_function(self._folder / self._files[entry], self._methods.get(entry))
            missing = list(iter_unsupported(function))
            if missing:
                raise MILError(f"{entry}: MIL ops {', '.join(missing)} are not implemented by the reference evaluator "
                               "(rapsam.convert.mil.OPS); add them there with tests")
            self._functions[entry] = function
        return self._functions[entry]

    def feeds(self, entry: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Inputs as Core ML receives them: an image input arrives as 8-bit RGB pixels."""
        from rapsam.convert.coreml import IMAGE_INPUTS

        return {name: np.clip(np.rint(value), 0, 255).astype(np.float32)
                if self._image_input and name in IMAGE_INPUTS else value for name, value in inputs.items()}

    def run(self, entry: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from rapsam.export import get_entry_point

        outputs = evaluate(self.function(entry), self.feeds(entry, inputs))
        return {name: outputs[name].astype(np.float32) for name in get_entry_point(entry).outputs}

    def diagnose(self, model: torch.nn.Module, entry: str, inputs: Mapping[str, np.ndarray],
                 input_size: tuple[int, int], num_prompts: int) -> list[str]:
        """The per-op audit of one entry point on one input, against the PyTorch graph of the same export."""
        from rapsam.export import export_entry_point, get_entry_point

        feeds = self.feeds(entry, inputs)
        program = export_entry_point(model, entry, input_size=input_size, num_prompts=num_prompts)
        program = program.run_decompositions({})
        reference = torch_node_values(program, [torch.from_numpy(feeds[n]) for n in get_entry_point(entry).inputs])
        return [finding.line() for finding in audit(self.function(entry), feeds, reference=reference)]
