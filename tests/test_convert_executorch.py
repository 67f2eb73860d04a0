"""ExecuTorch: lower the tiny model to one `.pte`, run its methods in `executorch.runtime`, check the numbers,
the delegation report, the manifest method, the option and lowering errors, and the bytes.

Lowering to XNNPACK is slow on 2 cores (~45 s per entry point of the tiny model, most of it in ExecuTorch's
passes, which retrace every partition several times), so the fast tests share one program with all four entry
points (and lower `encode` to Core ML, which is quicker); the other conversions are marked slow.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rapsam.convert import convert
from rapsam.convert.base import ConversionError, TargetRequest
from rapsam.convert.parity import ReferenceRunner, mask_iou, parity_photos, prompt_cases
from rapsam.export import ENTRY_POINTS
from rapsam.inference import letterbox

pytest.importorskip("executorch")

from rapsam.convert.executorch import (
    CONVERTER,
    FILE_NAME,
    ExecuTorchRunner,
    compute_ops,
    float_rewrites,
    folded,
    quantized_rewrites,
    read_manifest,
    with_constant_method,
)

SIZE = (64, 96)
INDEX_SELECT = "aten.index_select.default"  # the deformable convs' row gathers


def _request(entries: tuple[str, ...], **options: object) -> TargetRequest:
    return TargetRequest(entry_points=entries, input_size=SIZE, num_prompts=3, precision="fp32",
                         options={**CONVERTER.option_defaults, **options})


def _quiet(message: str) -> None:
    pass


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Every entry point through `rapsam.convert.convert` (XNNPACK, fp32) once for the fast tests."""
    [result] = convert("executorch", model="rapsam_tiny", input_size=SIZE, num_prompts=3,
                       out_dir=tmp_path_factory.mktemp("executorch"), progress=_quiet)
    return result


def _photo_inputs(model) -> tuple[np.ndarray, tuple[int, int]]:
    image, box = letterbox(parity_photos()[0][1], SIZE, model.config.pixel_mean)
    return image.numpy(), box.valid_size


# --- fast ----------------------------------------------------------------------------------------------


def test_folder_parity_report_and_embedded_manifest(converted) -> None:
    assert converted.written and converted.parity.passed and converted.manifest["parity"]["gate"] == "passed"
    assert sorted(p.name for p in converted.folder.iterdir()) == ["manifest.json", FILE_NAME, "parity.json"]
    assert json.loads((converted.folder / "parity.json").read_text())["passed"]
    on_disk = (converted.folder / "manifest.json").read_text()
    assert read_manifest(converted.folder / FILE_NAME) == on_disk  # read back by the ExecuTorch runtime
    manifest = json.loads(on_disk)
    assert {e: (s["file"], s["method"]) for e, s in manifest["entry_points"].items()} == {
        e: (FILE_NAME, e) for e in ENTRY_POINTS}
    assert manifest["target"]["options"] == {"backend": "xnnpack", "strict_delegation": False}


def test_every_entry_point_in_one_program_passes_parity(converted) -> None:
    assert converted.manifest["target"]["non_delegated_ops"]["segment"][INDEX_SELECT] == 12
    rows = {(r.entry, r.case, r.output): r for r in converted.parity.rows}
    assert rows[("encode", "-", "features")].max_abs < 1e-5
    for entry in ("panoptic", "segment"):
        assert rows[(entry, "-", "mask_logits")].extra["mask_iou"] == 1.0
        assert rows[(entry, "-", "class_logits")].extra["class_top1"] == 1.0
    assert min(r.cosine for r in converted.parity.rows) >= 0.99999


def test_encode_and_prompt_methods_match_the_reference(converted, tiny_model) -> None:
    runner, reference = ExecuTorchRunner(converted.folder / FILE_NAME), ReferenceRunner(tiny_model)
    image, valid_size = _photo_inputs(tiny_model)
    expected = reference.run("encode", {"image": image})["features"]
    features = runner.run("encode", {"image": image})["features"]
    assert features.shape == expected.shape and features.dtype == np.float32
    assert np.abs(features - expected).max() <= 1e-5 * np.abs(expected).max()
    for case, (boxes, kinds) in prompt_cases(3, valid_size).items():
        inputs = {"features": expected, "boxes": boxes, "kinds": kinds}
        ref, art = reference.run("prompt", inputs), runner.run("prompt", inputs)
        assert np.abs(art["mask_logits"] - ref["mask_logits"]).max() <= 1e-4 * np.abs(ref["mask_logits"]).max(), case
        assert mask_iou(ref["mask_logits"], art["mask_logits"], kinds[0] >= 0) == 1.0, case
        assert np.abs(art["iou"] - ref["iou"]).max() <= 1e-5, case


def test_delegation_report_names_what_runs_on_portable_kernels(converted) -> None:
    info = converted.manifest["target"]
    assert info["backend"] == "xnnpack" and info["manifest_method"] == "manifest"
    # four bilinear corners per deformable conv of the neck, gathered as rows; no arithmetic is left outside
    assert info["non_delegated_ops"]["encode"][INDEX_SELECT] == 12
    assert compute_ops(info["non_delegated_ops"]["encode"]) == {}
    # nothing else cuts the delegate (splits run as slices): one call per stretch between the three gathers
    assert set(info["non_delegated_ops"]["encode"]) == {INDEX_SELECT, "dim_order_ops._to_dim_order_copy.default"}
    assert info["delegate_calls"]["encode"] == 4
    # LayerNorms and channel means run in XNNPACK as products with a 1/C vector; what the prompt leaves
    # outside is the padding prompts' masking (K x h x w selects), not arithmetic on features
    assert compute_ops(info["non_delegated_ops"]["prompt"]) == {"aten.ge.Scalar": 2, "aten.where.self": 2}
    assert not any("layer_norm" in op or "mean" in op for ops in info["non_delegated_ops"].values() for op in ops)
    # folded weights: every linear and conv went to XNNPACK, none stayed as addmm / convolution
    assert not any("addmm" in op or "convolution" in op for ops in info["non_delegated_ops"].values() for op in ops)
    assert info["delegated_nodes"]["encode"] > 100 and info["delegate_calls"]["prompt"] > 1


class _Norms(torch.nn.Module):
    """Every reduction `quantized_rewrites` rewrites, and one it must leave alone (spatial mean)."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = torch.nn.LayerNorm(6)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        channels_first = x.mean(1, keepdim=True)
        return (self.norm(x.permute(0, 2, 3, 1)), channels_first, (x - channels_first).pow(2).mean(1, keepdim=True),
                torch.linalg.vector_norm(x, dim=-1, keepdim=True), x.mean(-1), x.mean((2, 3), keepdim=True),
                x.sum(1), x.sum(-1, keepdim=True))


def test_channel_means_become_products_with_the_same_values() -> None:
    module = _Norms().eval()
    torch.nn.init.normal_(module.norm.weight)
    torch.nn.init.normal_(module.norm.bias)
    x = torch.randn(2, 6, 5, 7) * 3 + 1
    program = quantized_rewrites(torch.export.export(module, (x,)))
    targets = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    assert not [t for t in targets if "layer_norm" in t or "vector_norm" in t]
    assert targets.count("aten.mean.dim") == 1  # the spatial mean, which XNNPACK takes as it is
    assert "aten.sum.dim_IntList" not in targets
    assert targets.count("aten.conv2d.default") == 3 and targets.count("aten.linear.default") == 5
    for got, want in zip(program.module()(x), module(x), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


class _DataMovement(torch.nn.Module):
    """Every split, squeeze, select and detach `float_rewrites` rewrites into slices and views."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        a, b, c = torch.chunk(x, 3, dim=1)  # 7 channels: 3, 3, 1
        first, rest = x.split([2, 5], dim=1)
        pieces = x.split(4, dim=-1)  # 5 columns: 4, 1
        rows = x[:, :, :1].unbind(dim=2)
        return (a, b, c, first, rest, *pieces, *rows, x[:, 3], x[..., :1].squeeze(-1), x.detach() * 2)


def test_splits_squeezes_and_selects_become_slices_and_views() -> None:
    x = torch.randn(2, 7, 4, 5)
    rewrites = float_rewrites(xnnpack=True, half=False)
    program = torch.export.export(_DataMovement(), (x,)).run_decompositions(rewrites)
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert not {t for t in targets if any(op in t for op in ("split", "chunk", "unbind", "select", "squeeze",
                                                               "detach", "alias"))}, targets
    for got, want in zip(program.module()(x), _DataMovement()(x), strict=True):
        assert torch.equal(got, want)


class _Products(torch.nn.Module):
    def forward(self, q: torch.Tensor, f: torch.Tensor, heads: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return q @ f, heads @ heads.transpose(-2, -1)


def test_products_of_3d_tensors_become_bmm_without_reshapes() -> None:
    inputs = (torch.randn(1, 8, 32), torch.randn(1, 32, 40), torch.randn(1, 2, 4, 40))
    program = torch.export.export(_Products(), inputs).run_decompositions(float_rewrites(xnnpack=True, half=False))
    targets = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    assert targets.count("aten.bmm.default") == 1 and targets.count("aten.matmul.default") == 1  # 4-D kept
    for got, want in zip(program.module()(*inputs), _Products()(*inputs), strict=True):
        assert torch.equal(got, want)


class _PackedProjection(torch.nn.Module):
    """q, k, v weights sliced from one packed parameter, as an attention's in_proj."""

    def __init__(self) -> None:
        super().__init__()
        self.in_proj = torch.nn.Parameter(torch.randn(12, 4))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(torch.nn.functional.linear(x, w) for w in self.in_proj.split(4))


def test_folded_constants_own_their_storage_and_need_no_grad(recwarn: pytest.WarningsRecorder) -> None:
    module, x = _PackedProjection(), torch.randn(3, 4)
    program = torch.export.export(module, (x,))
    recwarn.clear()
    program = folded(program, float_rewrites(xnnpack=True, half=False))
    slices = [v for v in program.constants.values() if isinstance(v, torch.Tensor) and v.shape == (4, 4)]
    assert len(slices) == 3  # folded out of the parameter
    assert all(v.storage_offset() == 0 and v.untyped_storage().nbytes() == 64 for v in slices)
    assert not any(v.requires_grad for v in slices)
    outputs = program.module()(x)
    # Each unlift (decomposing, .module()) warned once for each folded slice, as they required grad.
    assert not [w for w in recwarn if "requires gradient" in str(w.message)]
    for got, want in zip(outputs, module(x), strict=True):
        torch.testing.assert_close(got, want)


def test_option_errors_name_the_fix(tiny_model, tmp_path: Path) -> None:
    cases = {
        "mps": ({"backend": "mps"}, "not on Linux"),
        "unknown": ({"backend": "vulkan"}, "xnnpack, portable, coreml"),
        "not bool": ({"strict_delegation": "yes"}, "true or false"),
        "no delegate": ({"backend": "portable", "strict_delegation": True}, "needs a delegate"),
    }
    for name, (options, fix) in cases.items():
        with pytest.raises(ConversionError, match=fix) as error:
            CONVERTER.convert(tiny_model, _request(("encode",), **options), tmp_path)
        assert "\n" not in str(error.value), name
    with pytest.raises(ConversionError, match="has no options"):
        convert("executorch", model="rapsam_tiny", input_size=SIZE, options={"delegate": "xnnpack"},
                out_dir=tmp_path, progress=_quiet)


def test_an_op_without_kernels_fails_in_one_line(tiny_model, tmp_path: Path, monkeypatch) -> None:
    class Bessel(torch.nn.Module):
        def forward(self, image: torch.Tensor) -> tuple[torch.Tensor]:
            return (torch.special.bessel_j0(image),)

    def export_bessel(model, entry, **kwargs):
        return torch.export.export(Bessel(), (torch.ones(1, 3, *SIZE),), strict=False)

    monkeypatch.setattr("rapsam.convert.executorch.export_entry_point", export_bessel)
    with pytest.raises(ConversionError, match="bessel_j0.*core ATen ops ExecuTorch has kernels for") as error:
        CONVERTER.convert(tiny_model, _request(("encode",)), tmp_path)
    assert "\n" not in str(error.value)


def test_manifest_method_is_replaced_and_leaves_the_methods_alone(converted, tiny_model, tmp_path: Path) -> None:
    pte = (converted.folder / FILE_NAME).read_bytes()
    once = with_constant_method(pte, "manifest", '{"a": 1}\n')
    assert with_constant_method(pte, "manifest", '{"a": 1}\n') == once  # same text, same bytes
    (tmp_path / FILE_NAME).write_bytes(with_constant_method(once, "manifest", '{"a": "é"}\n'))
    assert read_manifest(tmp_path / FILE_NAME) == '{"a": "é"}\n'  # replaced, not added twice, UTF-8 intact
    image, _ = _photo_inputs(tiny_model)
    before = ExecuTorchRunner(converted.folder / FILE_NAME).run("encode", {"image": image})["features"]
    after = ExecuTorchRunner(tmp_path / FILE_NAME).run("encode", {"image": image})["features"]
    np.testing.assert_array_equal(before, after)


def test_coreml_backend_lowers_here_and_says_it_cannot_run_here(tmp_path: Path) -> None:
    [result] = convert("executorch", model="rapsam_tiny", input_size=(64, 64), entry_points=["encode"],
                       options={"backend": "coreml"}, out_dir=tmp_path, progress=_quiet)
    assert result.written and not result.parity.ran and "iOS/macOS" in result.parity.reason
    target = result.manifest["target"]
    assert target["delegate_calls"] == {"encode": 1} and target["non_delegated_ops"] == {"encode": {}}
    # the program loads without the Core ML runtime as long as no delegated method is loaded
    assert read_manifest(result.folder / FILE_NAME) == (result.folder / "manifest.json").read_text()


# --- slow ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_same_inputs_give_identical_bytes(tiny_model, tmp_path: Path) -> None:
    # One entry point: the path is the same for each, and converting twice is the slow part.
    contents = []
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        CONVERTER.convert(tiny_model, _request(("prompt",)), tmp_path / run)
        contents.append((tmp_path / run / FILE_NAME).read_bytes())
    assert contents[0] == contents[1]


@pytest.mark.slow
def test_fp16_computes_in_half_and_passes_the_fp16_gate(tmp_path: Path) -> None:
    # `segment` only: it holds `encode` and `panoptic`. `prompt` is left out: the tiny model's prompt path
    # misses the fp16 mask gate in PyTorch eager fp16 too.
    [result] = convert("executorch", model="rapsam_tiny", input_size=(64, 64), entry_points=["segment"],
                       precision="fp16", out_dir=tmp_path, progress=_quiet)
    assert result.written and result.parity.passed and result.manifest["precision"]["compute"] == "fp16"
    masks = next(r for r in result.parity.rows if r.output == "mask_logits")
    assert 1e-4 < masks.extra["relative_error"] < 1e-2  # really computed in fp16 (measured 0.003), and close
    # XNNPACK took the fp16 matrix and conv work and the deformable convs' sampling: what is left outside
    # is the LayerNorms (computed in fp32), the open-vocabulary norm and the prototypes' max, the row gathers
    # and the fp32 <-> fp16 casts; no split or squeeze cuts the delegate (measured: 31 -> 22 calls).
    outside = result.manifest["target"]["non_delegated_ops"]["segment"]
    assert compute_ops(outside) == {"aten.native_layer_norm.default": 20, "aten.pow.Tensor_Scalar": 1,
                                    "aten.sum.dim_IntList": 1, "aten.amax.default": 1}
    assert not [op for op in outside if any(k in op for k in ("grid_sampler", "split", "squeeze", "alias"))]
    assert outside[INDEX_SELECT] == 12 and result.manifest["target"]["delegate_calls"]["segment"] == 22


@pytest.mark.slow
def test_strict_delegation_names_the_compute_ops_left_out(tiny_model, tmp_path: Path) -> None:
    # `prompt` only: that `encode`'s row gathers are not compute ops is the delegation report test's assertion
    with pytest.raises(ConversionError, match=r"prompt: aten\.ge\.Scalar x2, aten\.where\.self x2\)"):
        CONVERTER.convert(tiny_model, _request(("prompt",), strict_delegation=True), tmp_path)
    assert not (tmp_path / FILE_NAME).exists()


@pytest.mark.slow
def test_portable_backend_runs_without_a_delegate(tiny_model, tmp_path: Path) -> None:
    files = CONVERTER.convert(tiny_model, _request(("prompt",), backend="portable"), tmp_path)
    assert files.info["delegate_calls"] == {"prompt": 0} and files.info["delegated_nodes"] == {"prompt": 0}
    shape = (1, tiny_model.config.hidden_dim, SIZE[0] // 4, SIZE[1] // 4)
    features = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    boxes, kinds = prompt_cases(3, SIZE)["mixed"]
    inputs = {"features": features, "boxes": boxes, "kinds": kinds}
    ref = ReferenceRunner(tiny_model).run("prompt", inputs)
    art = ExecuTorchRunner(tmp_path / FILE_NAME).run("prompt", inputs)
    assert np.abs(art["mask_logits"] - ref["mask_logits"]).max() <= 1e-4 * np.abs(ref["mask_logits"]).max()
