"""EdgeNeXt backbone: declared features, parameter counts, official checkpoint names, torch.export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rapsam.models.backbones.base import build_backbone
from rapsam.models.backbones.edgenext import (
    SINGLE_PASS_TAPS,
    ConvEncoder,
    DepthwiseConv2d,
    EdgeNeXt,
    LayerNorm2d,
    SDTAEncoder,
    block_form,
    kernel_form,
    layer_norm_form,
)
from rapsam.models.backbones.pretrained import CheckpointError, load_official_weights

SIZES = ("edgenext_xx_small", "edgenext_x_small", "edgenext_small")

# Counted by hand from the official `models/*.py` (stem, 3 downsamplers, ConvEncoder and SDTA blocks).
# With the classifier (norm 2*C + head 1000*C + 1000) they are 1,327,216 / 2,336,804 / 5,586,832,
# i.e. the 1.33M / 2.34M / 5.59M of the authors' README model zoo.
BACKBONE_PARAMS = {
    "edgenext_xx_small": 1_157_880,
    "edgenext_x_small": 2_143_420,
    "edgenext_small": 5_281_224,
}
HEAD_PARAMS = {"edgenext_xx_small": 169_336, "edgenext_x_small": 193_384, "edgenext_small": 305_608}
CHANNELS = {
    "edgenext_xx_small": (24, 48, 88, 168),
    "edgenext_x_small": (32, 64, 100, 192),
    "edgenext_small": (48, 96, 160, 304),
}

# Keys of the released edgenext_xx_small.pth, written from the authors' module tree: stage 1 ends in an
# SDTA block with the Fourier position encoding; stage 2 (88 ch) splits into 30+30+28 channels.
OFFICIAL_XX_SMALL_KEYS = {
    "downsample_layers.0.0.weight": (24, 3, 4, 4),
    "downsample_layers.0.1.bias": (24,),
    "downsample_layers.3.0.weight": (88,),
    "downsample_layers.3.1.weight": (168, 88, 2, 2),
    "stages.0.1.dwconv.weight": (24, 1, 3, 3),
    "stages.1.1.pos_embd.token_projection.weight": (48, 64, 1, 1),
    "stages.1.1.xca.temperature": (4, 1, 1),
    "stages.2.5.convs.1.weight": (30, 1, 3, 3),
    "stages.3.1.xca.qkv.weight": (504, 168),
    "stages.3.1.gamma_xca": (168,),
}


def _head_keys(channels: int) -> dict[str, torch.Tensor]:
    return {
        "norm.weight": torch.ones(channels),
        "norm.bias": torch.zeros(channels),
        "head.weight": torch.zeros(1000, channels),
        "head.bias": torch.zeros(1000),
    }


@pytest.mark.parametrize("name", SIZES)
def test_declared_channels(name: str) -> None:
    # that the outputs have these channels and strides is checked for every backbone in test_model.py
    assert build_backbone(name).feature_info.channels == CHANNELS[name]


@pytest.mark.parametrize("name", SIZES)
def test_parameter_count(name: str) -> None:
    backbone = build_backbone(name)
    assert sum(p.numel() for p in backbone.parameters()) == BACKBONE_PARAMS[name]
    head = sum(t.numel() for t in _head_keys(CHANNELS[name][-1]).values())
    assert head == HEAD_PARAMS[name]


def test_state_dict_has_official_names() -> None:
    state = build_backbone("edgenext_xx_small").state_dict()
    for key, shape in OFFICIAL_XX_SMALL_KEYS.items():
        assert tuple(state[key].shape) == shape, key


@pytest.mark.parametrize("name", SIZES)
def test_loads_official_checkpoint_strictly(name: str, tmp_path: Path) -> None:
    source = build_backbone(name)
    # Our names are the official names (the key map is the identity apart from the head).
    official = {key: torch.randn_like(value) for key, value in source.state_dict().items()}
    official |= _head_keys(CHANNELS[name][-1])
    path = tmp_path / f"{name}.pth"
    torch.save({"model": official, "epoch": torch.tensor(299)}, path)

    target = build_backbone(name)
    dropped = load_official_weights(target, path)

    assert sorted(dropped) == ["head.bias", "head.weight", "norm.bias", "norm.weight"]
    for key, value in target.state_dict().items():
        assert torch.equal(value, official[key]), key


def test_missing_key_is_named(tmp_path: Path) -> None:
    backbone = build_backbone("edgenext_xx_small")
    official = dict(backbone.state_dict())
    del official["stages.1.1.xca.temperature"]
    path = tmp_path / "broken.pth"
    torch.save({"model": official}, path)
    with pytest.raises(CheckpointError, match=r"stages\.1\.1\.xca\.temperature"):
        load_official_weights(backbone, path)


def test_official_key_map_drops_only_the_classifier() -> None:
    assert EdgeNeXt.official_key_map("head.weight") is None
    assert EdgeNeXt.official_key_map("norm.bias") is None
    assert EdgeNeXt.official_key_map("stages.3.1.norm.weight") == "stages.3.1.norm.weight"


def test_torch_export_matches_eager() -> None:
    torch.manual_seed(0)
    backbone = build_backbone("edgenext_xx_small").eval()
    # Non-trivial layer scales and temperatures so the SDTA attention path really counts.
    with torch.no_grad():
        for name, param in backbone.named_parameters():
            if name.endswith(("gamma", "gamma_xca", "temperature")):
                param.uniform_(0.5, 1.5)
    x = torch.randn(1, 3, 64, 64)
    exported = torch.export.export(backbone, (x,))
    with torch.no_grad():
        expected = backbone(x)
        actual = exported.module()(x)
    for a, e in zip(actual, expected):
        assert (a - e).abs().max().item() <= 1e-5


def test_channels_last_layer_norms_compute_the_written_out_values() -> None:
    backbone = build_backbone("edgenext_xx_small").eval()
    for norm in (m for m in backbone.modules() if isinstance(m, LayerNorm2d)):
        torch.nn.init.normal_(norm.weight)
        torch.nn.init.normal_(norm.bias)
    image = torch.randn(1, 3, 64, 96) * 50
    with torch.no_grad():
        written_out = backbone(image)
        with layer_norm_form(backbone, "channels_last"):
            assert {m.form for m in backbone.modules() if isinstance(m, LayerNorm2d)} == {"channels_last"}
            fused = backbone(image)
    assert {m.form for m in backbone.modules() if isinstance(m, LayerNorm2d)} == {"written_out"}
    for got, want in zip(fused, written_out, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())
    with pytest.raises(ValueError, match="written_out, channels_last"), layer_norm_form(backbone, "nhwc"):
        pass


def test_depthwise_column_groups_compute_the_whole_kernel_with_single_pass_convs() -> None:
    backbone = build_backbone("edgenext_xx_small").eval()  # depthwise kernels 3, 5, 7, 9
    image = torch.randn(1, 3, 64, 96) * 50
    with torch.no_grad():
        whole = backbone(image)
        with kernel_form(backbone, "column_groups"):
            grouped = backbone(image)
            program = torch.export.export(backbone, (image,))
    for got, want in zip(grouped, whole, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * want.abs().max().item())
    convs = [n for n in program.graph.nodes if n.target == torch.ops.aten.conv2d.default]
    depthwise = [n for n in convs if len(n.args) > 6 and n.args[6] > 1]
    taps = sorted({n.args[1].meta["val"].shape[-2] * n.args[1].meta["val"].shape[-1] for n in depthwise})
    # 7x7 in groups of 3, 3, 1 columns; 9x9 in groups of 2, 2, 2, 2, 1; 3x3 and 5x5 whole.
    assert taps == [7, 9, 18, 21, 25] and max(taps) <= SINGLE_PASS_TAPS
    assert {m.form for m in backbone.modules() if isinstance(m, DepthwiseConv2d)} == {"whole"}


def test_channels_first_blocks_compute_the_authors_values_without_permutes_or_linears() -> None:
    torch.manual_seed(0)
    backbone = build_backbone("edgenext_xx_small").eval()  # SDTA blocks with and without position encoding
    with torch.no_grad():
        for name, param in backbone.named_parameters():
            if name.endswith(("gamma", "gamma_xca", "temperature", "norm.weight", "norm.bias")):
                torch.nn.init.normal_(param)
    image = torch.randn(1, 3, 64, 96) * 50
    with torch.no_grad():
        authors = backbone(image)
        with block_form(backbone, "channels_first"):
            channels_first = backbone(image)
            program = torch.export.export(backbone, (image,))
    for got, want in zip(channels_first, authors, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * want.abs().max().item())
    targets = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    assert not [t for t in targets if "linear" in t or "layer_norm" in t]
    # Left: each attention's k transposed for q @ kᵀ, and the constant grid of the position encoding.
    assert targets.count("aten.transpose.int") == 3 and targets.count("aten.permute.default") == 1
    assert {m.form for m in backbone.modules() if isinstance(m, (ConvEncoder, SDTAEncoder))} == {"channels_last"}
    with pytest.raises(ValueError, match="channels_last, channels_first"), block_form(backbone, "nhwc"):
        pass
