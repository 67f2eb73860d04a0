"""ExecuTorch int8 (PT2E + XNNPACK): real quantization of the tiny model, run by the float converter's Runner.

XNNPACK lowering is slow on 2 cores (~45 s of the ~60 s that static int8 of `encode` takes). So the fast tests
quantize `encode` only (and check the errors, which fail before any export); the runs over the heads, the
dynamic scheme and `keep_float` are marked slow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("executorch")
pytest.importorskip("torchao")

from rapsam.checkpoint import build_model
from rapsam.convert.base import ConvertedFiles, TargetRequest
from rapsam.convert.executorch import CONVERTER, FILE_NAME
from rapsam.convert.parity import ReferenceRunner
from rapsam.export import ENTRY_POINTS, example_inputs
from rapsam.quantize.base import Calibration, QuantizationError, kept_modules
from rapsam.quantize.executorch import QUANTIZER

SIZE = (64, 64)
ALL = ("encode", "panoptic", "prompt", "segment")
# The slow runs lower the heads; `encode` has its own fast test, and `segment` is encode + panoptic.
HEADS = ("panoptic", "prompt")


def _request(entries: tuple[str, ...] = ALL) -> TargetRequest:
    return TargetRequest(entry_points=entries, input_size=SIZE, num_prompts=3, precision="fp32",
                         options=CONVERTER.option_defaults)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _image(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, (1, 3, *SIZE)).astype(np.float32)


@pytest.fixture(scope="module")
def model():
    return build_model("rapsam_tiny").eval()


@pytest.fixture(scope="module")
def calibration(model) -> Calibration:
    """3 random images; features of panoptic / prompt from the fp32 model, as `rapsam.quantize` makes them."""
    rng = np.random.default_rng(0)
    feeds: dict[str, list[dict[str, np.ndarray]]] = {entry: [] for entry in ALL}
    for seed in range(3):
        image = _image(rng)
        with torch.no_grad():
            features = model.encode(torch.from_numpy(image)).numpy()
        _, boxes, kinds = example_inputs(model, "prompt", input_size=SIZE, num_prompts=3, seed=seed)
        feeds["encode"].append({"image": image})
        feeds["segment"].append({"image": image})
        feeds["panoptic"].append({"features": features})
        feeds["prompt"].append({"features": features, "boxes": boxes.numpy(), "kinds": kinds.numpy()})
    return Calibration(feeds=feeds, source="test", digest="test")


@pytest.fixture(scope="module")
def test_inputs(model) -> list[dict[str, dict[str, np.ndarray]]]:
    """Four fresh images (none of them a calibration image), each with inputs for every entry point."""
    cases = []
    for seed in (7, 0, 3, 11):
        image = _image(np.random.default_rng(seed))
        features = ReferenceRunner(model).run("encode", {"image": image})["features"]
        _, boxes, kinds = example_inputs(model, "prompt", input_size=SIZE, num_prompts=3, seed=7)
        cases.append({"encode": {"image": image}, "segment": {"image": image}, "panoptic": {"features": features},
                      "prompt": {"features": features, "boxes": boxes.numpy(), "kinds": kinds.numpy()}})
    return cases


def _similarity(model, folder: Path, files: ConvertedFiles, cases) -> dict[str, dict[str, float]]:
    """Median over `cases` of the cosine similarity to the fp32 PyTorch model, by entry point and output.

    The median, because int8 error on random tiny weights depends a lot on the input: `prompt`'s masks
    measured 0.72 on one of the four images and 0.94..0.997 on the others.
    """
    runner, reference = CONVERTER.open(folder, files), ReferenceRunner(model)
    assert not isinstance(runner, str), runner
    result = {}
    for entry in files.entry_files:
        cosines: dict[str, list[float]] = {name: [] for name in ENTRY_POINTS[entry].outputs}
        for case in cases:
            got, expected = runner.run(entry, case[entry]), reference.run(entry, case[entry])
            assert set(got) == set(cosines) and all(got[n].shape == expected[n].shape for n in got)
            for name in got:
                cosines[name].append(_cosine(got[name], expected[name]))
        result[entry] = {name: float(np.median(values)) for name, values in cosines.items()}
    print(f"similarity {files.info.get('quantization', 'fp32')}: {result}")
    return result


def _total(files: ConvertedFiles, entry: str) -> int:
    return sum(files.info["quantized_ops"][entry].values())


# --- fast ----------------------------------------------------------------------------------------------


def test_unknown_scheme_lists_the_valid_ones(model, tmp_path: Path) -> None:
    with pytest.raises(QuantizationError, match="int8-static, int8-dynamic"):
        QUANTIZER.quantize(model, _request(), "int4", None, tmp_path)


def test_static_without_calibration_asks_for_calib(model, tmp_path: Path) -> None:
    with pytest.raises(QuantizationError, match="--calib"):
        QUANTIZER.quantize(model, _request(), "int8-static", None, tmp_path)
    assert not (tmp_path / FILE_NAME).exists()


def test_keep_float_patterns_name_the_outermost_model_modules(model, calibration, tmp_path: Path) -> None:
    kept = kept_modules(model, ["panoptic_head.*"])
    assert kept and all(name.startswith("panoptic_head.") and name.count(".") == 1 for name in kept)
    assert "panoptic_head.mask_heads" in kept and "panoptic_head.mask_heads.0" not in kept
    assert kept_modules(model, ["neck", "neck.*"]) == ["neck"]  # submodules go with their parent
    with pytest.raises(QuantizationError, match="matches no module.*backbone, neck, panoptic_head"):
        QUANTIZER.quantize(model, _request(), "int8-static", calibration, tmp_path, keep_float=["model.neck*"])


def test_only_xnnpack_lowers_quantized_programs(model, calibration, tmp_path: Path) -> None:
    request = TargetRequest(entry_points=("encode",), input_size=SIZE, num_prompts=3, precision="fp32",
                            options={"backend": "portable"})
    with pytest.raises(QuantizationError, match="XNNPACK only"):
        QUANTIZER.quantize(model, request, "int8-static", calibration, tmp_path)


def test_static_encode_is_int8_smaller_and_close(model, calibration, test_inputs, tmp_path: Path) -> None:
    before = {name: value.clone() for name, value in model.state_dict().items()}
    request = _request(("encode",))
    (tmp_path / "int8").mkdir(), (tmp_path / "fp32").mkdir()
    files = QUANTIZER.quantize(model, request, "int8-static", calibration, tmp_path / "int8")
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())  # untouched
    fp32 = CONVERTER.convert(model, request, tmp_path / "fp32")
    assert files.entry_files == {"encode": FILE_NAME} and files.entry_methods == {"encode": "encode"}
    assert files.info["quantization"] == "int8-static" and files.info["kept_float"] == []
    # 24 per-channel weights (every conv), ~130 quantize / ~160 dequantize of activations; all go into XNNPACK.
    ops = files.info["quantized_ops"]["encode"]
    assert ops["quantized_decomposed.dequantize_per_channel.default"] > 10
    assert ops["quantized_decomposed.quantize_per_tensor.default"] > 10
    assert not [op for op in files.info["non_delegated_ops"]["encode"] if "quantize" in op]
    assert files.info["float_weight_products"] == {"encode": 0}
    # squeezes as views (`quantized_rewrites`), in the delegate; the splits stay (XNNPACK fails them in int8)
    assert not [op for op in files.info["non_delegated_ops"]["encode"] if "squeeze" in op]
    # The deformable convs sample by row gathers, as in the fp32 program: no portable grid_sampler_2d.
    assert "aten.index_select.default" in files.info["non_delegated_ops"]["encode"]
    assert not [op for op in files.info["non_delegated_ops"]["encode"] if "grid_sampler" in op]
    # measured: 146 KB int8 vs 289 KB fp32 (the tiny model's XNNPACK graphs weigh as much as its weights)
    int8_bytes, fp32_bytes = (tmp_path / "int8" / FILE_NAME).read_bytes(), (tmp_path / "fp32" / FILE_NAME).read_bytes()
    assert len(int8_bytes) < 0.7 * len(fp32_bytes)
    # measured: cosine 0.9999 to the PyTorch features (median of four images outside the calibration set)
    assert _similarity(model, tmp_path / "int8", files, test_inputs)["encode"]["features"] > 0.99
    assert _similarity(model, tmp_path / "fp32", fp32, test_inputs)["encode"]["features"] > 0.99999


def test_deformable_convs_quantize_their_weight_product_only() -> None:
    """Sampling positions and flat row indices are coordinates: one int8 scale per tensor would move them."""
    from rapsam.models.deform_conv import ModulatedDeformConv2d, deform_sampler
    from rapsam.quantize.executorch import _Quantizable

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.offset = torch.nn.Conv2d(8, 27, 3, padding=1)
            self.deform = ModulatedDeformConv2d(8, 8, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            offset_y_x, mask = self.offset(x).split([18, 9], dim=1)
            return self.deform(x + 1.0, offset_y_x, mask.sigmoid())

    block = Block().eval()
    with deform_sampler(block, "gather_pixels_last"):
        graph = torch.export.export(block, (torch.rand(1, 8, 6, 6),), strict=False).module()
    quantizable = _Quantizable(set())
    nodes = [node for node in graph.graph.nodes if node.op == "call_function"]
    inside = [node for node in nodes if any(path == "deform" for path, _ in node.meta["nn_module_stack"].values())]
    assert {"aten.floor.default", "aten.mul.Tensor", "aten.index_select.default"} <= {str(n.target) for n in inside}
    assert [str(node.target) for node in inside if quantizable(node)] == ["aten.linear.default"]
    assert all(quantizable(node) for node in nodes if node not in inside)  # offset conv, split, add, sigmoid


def test_every_conv_and_linear_of_edgenext_in_the_xnnpack_forms_gets_int8_weights() -> None:
    """The forms compute weights from parameters (linears as 1x1 convs, 7x7 kernels sliced into column
    groups); a quantizer that saw those computed weights left them fp32 (a 28.5 MB EdgeNeXt-S .pte, not 15)."""
    from rapsam.convert.executorch import xnnpack_forms
    from rapsam.quantize.executorch import _quantizer
    from rapsam.quantize.pt2e import float_weight_products, quantize_program

    edgenext = build_model("rapsam_edgenext_demo").eval()
    request = TargetRequest(entry_points=("encode",), input_size=SIZE, num_prompts=3, precision="fp32",
                            options=CONVERTER.option_defaults)
    feeds = [{"image": _image(np.random.default_rng(0))}]
    with xnnpack_forms(edgenext):
        program = quantize_program(edgenext, "encode", request, _quantizer("int8-static", []), feeds, "int8-static")
    products = [node for node in program.graph.nodes if str(node.target) == "aten.conv2d.default"]
    assert len(products) > 60 and float_weight_products(program) == []


def test_a_kept_module_keeps_its_submodules_float() -> None:
    """The head's stages run from its methods (prompt, panoptic), so their module stack holds the stage's path
    and not the head's: keeping `panoptic_head` must cover `panoptic_head.mask_heads.0`."""
    from rapsam.quantize.executorch import _Quantizable

    graph = torch.fx.Graph()

    def node(*paths: str) -> torch.fx.Node:
        made = graph.call_function(torch.ops.aten.linear.default, ())
        made.meta["nn_module_stack"] = {p: (p, "Linear") for p in paths}
        return made

    quantizable = _Quantizable({"model.panoptic_head"})
    inside, beside, outside = node("model.panoptic_head.mask_heads.0"), node("model.panoptic_headx"), node("model.neck")
    quantizable.constant = {inside: False, beside: False, outside: False}
    assert [quantizable(n) for n in (inside, beside, outside)] == [False, True, True]


# --- slow ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def converted(model, calibration, tmp_path_factory) -> dict[str, tuple[Path, ConvertedFiles]]:
    """The heads as int8-static; the panoptic head as int8-dynamic (it reaches the linears only: the panoptic
    head has them all). The fp32 comparison of sizes and bytes is the `encode` test's: lowering is slow."""
    made = {}
    for kind, entries in (("int8-static", HEADS), ("int8-dynamic", ("panoptic",))):
        folder = tmp_path_factory.mktemp(kind)
        made[kind] = folder, QUANTIZER.quantize(model, _request(entries), kind, calibration, folder)
    return made


@pytest.mark.slow
def test_static_int8_runs_the_heads_close_to_fp32(model, converted, test_inputs) -> None:
    folder, files = converted["int8-static"]
    assert files.entry_methods == {entry: entry for entry in HEADS}
    assert all(_total(files, entry) > 0 for entry in HEADS)
    # the quantize / dequantize pairs all went into XNNPACK
    assert not [op for ops in files.info["non_delegated_ops"].values() for op in ops if "quantize" in op]
    similarity = _similarity(model, folder, files, test_inputs)
    # measured on random tiny weights (medians): prompt 0.965 / 0.997 (mask / iou);
    # panoptic 0.978 / 0.925 / 0.944 (mask / class / queries)
    assert min(similarity["prompt"].values()) > 0.9
    assert min(similarity["panoptic"].values()) > 0.85


@pytest.mark.slow
def test_dynamic_int8_quantizes_the_linears_only(model, converted, test_inputs) -> None:
    folder, files = converted["int8-dynamic"]
    assert files.info["quantization"] == "int8-dynamic"
    ops = files.info["quantized_ops"]
    assert ops["panoptic"]["quantized_decomposed.choose_qparams.tensor"] > 0  # activations quantized per call
    assert not any("quantize_per_tensor.default" in op for op in ops["panoptic"])  # nothing static
    assert not [op for ops in files.info["non_delegated_ops"].values() for op in ops if "quantize" in op]
    similarity = _similarity(model, folder, files, test_inputs)
    # measured (medians): panoptic >= 0.9998
    assert min(min(outputs.values()) for outputs in similarity.values()) > 0.97


@pytest.mark.slow
def test_keep_float_leaves_the_head_unquantized(model, calibration, converted, tmp_path: Path) -> None:
    files = QUANTIZER.quantize(model, _request(("panoptic",)), "int8-static", calibration, tmp_path,
                               keep_float=["panoptic_head.*"])
    assert files.info["kept_float"] == kept_modules(model, ["panoptic_head.*"])
    assert "panoptic_head.mask_heads" in files.info["kept_float"]
    assert _total(files, "panoptic") < _total(converted["int8-static"][1], "panoptic")
    float_products = files.info["float_weight_products"]["panoptic"]
    assert float_products > converted["int8-static"][1].info["float_weight_products"]["panoptic"]
    runner = CONVERTER.open(tmp_path, files)
    assert not isinstance(runner, str)
    features = example_inputs(model, "panoptic", input_size=SIZE)[0].numpy()
    assert runner.run("panoptic", {"features": features})["mask_logits"].shape[-2:] == (SIZE[0] // 4, SIZE[1] // 4)


def test_a_method_xnnpack_refuses_at_load_fails_the_conversion_in_one_line() -> None:
    """Lowering accepts an int8 pad of a conv's output; XNNPACK refuses it only when the method loads."""
    import torch.nn.functional as F
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from rapsam.convert.base import ConversionError
    from rapsam.convert.executorch import _to_executorch, check_methods_load
    from rapsam.quantize.executorch import _fold_constants, _lower, _quantizer

    class PadAfterConv(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(8, 8, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + F.pad(self.conv(x), (1, 1))[..., 1:-1]

    x = torch.randn(1, 8, 16, 16)
    prepared = prepare_pt2e(torch.export.export(PadAfterConv(), (x,), strict=False).module(),
                            _quantizer("int8-static", []))
    prepared(x)
    program = torch.export.export(convert_pt2e(prepared), (x,), strict=False)
    pte = _to_executorch(_lower({"forward": _fold_constants(program)}))
    with pytest.raises(ConversionError, match="'forward' does not load.*rewrite that op") as error:
        check_methods_load(pte, ["forward"])
    assert "\n" not in str(error.value)
