"""ExecuTorch target: one `model.pte` with one method per entry point, run by `executorch.runtime`.

Pipeline per request (one straight line, as in ExecuTorch's `examples/xnnpack/aot_compiler.py`):
`rapsam.export.export_entry_point` per entry -> `constant_prop_pass` -> `to_edge_transform_and_lower`
of all entries at once (one method each) -> `to_executorch` -> `model.pte`.

- backend "xnnpack" (default): the XNNPACK delegate takes every op it supports, portable kernels run the
  rest. Which ops stayed outside the delegate, per method, is measured on the lowered graph and reported
  in `ConvertedFiles.info` (and so in the manifest): `non_delegated_ops` {method: {op: count}}, plus
  `delegated_nodes` and `delegate_calls` per method. "portable": no delegate, portable kernels only.
- backend "coreml": ExecuTorch's Core ML delegate (coremltools; lowers on Linux) for iOS/macOS apps; every
  op of every method goes into the delegate. Its `.pte` runs only on Apple devices (no parity here), and
  its bytes are not deterministic: executorch's `CoreMLBackend.preprocess_model` names each payload
  `executorch_<uuid4>` inside the delegate blob.
  "mps" is refused: executorch 1.5 ships no MPS backend, and its Metal successor needs macOS to compile.
- `strict_delegation=True` refuses a program in which a compute op would run on portable kernels. A
  compute op is any op except data movement (views, reshapes, permutes, expands, slices, selects, row
  gathers (index_select), splits, cat, clones, dtype / dim-order copies, getitem) and tensor creation from
  shapes alone (arange, full, zeros, ...): those cost a copy or a fill, not arithmetic.
- fp32 on XNNPACK: LayerNorms and channel means become products with a 1/C vector, splits slices and
  squeezes views (`float_rewrites`), and the deformable convs sample by row gathers ("gather_pixels_last"),
  so that every compute op of `encode` and `segment` runs in the delegate (`prompt` leaves the padding
  slots' `ge` + `where`; a classifier with several prototypes per class also leaves their `amax`).
- Precision: fp32 by default; fp16 computes in fp16 inside the graph (`export_entry_point(half=True)`)
  behind the contract's fp32 inputs/outputs ("coreml": Core ML's compute precision instead). XNNPACK
  takes the fp16 ops as it takes the fp32 ones, in the same forms (row gathers, slices and views; not the
  reduction products, whose squares overflow fp16); the fp32<->fp16 casts run portable (the deformable
  convs' sampling positions among them: fp16 cannot hold their flat indices), and so does LayerNorm, which
  is computed in fp32 (see `_layer_norm_in_fp32`).
- Manifest: the `.pte` format has no free-form metadata field, so the manifest is carried as a constant
  method `manifest` returning the JSON as a string EValue (what `to_edge(constant_methods=...)` emits).
  `embed_manifest` adds it to the finished program (deserialize -> add the method -> serialize), so the
  entry methods are untouched and the same manifest text gives the same file. Any ExecuTorch runtime reads
  it by executing `manifest` with no inputs (output 0 is the string), e.g. in Python
  `Runtime.get().load_program(path).load_method("manifest").execute([])[0]`. `manifest.json` beside the
  `.pte` is the same text.
- Deterministic bytes (xnnpack, portable): converting twice with the same inputs writes the same `model.pte`.
"""

from __future__ import annotations

import contextlib
import functools
import operator
import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from rapsam.convert.base import ConversionError, ConvertedFiles, TargetRequest, package_version
from rapsam.export import export_entry_point, get_entry_point
from rapsam.models.backbones.edgenext import block_form, kernel_form
from rapsam.models.deform_conv import deform_sampler
from rapsam.models.head import pixel_pooling
from rapsam.models.rapsam import RapSAM

FILE_NAME = "model.pte"
MANIFEST_METHOD = "manifest"
BACKENDS = ("xnnpack", "portable", "coreml")
DELEGATES = {"xnnpack": "XNNPACK", "coreml": "Core ML"}
# A backend ExecuTorch has for Apple devices that cannot lower on Linux, and why.
UNAVAILABLE_BACKENDS = {
    "mps": "executorch 1.5 ships no MPS backend and its Metal successor compiles only on macOS, not on Linux; "
           "use backend=coreml (or --target coreml) for Apple GPUs and the Neural Engine",
}
# Ops that move, reshape, cast or create data without arithmetic on values (see the module docstring).
DATA_MOVEMENT_OPS = frozenset({
    "view_copy", "reshape", "squeeze_copy", "unsqueeze_copy", "permute_copy", "transpose_copy", "t_copy",
    "expand_copy", "slice_copy", "select_copy", "split_copy", "split_with_sizes_copy", "unbind_copy", "cat",
    "index_select",
    "clone", "_clone_dim_order", "_to_copy", "_to_dim_order_copy", "alias_copy", "getitem",
    "arange", "full", "full_like", "zeros", "zeros_like", "ones", "ones_like", "empty", "scalar_tensor",
})


@dataclass(frozen=True)
class ExecuTorchOptions:
    backend: str
    strict_delegation: bool

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> ExecuTorchOptions:
        merged = {**CONVERTER.option_defaults, **options}
        backend, strict = merged["backend"], merged["strict_delegation"]
        if backend in UNAVAILABLE_BACKENDS:
            raise ConversionError(f"executorch backend={backend!r} cannot lower here: {UNAVAILABLE_BACKENDS[backend]}")
        if backend not in BACKENDS:
            raise ConversionError(f"executorch option backend={backend!r} is not one of {', '.join(BACKENDS)}")
        if not isinstance(strict, bool):
            raise ConversionError(f"executorch option strict_delegation={strict!r} must be true or false")
        if strict and backend == "portable":
            raise ConversionError("executorch strict_delegation=true needs a delegate: use backend=xnnpack or coreml")
        return cls(backend, strict)


class ExecuTorchConverter:
    name = "executorch"
    extra = "executorch"
    packages = ("executorch",)
    default_precision = "fp32"
    option_defaults = MappingProxyType({"backend": "xnnpack", "strict_delegation": False})

    def versions(self) -> dict[str, str]:
        return {"executorch": package_version("executorch")}

    def convert(self, model: RapSAM, request: TargetRequest, folder: Path) -> ConvertedFiles:
        options = ExecuTorchOptions.parse(request.options)
        edge = _lower(model, request, options)
        delegation = {entry: _delegation(edge.exported_program(entry)) for entry in request.entry_points}
        if options.strict_delegation:
            _check_strict(delegation, options.backend)
        program = _to_executorch(edge)
        if options.backend != "coreml":
            check_methods_load(program, request.entry_points)
        (folder / FILE_NAME).write_bytes(program)
        return ConvertedFiles(
            entry_files={entry: FILE_NAME for entry in request.entry_points},
            entry_methods={entry: entry for entry in request.entry_points},
            info={
                "backend": options.backend,
                "manifest_method": MANIFEST_METHOD,
                "non_delegated_ops": {entry: d.outside for entry, d in delegation.items()},
                "delegated_nodes": {entry: d.delegated_nodes for entry, d in delegation.items()},
                "delegate_calls": {entry: d.delegate_calls for entry, d in delegation.items()},
            },
        )

    def embed_manifest(self, folder: Path, files: ConvertedFiles, manifest: str) -> None:
        """Add (or replace) the constant method `manifest` returning the JSON text; see the module docstring."""
        path = folder / FILE_NAME
        staged = path.with_name(path.name + ".tmp")
        staged.write_bytes(with_constant_method(path.read_bytes(), MANIFEST_METHOD, manifest))
        os.replace(staged, path)  # a new file: a Runner still holding the old program is not disturbed

    def open(self, folder: Path, files: ConvertedFiles) -> ExecuTorchRunner | str:
        if files.info.get("backend") == "coreml":
            return "ExecuTorch's Core ML delegate runs only on iOS/macOS"
        return ExecuTorchRunner(folder / FILE_NAME)


# --- lowering ------------------------------------------------------------------------------------------


def _lower(model: RapSAM, request: TargetRequest, options: ExecuTorchOptions) -> Any:
    """All entry points as one EdgeProgramManager, one method each, lowered to the chosen backend."""
    # Core ML computes in its own precision (a compile spec), so it gets the fp32 program either way.
    half = request.precision == "fp16" and options.backend != "coreml"
    xnnpack = options.backend == "xnnpack"
    programs = {}
    for entry in request.entry_points:
        with xnnpack_forms(model) if xnnpack else contextlib.nullcontext():
            program = export_entry_point(model, entry, input_size=request.input_size,
                                         num_prompts=request.num_prompts, half=half)
        programs[entry] = folded(program, float_rewrites(xnnpack=xnnpack, half=half))
    try:
        return lower_programs(programs, options.backend, request.precision)
    except Exception as exc:  # lowering raises many types; the first line names the op
        raise ConversionError(f"executorch could not lower {', '.join(programs)} for {options.backend}: "
                              f"{_first_line(exc)}; write that part of the model with core ATen ops "
                              "ExecuTorch has kernels for") from exc


@contextlib.contextmanager
def xnnpack_forms(model: RapSAM) -> Iterator[None]:
    """Inside the block, the model traces to the op sequences XNNPACK runs fastest, with the same values:
    the deformable convs sample by pixels-last row gathers (ExecuTorch's grid_sampler_2d is a portable kernel),
    depthwise kernels over 5x5 split into column groups that XNNPACK's depthwise kernels take, EdgeNeXt's
    blocks compute on the (B, C, H, W) map, with no permutes between its convs and its linears, and the
    decoder pools the features in chunks of pixels that stay in cache (`PixelFeatures`)."""
    with (deform_sampler(model, "gather_pixels_last"), kernel_form(model, "column_groups"),
          block_form(model, "channels_first"), pixel_pooling(model, "pixel_chunks")):
        yield


def folded(program: Any, rewrites: Mapping[Any, Any], *, skip_targets: set[Any] | None = None) -> Any:
    """`program` with its constant subgraphs folded, before and after the `rewrites` decompositions. Folding
    turns weights sliced from packed parameters (the attention's in_proj) and the deformable conv's constant
    sampling grid into plain constants: XNNPACK only takes linears with static weights. `skip_targets`: ops
    never folded (None: constant_prop_pass's defaults)."""
    from executorch.exir.passes.constant_prop_pass import constant_prop_pass

    program = _own_storage(constant_prop_pass(program, custom_skip_targets=skip_targets))
    if rewrites:
        # After a first fold: decomposing turns the reshape of a permuted weight into clone + _unsafe_view,
        # which constant_prop_pass leaves unfolded (and XNNPACK then refuses the linear).
        program = program.run_decompositions(rewrites)
        program = _own_storage(constant_prop_pass(program, custom_skip_targets=skip_targets))
    return program


def _own_storage(program: Any) -> Any:
    """Give every folded constant its own storage: `constant_prop_pass` keeps split results as views into
    the packed tensor (storage offsets 0, d, 2d for q, k, v), and XNNPACK's weight serialisation in
    executorch 1.5.1 ignores the offset: without this the attention outputs were wrong by ~100%. Detached,
    too: a slice of a parameter still requires grad when the pass runs `aten.slice` under no_grad, and
    torch.export warns for each such constant whenever it unlifts the program (119 lines for the default model)."""
    for name, value in program.constants.items():
        if hasattr(value, "detach"):
            program.constants[name] = value.detach().clone()
    return program


def quantized_rewrites(program: Any) -> Any:
    """A quantized program with `float_rewrites`' XNNPACK decompositions but the splits, applied after
    quantization so that the products they write stay fp32 (see `_reduction_decompositions`). Splits stay: as
    slices of int8 tensors, XNNPACK failed the tiny model's int8 `encode` at its first call ("Propagating input
    shapes failed") and computed its `prompt` masks wrong (cosine -0.24 to fp32). The rest gave the same
    values: EdgeNeXt-S's int8 `segment` went from 29 to 17 delegate calls (1.38x -> 1.54x over fp32, VNNI host)."""
    return program.run_decompositions({**_reduction_decompositions(), **_data_movement_decompositions(splits=False)})


def float_rewrites(*, xnnpack: bool, half: bool) -> dict[Any, Any]:
    """The decompositions `_lower` applies to an exported float program, with the same values.

    For XNNPACK: splits and chunks as slices, unbind / select / squeeze as slices and views, detach gone.
    XNNPACK takes slices and views but no split, squeeze, select or alias: each of those ran as a portable
    copy and cut the delegate in two, with layout changes at the cut (EdgeNeXt-S's `segment` was 26 delegate
    calls; now 4, one per stretch between the deformable convs' gathers). Products of 3-D tensors as `bmm`,
    without the copying reshapes of `matmul`'s decomposition. In fp32 also the reductions of
    `_reduction_decompositions`; in fp16 only its sums (the pooling's sum over chunks of pixels), as the
    squares of the others overflow and LayerNorm computes in fp32 instead (`_layer_norm_in_fp32`, for every
    backend). int8 programs take these but the splits, after quantization (`quantized_rewrites`)."""
    import torch

    table = {}
    if xnnpack:
        table.update(_reduction_decompositions(sums_only=half))
        table.update(_data_movement_decompositions())
    if half:
        table[torch.ops.aten.layer_norm.default] = _layer_norm_in_fp32
    return table


def _reduction_decompositions(*, sums_only: bool = False) -> dict[Any, Any]:
    """LayerNorms, channel means and sums and vector norms as products with a 1/C (or ones) vector, so that
    XNNPACK runs them: it has no LayerNorm and no sum, and its mean only averages the spatial dims of a 4-D
    map. Left outside, EdgeNeXt-S's 49 LayerNorms, its channels-first norms' means and the norms of its
    attention were 10% of `segment` in single-threaded portable kernels, and each split the delegate in two,
    with a layout change at every cut (ETDump). The sums run in XNNPACK's fp32 GEMMs: other rounding, same
    values to ~1e-6."""
    import torch

    aten = torch.ops.aten
    sums = {aten.sum.dim_IntList: _sum_by_products}
    if sums_only:
        return sums
    return {**sums, aten.layer_norm.default: _layer_norm_by_products,
            aten.mean.dim: functools.partial(_sum_by_products, mean=True),
            aten.linalg_vector_norm.default: _vector_norm_by_products}


def _data_movement_decompositions(*, splits: bool = True) -> dict[Any, Any]:
    import torch

    aten = torch.ops.aten
    table = {aten.unbind.int: _unbind_by_slices, aten.select.int: _select_by_slice,
             aten.squeeze.dim: _squeeze_by_view, aten.squeeze.dims: _squeeze_by_view, aten.detach.default: _same,
             aten.matmul.default: _matmul_as_bmm}
    if splits:
        table.update({aten.split.Tensor: _split_by_slices, aten.split_with_sizes.default: _split_with_sizes_by_slices,
                      aten.chunk.default: _chunk_by_slices})
    return table


def _matmul_as_bmm(a: Any, b: Any) -> Any:
    """A batched product of two 3-D tensors as `bmm` itself: `matmul` decomposes into bmm between reshapes to
    the same shapes, and XNNPACK copies the data at every reshape (EdgeNeXt-S's `segment` at 512x512 copied its
    16 MB pixel maps and 6.5 MB mask logits that way, ~13 ms per call)."""
    import torch

    if a.dim() != 3 or b.dim() != 3 or a.shape[0] != b.shape[0]:
        return NotImplemented
    return torch.ops.aten.bmm.default(a, b)


def _split_with_sizes_by_slices(x: Any, sizes: Sequence[int], dim: int = 0) -> list[Any]:
    starts = np.cumsum([0, *sizes[:-1]])
    return [x.narrow(dim, int(start), int(size)) for start, size in zip(starts, sizes, strict=True)]


def _split_by_slices(x: Any, size: int, dim: int = 0) -> list[Any]:
    length = x.shape[dim]
    return _split_with_sizes_by_slices(x, [min(size, length - start) for start in range(0, length, size)], dim)


def _chunk_by_slices(x: Any, chunks: int, dim: int = 0) -> list[Any]:
    return _split_by_slices(x, -(-x.shape[dim] // chunks), dim)  # torch.chunk's sizes: ceil(length / chunks)


def _unbind_by_slices(x: Any, dim: int = 0) -> list[Any]:
    return [_select_by_slice(x, dim, index) for index in range(x.shape[dim])]


def _select_by_slice(x: Any, dim: int, index: int) -> Any:
    dim %= x.dim()
    shape = [*x.shape[:dim], *x.shape[dim + 1:]]
    return x.narrow(dim, index % x.shape[dim], 1).reshape(shape)


def _squeeze_by_view(x: Any, dims: int | Sequence[int]) -> Any:
    dropped = {d % x.dim() for d in ([dims] if isinstance(dims, int) else dims) if x.shape[d] == 1}
    return x.reshape([size for d, size in enumerate(x.shape) if d not in dropped])


def _same(x: Any) -> Any:
    return x


def _channel_sum(x: Any, dim: int, scale: float) -> Any:
    """scale * x.sum(dim, keepdim=True) as a 1x1 convolution (dim 1 of a 4-D map, channels-first) or a
    linear layer (the last dim), both with a constant weight that `constant_prop_pass` folds."""
    import torch
    import torch.nn.functional as F

    channels = x.shape[dim]
    if x.dim() == 4 and dim == 1:
        return F.conv2d(x, torch.full((1, channels, 1, 1), scale, dtype=x.dtype, device=x.device))
    return F.linear(x, torch.full((1, channels), scale, dtype=x.dtype, device=x.device))


def _reduced_dim(x: Any, dims: Any) -> int | None:
    """The one dim a reduction over `dims` covers, if `_channel_sum` can compute it (the last, or a 4-D
    map's channels); else None."""
    if dims is None or len(dims) != 1:
        return None
    dim = dims[0] % x.dim()
    return dim if dim == x.dim() - 1 or (x.dim() == 4 and dim == 1) else None


def _sum_by_products(x: Any, dims: Any, keepdim: bool = False, *, dtype: Any = None,
                     mean: bool = False) -> Any:
    dim = _reduced_dim(x, dims)
    if dim is None or dtype is not None:
        return NotImplemented  # keep the op (calling it here would decompose it again, forever)
    total = _channel_sum(x, dim, 1.0 / x.shape[dim] if mean else 1.0)
    return total if keepdim else total.squeeze(dim)


def _vector_norm_by_products(x: Any, ord: float = 2, dim: Any = None, keepdim: bool = False, *,
                             dtype: Any = None) -> Any:
    import torch

    reduced = _reduced_dim(x, dim)
    if ord != 2 or reduced is None or not keepdim or dtype is not None:
        return NotImplemented
    return torch.sqrt(_channel_sum(x * x, reduced, 1.0))


def _layer_norm_by_products(x: Any, normalized_shape: list[int], weight: Any = None, bias: Any = None,
                            eps: float = 1e-5, cudnn_enable: bool = True) -> Any:
    import torch

    if len(normalized_shape) != 1:
        return torch.ops.aten.native_layer_norm.default(x, normalized_shape, weight, bias, eps)[0]
    scale = 1.0 / x.shape[-1]
    centred = x - _channel_sum(x, x.dim() - 1, scale)
    out = centred * torch.rsqrt(_channel_sum(centred * centred, x.dim() - 1, scale) + eps)
    if weight is not None:
        out = out * weight
    return out if bias is None else out + bias


def _layer_norm_in_fp32(x: Any, normalized_shape: list[int], weight: Any = None, bias: Any = None,
                        eps: float = 1e-5, cudnn_enable: bool = True) -> Any:
    """LayerNorm of an fp16 graph computed in fp32, as ATen does it. XNNPACK has no LayerNorm, and the fp16
    `native_layer_norm` kernel of executorch 1.5.1 is wrong from 256 channels on (error ~3 on unit normal
    inputs; fine up to 128), which every full-size head (d = 256) hits; its large activations give NaN."""
    import torch

    weight, bias = (None if t is None else t.float() for t in (weight, bias))
    return torch.ops.aten.native_layer_norm.default(x.float(), normalized_shape, weight, bias, eps)[0].to(x.dtype)


def lower_programs(programs: dict[str, Any], backend: str, precision: str) -> Any:
    """Exported programs -> one EdgeProgramManager, partitioned for `backend`, with the backend's own edge passes
    (XNNPACK's drops the same-shape `expand_copy` that every batched matmul decomposes into: left outside the
    delegate, those copies of the decoder's 16 MB pixel maps were 12% of `segment`, per ETDump)."""
    from executorch.exir import to_edge_transform_and_lower

    passes = None
    if backend == "xnnpack":
        from executorch.backends.xnnpack.utils.configs import get_transform_passes

        passes = get_transform_passes()
    return to_edge_transform_and_lower(programs, transform_passes=passes,
                                       partitioner=_partitioners(backend, precision))


def _partitioners(backend: str, precision: str) -> list[Any]:
    if backend == "portable":
        return []
    if backend == "coreml":
        import coremltools as ct
        from executorch.backends.apple.coreml.compiler import CoreMLBackend
        from executorch.backends.apple.coreml.partition import CoreMLPartitioner

        compute = ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32
        return [CoreMLPartitioner(compile_specs=CoreMLBackend.generate_compile_specs(compute_precision=compute))]
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    return [XnnpackPartitioner()]


def _to_executorch(edge: Any) -> bytes:
    try:
        return bytes(edge.to_executorch(_backend_config()).buffer)
    except Exception as exc:  # e.g. an op with no portable out-variant kernel
        raise ConversionError(f"executorch could not emit the program: {_first_line(exc)}; "
                              "an op outside the delegate has no portable kernel, rewrite it") from exc


def check_methods_load(program: bytes, entries: Sequence[str]) -> None:
    """Load every method once, as an app would: XNNPACK builds its runtime then and may refuse a node that
    lowering accepted (an int8 pad between differently quantized tensors did), which no export step reports."""
    from executorch.runtime import Runtime

    loaded = Runtime.get().load_program(program)
    for entry in entries:
        try:
            loaded.load_method(entry)
        except RuntimeError as exc:
            raise ConversionError(f"the converted method {entry!r} does not load in the executorch runtime "
                                  f"({_first_line(exc)}); the XNNPACK log above names the node it refused: "
                                  "rewrite that op in rapsam/models, or convert with backend=portable") from exc


def _backend_config() -> Any:
    from executorch.exir import ExecutorchBackendConfig

    return ExecutorchBackendConfig(extract_delegate_segments=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --- delegation report ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delegation:
    outside: dict[str, int]  # op name -> count of nodes that run on portable kernels
    delegated_nodes: int  # ops inside delegate payloads
    delegate_calls: int  # delegate subgraphs the method calls


def _op_name(target: Any) -> str:
    """`aten.grid_sampler_2d.default` style names (EdgeOpOverload and OpOverload both have `__name__`)."""
    return getattr(target, "__name__", str(target))


def _short_name(op: str) -> str:
    """`aten.split_with_sizes_copy.default` -> `split_with_sizes_copy`; `getitem` stays."""
    parts = op.split(".")
    return parts[1] if len(parts) >= 3 else parts[-1]


def _delegation(program: Any) -> Delegation:
    from executorch.exir.lowered_backend_module import LoweredBackendModule

    outside: Counter[str] = Counter()
    calls = 0
    for node in program.graph.nodes:
        if node.op != "call_function" or node.target is operator.getitem:
            continue
        if _op_name(node.target) == "executorch_call_delegate":
            calls += 1
        else:
            outside[_op_name(node.target)] += 1
    delegated = sum(
        sum(1 for n in lowered.original_module.graph.nodes
            if n.op == "call_function" and n.target is not operator.getitem)
        for lowered in program.graph_module.children() if isinstance(lowered, LoweredBackendModule)
    )
    return Delegation(dict(sorted(outside.items())), delegated, calls)


def compute_ops(ops: Mapping[str, int]) -> dict[str, int]:
    """The compute ops (see the module docstring) among `ops`."""
    return {op: count for op, count in ops.items() if _short_name(op) not in DATA_MOVEMENT_OPS}


def _check_strict(delegation: Mapping[str, Delegation], backend: str) -> None:
    outside = {entry: compute_ops(d.outside) for entry, d in delegation.items()}
    listed = "; ".join(f"{entry}: {', '.join(f'{op} x{n}' for op, n in ops.items())}"
                       for entry, ops in outside.items() if ops)
    if listed:
        raise ConversionError(f"executorch strict_delegation: compute ops outside the {DELEGATES[backend]} delegate "
                              f"({listed}); rewrite them with delegated ops or set strict_delegation=false")


# --- manifest as a constant method ---------------------------------------------------------------------


def with_constant_method(pte: bytes, name: str, text: str) -> bytes:
    """`pte` with a method `name` that returns `text`, replacing a method of that name.

    The plan is the one `to_edge(constant_methods={name: text})` emits: no inputs, no ops, one string
    value as output. Segments are written again with the alignment `to_executorch` used.
    """
    from executorch.exir._serialize._program import deserialize_pte_binary, serialize_pte_binary
    from executorch.exir.schema import Chain, ContainerMetadata, EValue, ExecutionPlan, String
    from executorch.extension.pytree import tree_flatten

    pte_file = deserialize_pte_binary(pte)
    plans = [plan for plan in pte_file.program.execution_plan if plan.name != name]
    plans.append(ExecutionPlan(
        name=name,
        container_meta_type=ContainerMetadata("", tree_flatten(text)[1].to_str()),
        values=[EValue(String(text))], inputs=[], outputs=[0],
        chains=[Chain(inputs=[], outputs=[], instructions=[], stacktrace=None)],
        operators=[], delegates=[], non_const_buffer_sizes=[0],
    ))
    pte_file.program.execution_plan = sorted(plans, key=lambda plan: plan.name)  # the emitter's order
    config = _backend_config()
    return bytes(serialize_pte_binary(
        pte_file, extract_delegate_segments=config.extract_delegate_segments,
        segment_alignment=config.segment_alignment, constant_tensor_alignment=config.constant_tensor_alignment,
        delegate_alignment=config.delegate_alignment,
    ))


def read_manifest(path: Path) -> str | None:
    """The manifest text embedded in a `.pte`, or None when it has no `manifest` method."""
    from executorch.runtime import Runtime

    program = Runtime.get().load_program(path.read_bytes())
    if MANIFEST_METHOD not in program.method_names:
        return None
    return program.load_method(MANIFEST_METHOD).execute([])[0]


# --- runtime -------------------------------------------------------------------------------------------


class ExecuTorchRunner:
    """Runs methods of a `.pte` in the ExecuTorch runtime of the installed pip package (XNNPACK + portable)."""

    def __init__(self, path: Path, *, threads: int | None = None) -> None:
        from executorch.runtime import Runtime

        if threads:
            # One process-wide XNNPACK thread pool: resizing it is safe while no method runs.
            from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

            _unsafe_reset_threadpool(threads)
        self.runtime = f"executorch {package_version('executorch')} runtime (XNNPACK + portable kernels, CPU)"
        # Loaded from bytes, not the path: the runtime may map the file, which embed_manifest replaces.
        self.program = Runtime.get().load_program(path.read_bytes())
        self.methods: dict[str, Any] = {}  # loading a method sets up its delegates: once per entry point

    def run(self, entry: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        contract = get_entry_point(entry)
        if entry not in self.methods:
            self.methods[entry] = self.program.load_method(entry)
        method = self.methods[entry]
        outputs = method.execute([torch.from_numpy(np.ascontiguousarray(inputs[name])) for name in contract.inputs])
        return {name: value.numpy() for name, value in zip(contract.outputs, outputs)}


CONVERTER = ExecuTorchConverter()
