"""CoreML compression: each scheme's ops in the saved ML Program, weights read back against the fp32 model,
sizes, keep_float, deterministic bytes and errors.

Core ML predicts only on macOS, so everything here is read from the saved programs themselves, and their
numerics are run through the MIL reference evaluator (`rapsam.convert.mil`).
"""

from __future__ import annotations

import hashlib
import platform
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("coremltools")

import rapsam
from rapsam.convert import coreml
from rapsam.convert.base import TargetRequest
from rapsam.export import ENTRY_POINTS
from rapsam.quantize import QuantizationError, get_quantizer, load_calibration
from rapsam.quantize.coreml import WEIGHT_THRESHOLD

SIZE, K = (64, 64), 3
ON_MAC = platform.system() == "Darwin"
ENTRIES = ("encode", "prompt")
INT8_STEP = 1 / 254 + 2**-10  # symmetric int8: half a step of max|w| / 127, plus fp16 rounding of the result


def _request(entries=ENTRIES, precision: str = "fp16", **options) -> TargetRequest:
    return TargetRequest(entry_points=tuple(entries), input_size=SIZE, num_prompts=K, precision=precision,
                         options={**coreml.CONVERTER.option_defaults, **options})


def _quantize(model, folder: Path, scheme: str, calibration=None, entries=ENTRIES, keep_float=(), **options):
    return get_quantizer("coreml").quantize(model, _request(entries, **options), scheme, calibration, folder,
                                            keep_float)


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _weights(package: Path) -> dict[str, np.ndarray]:
    """Every weight Core ML will compute with, decompressed from the saved program, by parameter constant name
    (`p_model_<path>`, the name before compression)."""
    import coremltools.optimize.coreml as cto

    ct = coreml._coremltools()
    with coreml._quiet_coremltools():
        program = cto.decompress_weights(ct.models.MLModel(str(package), skip_model_load=True))._mil_program
    values = {}
    for op in program.functions["main"].operations:
        value = op.outputs[0].val if op.op_type == "const" else None
        if isinstance(value, np.ndarray) and value.dtype.kind == "f" and value.size > WEIGHT_THRESHOLD:
            name = op.name.removesuffix("_quantized").removesuffix("_palettized").removesuffix("_to_fp16")
            values[name] = value.astype(np.float64)
    return values


def _errors(package: Path, model) -> dict[str, tuple[float, float]]:
    """Per parameter weight: (max |error| / max |w| of its output channel, rms error / rms weight). All-zero
    weights (the deformable convs' offset layers start at zero) must read back as zeros and are left out."""
    params = {"p_model_" + k.replace(".", "_"): v.double().numpy() for k, v in model.state_dict().items()}
    errors = {}
    for name, value in _weights(package).items():
        if name in params:
            weight = params[name]
            if not weight.any():
                assert not value.any(), name
                continue
            error = np.abs(value.reshape(weight.shape) - weight).reshape(len(weight), -1)
            scale = np.maximum(np.abs(weight).reshape(len(weight), -1).max(1, keepdims=True), 1e-12)
            errors[name] = (float((error / scale).max()), float(np.linalg.norm(error) / np.linalg.norm(weight)))
    return errors


def _ops(files, entry: str) -> dict[str, int]:
    return files.info["compression_ops"][entry]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return rapsam.build_model("rapsam_tiny").eval()


@pytest.fixture(scope="module")
def calibration(model):
    return load_calibration("synthetic", model, input_size=SIZE, num_prompts=K, entry_points=ENTRIES, count=3)


@pytest.fixture(scope="module")
def float32(model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("coreml_fp32")
    files = coreml.CONVERTER.convert(model, _request(("encode",), precision="fp32"), folder)
    return folder, files


@pytest.fixture(scope="module")
def int8(model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("coreml_int8")
    return folder, _quantize(model, folder, "int8-weights")


@pytest.fixture(scope="module")
def palettized(model, tmp_path_factory):
    """4-bit over both entries, 6-bit over `encode`."""
    four, six = tmp_path_factory.mktemp("coreml_pal4"), tmp_path_factory.mktemp("coreml_pal6")
    return {4: (four, _quantize(model, four, "palettize-4")),
            6: (six, _quantize(model, six, "palettize-6", entries=("encode",)))}


@pytest.fixture(scope="module")
def w8a8(model, calibration, tmp_path_factory):
    folder = tmp_path_factory.mktemp("coreml_w8a8")
    return folder, _quantize(model, folder, "w8a8", calibration)


# ---- what each scheme puts into the program -------------------------------------------------------------


def test_int8_weights_are_affine_dequantized_and_close(int8, model) -> None:
    folder, files = int8
    assert dict(files.entry_files) == {e: f"{e}.mlpackage" for e in ENTRIES}
    assert dict(files.entry_methods) == {e: None for e in ENTRIES}
    assert files.info["quantization"] == "int8-weights" and files.info["kept_float"] == []
    assert files.info["spec_check"]["matches_contract"] and files.info["deployment_target"] == "iOS17"
    # Every weight of more than 512 elements (encode 18, prompt 25: a self-attention's q, k and v are one
    # weight); no activation quantization.
    assert _ops(files, "encode")["constexpr_affine_dequantize"] == 18
    assert _ops(files, "prompt")["constexpr_affine_dequantize"] == 25
    assert all(_ops(files, e)["quantize"] == 0 and _ops(files, e)["constexpr_lut_to_dense"] == 0 for e in ENTRIES)
    for entry in ENTRIES:
        errors = _errors(folder / f"{entry}.mlpackage", model)
        # the non-zero parameters among them (encode's convs are mostly BatchNorm-folded, with new names)
        assert len(errors) >= {"encode": 2, "prompt": 15}[entry], (entry, errors)
        # Measured worst: 0.0047 of the channel's max |w|, rms 0.4% of the weight.
        assert max(e for e, _ in errors.values()) <= INT8_STEP, errors
        assert max(r for _, r in errors.values()) < 0.006, errors
    if not ON_MAC:  # the float converter opens the files: on Linux through the MIL reference evaluator
        assert coreml.CONVERTER.open(folder, files).runtime.startswith("MIL reference, fp16-simulated")


def test_palettized_weights_are_looked_up_and_close(palettized, model) -> None:
    for bits, (folder, files) in palettized.items():
        assert files.info["quantization"] == f"palettize-{bits}" and "kmeans" in files.info
        assert _ops(files, "encode")["constexpr_lut_to_dense"] == 18 and _ops(files, "encode")["quantize"] == 0
        errors = _errors(folder / "encode.mlpackage", model)
        # k-means on 2^bits centroids: measured rms 6.8% (4-bit), 1.6% (6-bit); worst element 10% / 2.7% of
        # its channel's max |w| (a uniform grid of 2^bits levels would allow up to 1/2^bits).
        worst, rms = max(e for e, _ in errors.values()), max(r for _, r in errors.values())
        assert worst < {4: 0.15, 6: 0.045}[bits] and rms < {4: 0.09, 6: 0.025}[bits], (bits, errors)
    folder, files = palettized[4]
    assert _ops(files, "prompt")["constexpr_lut_to_dense"] == 25
    assert max(r for _, r in _errors(folder / "prompt.mlpackage", model).values()) < 0.09


def test_w8a8_quantizes_activations_and_weights(w8a8, calibration) -> None:
    folder, files = w8a8
    assert files.info["quantization"] == "w8a8" and files.info["calibration"]["digest"] == calibration.digest
    for entry in ENTRIES:
        ops, mil = _ops(files, entry), files.info["mil_ops"][entry]
        # One quantize / dequantize pair per conv or linear input (measured: encode 15, prompt 18), and every
        # conv / linear weight int8 (PT2E's), plus the transposed convs' by linear_quantize_weights.
        assert ops["quantize"] == ops["dequantize"] > 10, (entry, ops)
        assert ops["constexpr_affine_dequantize"] >= mil.get("conv", 0) + mil.get("linear", 0), (entry, mil)
    program = coreml._coremltools().utils.load_spec(str(folder / "encode.mlpackage")).mlProgram
    block = next(iter(program.functions["main"].block_specializations.values()))
    consumers = {i.name: op.type for op in block.operations for arg in op.inputs.values() for i in arg.arguments}
    quantized = [op.outputs[0].name for op in block.operations if op.type == "quantize"]
    assert all(consumers[q] == "dequantize" for q in quantized)  # int8 activations go into dequantize ...
    dequantized = [op.outputs[0].name for op in block.operations if op.type == "dequantize"]
    assert {consumers[d] for d in dequantized} <= {"conv", "linear"}  # ... that feeds a conv / linear


def test_compressed_packages_are_smaller_than_fp32(float32, int8, palettized, w8a8) -> None:
    fp32_folder, _ = float32
    fp32 = sum(p.stat().st_size for p in (fp32_folder / "encode.mlpackage").rglob("weight*.bin"))
    sizes = {name: files.info["weight_bytes"]["encode.mlpackage"]
             for name, (_, files) in {"int8": int8, "pal6": palettized[6], "pal4": palettized[4],
                                      "w8a8": w8a8}.items()}
    # Measured on the tiny model: fp32 249 KB, int8 76 KB (3.3x), w8a8 74 KB, 6-bit 59 KB, 4-bit 47 KB (5.3x).
    # Not the full 4x / 8x: a third of its bytes are tensors under the 1024-element threshold, kept in fp16.
    assert sizes["int8"] < fp32 / 3 and sizes["w8a8"] < fp32 / 3, (fp32, sizes)
    assert sizes["pal4"] < sizes["pal6"] < sizes["int8"] and sizes["pal4"] < fp32 / 5, (fp32, sizes)


def test_palettization_is_byte_deterministic(palettized, model, tmp_path) -> None:
    folder, _ = palettized[6]
    _quantize(model, tmp_path, "palettize-6", entries=("encode",))
    assert _digest(tmp_path) == _digest(folder)


def test_keep_float_leaves_matching_weights_float(int8, model, tmp_path) -> None:
    files = _quantize(model, tmp_path, "int8-weights", entries=("encode",), keep_float=["neck.*"])
    kept = files.info["kept_float"]
    # The neck's own parameters and the BatchNorm-folded convs inside it (named after its BatchNorm ops).
    assert kept and all(k.startswith("encode:") for k in kept)
    assert "encode:p_model_neck_deconv_lateral_conv0_weight_to_fp16" in kept
    assert _ops(files, "encode")["constexpr_affine_dequantize"] == 18 - len(kept) == 4  # the backbone's convs
    full = _errors(int8[0] / "encode.mlpackage", model)
    errors = _errors(tmp_path / "encode.mlpackage", model)
    for name, (worst, _) in errors.items():
        if name.startswith("p_model_neck_"):
            assert worst < 2**-10, name  # fp16 of the fp32 weight, no int8 step
        else:
            assert worst == pytest.approx(full[name][0]), name  # the backbone is quantized as before


@pytest.mark.slow
def test_multifunction_package_compresses_every_function(model, calibration, tmp_path) -> None:
    """iOS18: every entry point, one package, each function compressed before the merge."""
    entries = tuple(ENTRY_POINTS)
    files = _quantize(model, tmp_path, "palettize-4", entries=entries, deployment_target="iOS18")
    assert set(files.entry_files.values()) == {coreml.MULTIFUNCTION_FILE}
    assert dict(files.entry_methods) == {e: e for e in entries}
    assert files.info["spec_check"]["specification_version"] == 9
    for entry in entries:
        assert _ops(files, entry)["constexpr_lut_to_dense"] > 0, entry
    spec = coreml._coremltools().utils.load_spec(str(tmp_path / coreml.MULTIFUNCTION_FILE))
    assert sorted(spec.mlProgram.functions) == sorted(entries)


# ---- errors ---------------------------------------------------------------------------------------------


def test_quantizer_errors_name_the_fix(model, calibration, tmp_path) -> None:
    quantizer = get_quantizer("coreml")
    assert quantizer.target == "coreml" and set(quantizer.schemes) == {
        "int8-weights", "palettize-6", "palettize-4", "w8a8"}
    with pytest.raises(QuantizationError, match="int8-weights, palettize-6, palettize-4, w8a8"):
        _quantize(model, tmp_path, "int4", calibration)
    with pytest.raises(QuantizationError, match="--calib"):
        _quantize(model, tmp_path, "w8a8", None)
    with pytest.raises(QuantizationError, match="--option deployment_target=iOS17"):
        _quantize(model, tmp_path, "w8a8", calibration, deployment_target="iOS16")
    with pytest.raises(QuantizationError, match="entry_points including panoptic"):
        _quantize(model, tmp_path, "w8a8", calibration, entries=("encode", "panoptic"))
    with pytest.raises(QuantizationError, match="matches no module"):
        _quantize(model, tmp_path, "int8-weights", keep_float=["no_such_head.*"])
    other = load_calibration("synthetic", model, input_size=(96, 96), num_prompts=K, entry_points=("encode",),
                             count=1)
    with pytest.raises(QuantizationError, match="same input size"):
        _quantize(model, tmp_path, "w8a8", other, entries=("encode",))
    assert not any(tmp_path.iterdir())


def test_the_mil_reference_runs_every_scheme_close_to_fp32(model, float32, int8, palettized, w8a8) -> None:
    """Core ML numerics of the compressed packages off macOS: the reference evaluator decompresses the stored
    int8 / palettized weights (constexpr ops) and runs the int8 activations' quantize / dequantize pairs."""
    from rapsam.convert.mil import MILRunner

    image = np.random.default_rng(0).uniform(0, 255, (1, 3, *SIZE)).astype(np.float32)
    with torch.no_grad():
        expected = model.encode(torch.from_numpy(image)).numpy().ravel()

    def cosine(folder: Path, files) -> float:
        runner = MILRunner(folder, files.entry_files, files.entry_methods, image_input=False)
        assert runner.runtime.startswith("MIL reference")
        got = runner.run("encode", {"image": image})["features"].ravel()
        return float(got @ expected / (np.linalg.norm(got) * np.linalg.norm(expected)))

    assert cosine(*float32) > 0.99999
    assert cosine(*int8) > 0.999
    assert cosine(*palettized[6]) > 0.99 and cosine(*palettized[4]) > 0.9
    assert cosine(*w8a8) > 0.99
