"""SeaFormer backbones: declared features, official sizes and checkpoint names, export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from rapsam.models.backbones.base import BACKBONES, Backbone
from rapsam.models.backbones.pretrained import CheckpointError, load_official_weights
from rapsam.models.backbones.seaformer import SeaFormer, SqueezeAxialPositionalEmbedding

SIZES = ("seaformer_tiny", "seaformer_small", "seaformer_base", "seaformer_large")

# Backbone parameters, classifier excluded, counted from the official `SeaFormer_{T,S,B,L}` definitions in
# fudan-zvg/SeaFormer `seaformer-cls/seaformer.py` (re-striding smb5 changes no parameter).
PARAMS = {
    "seaformer_tiny": 1_620_096,
    "seaformer_small": 3_912_656,
    "seaformer_base": 8_485_664,
    "seaformer_large": 13_725_504,
}
# The authors' README lists #Params (M) with the 1000-way `linear` classifier included.
PUBLISHED_PARAMS_M = {"seaformer_tiny": 1.8, "seaformer_small": 4.1, "seaformer_base": 8.7, "seaformer_large": 14.0}
CHANNELS = {
    "seaformer_tiny": (16, 32, 64, 160),
    "seaformer_small": (24, 48, 96, 192),
    "seaformer_base": (32, 64, 128, 256),
    "seaformer_large": (64, 128, 192, 320),
}

# Official names and shapes, worked out by hand from the official code (Conv2d_BN children `c`/`bn`,
# InvertedResidual `conv` Sequential with activations at odd indices, nh_kd = key_dim * heads,
# dh = 2 * nh_kd, the detail dwconv over cat(q, k, v)).
OFFICIAL_TINY_KEYS = {
    "smb1.stem_block.0.c.weight": (16, 3, 3, 3),
    "smb1.layer1.conv.0.c.weight": (16, 1, 3, 3),  # expand ratio 1: depth-wise conv comes first
    "smb1.layer2.conv.0.c.weight": (64, 16, 1, 1),
    "smb2.layer1.conv.2.c.weight": (48, 1, 5, 5),
    "smb5.layer1.conv.4.bn.running_mean": (160,),
    "trans1.transformer_blocks.0.attn.to_q.c.weight": (64, 128, 1, 1),
    "trans1.transformer_blocks.1.attn.pos_emb_rowq.pos_embed": (1, 64, 16),
    "trans1.transformer_blocks.0.mlp.fc1.c.weight": (256, 128, 1, 1),
    "trans2.transformer_blocks.0.attn.dwconv.c.weight": (384, 1, 3, 3),
    "trans2.transformer_blocks.1.mlp.dwconv.bias": (640,),
    "trans2.transformer_blocks.1.attn.proj.1.bn.num_batches_tracked": (),
}
OFFICIAL_LARGE_KEYS = {
    "smb1.layer1.conv.2.c.weight": (96, 1, 3, 3),
    "trans1.transformer_blocks.2.attn.to_v.c.weight": (256, 192, 1, 1),
    "trans2.transformer_blocks.0.attn.pos_emb_columnk.pos_embed": (1, 160, 16),
    "trans3.transformer_blocks.2.mlp.fc1.c.weight": (1920, 320, 1, 1),
    "trans3.transformer_blocks.0.attn.proj_encode_column.1.c.weight": (384, 384, 1, 1),
}


def randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Random weights and BN statistics, so that zero-initialised branches are exercised too."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            noise = torch.randn(tensor.shape, generator=gen) * 0.2
            tensor.copy_(noise.abs() + 0.5 if name.endswith("running_var") else noise)


def official_checkpoint(model: SeaFormer) -> dict[str, torch.Tensor]:
    """Our weights under the official names, plus the classifier the official file carries."""
    state = {k: v.clone() for k, v in model.state_dict().items()}  # official_key_map is the identity here
    width = model.feature_info.channels[-1]
    state["linear.weight"] = torch.randn(1000, width)
    state["linear.bias"] = torch.randn(1000)
    return state


@pytest.fixture(scope="module")
def models() -> dict[str, Backbone]:
    return {name: BACKBONES[name]().eval() for name in SIZES}


@pytest.mark.parametrize("name", SIZES)
def test_declared_channels(models: dict[str, Backbone], name: str) -> None:
    # that the outputs have these channels and strides is checked for every backbone in test_model.py
    assert models[name].feature_info.channels == CHANNELS[name]


@pytest.mark.parametrize("name", SIZES)
def test_parameter_count_matches_official(models: dict[str, Backbone], name: str) -> None:
    model = models[name]
    count = sum(p.numel() for p in model.parameters())
    assert count == PARAMS[name]
    width = model.feature_info.channels[-1]
    with_classifier = count + width * 1000 + 1000
    assert round(with_classifier / 1e6, 1) == PUBLISHED_PARAMS_M[name]


@pytest.mark.parametrize(
    ("name", "keys"), [("seaformer_tiny", OFFICIAL_TINY_KEYS), ("seaformer_large", OFFICIAL_LARGE_KEYS)]
)
def test_official_key_names(models: dict[str, Backbone], name: str, keys: dict[str, tuple[int, ...]]) -> None:
    state = models[name].state_dict()
    for key, shape in keys.items():
        assert key in state, key
        assert tuple(state[key].shape) == shape, key


def test_official_checkpoint_loads_strictly(tmp_path: Path) -> None:
    source = BACKBONES["seaformer_small"]()
    randomize(source, seed=1)
    checkpoint = official_checkpoint(source)  # type: ignore[arg-type]
    path = tmp_path / "SeaFormer_S.pth"
    # timm training checkpoints keep the EMA weights next to the raw ones; the loader prefers the EMA.
    torch.save(
        {"state_dict": {k: torch.zeros_like(v) for k, v in checkpoint.items()}, "state_dict_ema": checkpoint}, path
    )

    target = BACKBONES["seaformer_small"]()
    dropped = load_official_weights(target, path)
    assert sorted(dropped) == ["linear.bias", "linear.weight"]
    loaded = target.state_dict()
    for key in (
        "smb1.stem_block.0.c.weight",
        "trans2.transformer_blocks.2.attn.pos_emb_rowq.pos_embed",
        "smb5.layer1.conv.2.bn.running_var",
    ):
        assert torch.equal(loaded[key], checkpoint[key])


def test_missing_key_names_the_key(tmp_path: Path) -> None:
    model = BACKBONES["seaformer_tiny"]()
    checkpoint = official_checkpoint(model)  # type: ignore[arg-type]
    missing = "trans2.transformer_blocks.1.attn.pos_emb_columnk.pos_embed"
    del checkpoint[missing]
    path = tmp_path / "SeaFormer_T.pth"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match=missing.replace(".", r"\.")):
        load_official_weights(model, path)


@pytest.mark.parametrize("length", [1, 2, 7, 16, 42])
def test_positional_embedding_resize_equals_official_linear(length: int) -> None:
    embedding = SqueezeAxialPositionalEmbedding(dim=8)
    x = torch.zeros(1, 8, length)
    official = F.interpolate(embedding.pos_embed, size=length, mode="linear", align_corners=False)
    torch.testing.assert_close(embedding(x), official, rtol=0, atol=1e-6)


def test_export_matches_eager() -> None:
    model = BACKBONES["seaformer_tiny"]().eval()
    randomize(model)
    x = torch.randn(1, 3, 64, 64)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        eager = model(x)
        graph = exported.module()(x)
    for a, b in zip(eager, graph, strict=True):
        assert (a - b).abs().max().item() <= 1e-5
