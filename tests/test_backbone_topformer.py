"""TopFormer backbone: declared features, parameter counts, official checkpoint names, pooling, export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from rapsam.models.backbones.base import build_backbone
from rapsam.models.backbones.pretrained import CheckpointError, load_official_weights
from rapsam.models.backbones.topformer import PyramidPoolAgg, TopFormer

SIZES = ("topformer_tiny", "topformer_small", "topformer_base")

# Stride 4: token-pyramid output (official `channels[0]`); strides 8-32: SIM outputs (`out_channels[1:]`).
CHANNELS = {
    "topformer_tiny": (16, 128, 128, 128),
    "topformer_small": (24, 192, 192, 192),
    "topformer_base": (32, 256, 256, 256),
}
# Counted on the official mmseg `Topformer` (hustvl/TopFormer, configs topformer_{tiny,small,base}.py) built
# with mmcv's ConvModule/BN stubbed out: tpm + trans + SIM.1-3. The ImageNet classification model is
# tpm + trans + head (BatchNorm1d + Linear(sum(channels), 1000)) without SIM: 1,503,304 / 3,105,928 /
# 5,068,872, i.e. the 1.5M / 3.1M / 5.1M that PaddleViT publishes for the ported official weights; the
# ADE20K table of the official README (1.4M / 3.1M / 5.1M) is this backbone plus a small SimpleHead.
BACKBONE_PARAMS = {"topformer_tiny": 1_369_920, "topformer_small": 2_968_464, "topformer_base": 4_958_048}
SIM_PARAMS = {"topformer_tiny": 76_032, "topformer_small": 160_128, "topformer_base": 274_944}
# sum(channels): the width of the global tokens and of the classifier's input.
EMBED_DIM = {"topformer_tiny": 208, "topformer_small": 296, "topformer_base": 384}
PUBLISHED_CLASSIFIER_MILLIONS = {"topformer_tiny": 1.5, "topformer_small": 3.1, "topformer_base": 5.1}

# Keys and shapes of topformer-T-224-66.2.pth, written from the official module tree: layer1 has no expansion
# conv (t=1) so its depthwise conv is conv.0; layer8 is the k=5, t=6 block from 64 to 96 channels; attention
# uses 4 heads of key_dim 16 and value dim 32 over 16+32+64+96 = 208 channels; the MLP is 2x wide.
OFFICIAL_TINY_KEYS = {
    "tpm.stem.0.c.weight": (16, 3, 3, 3),
    "tpm.stem.0.bn.running_var": (16,),
    "tpm.layer1.conv.0.c.weight": (16, 1, 3, 3),
    "tpm.layer1.conv.2.c.weight": (16, 16, 1, 1),
    "tpm.layer2.conv.0.c.weight": (64, 16, 1, 1),
    "tpm.layer8.conv.2.c.weight": (384, 1, 5, 5),
    "tpm.layer9.conv.4.bn.bias": (96,),
    "trans.transformer_blocks.0.attn.to_q.c.weight": (64, 208, 1, 1),
    "trans.transformer_blocks.0.attn.to_v.c.weight": (128, 208, 1, 1),
    "trans.transformer_blocks.3.attn.proj.1.c.weight": (208, 128, 1, 1),
    "trans.transformer_blocks.3.mlp.dwconv.bias": (416,),
}
# Keys of the official segmentation model that the ImageNet file lacks (mmcv ConvModule names: conv, bn).
OFFICIAL_TINY_SIM_KEYS = {
    "SIM.1.local_embedding.conv.weight": (128, 32, 1, 1),
    "SIM.3.global_act.bn.weight": (128,),
}


def _head(embed_dim: int) -> dict[str, torch.Tensor]:
    """The classifier of the ImageNet files (`head.bn` BatchNorm1d, `head.l` Linear), dropped on load."""
    return {
        "head.bn.weight": torch.ones(embed_dim),
        "head.bn.bias": torch.zeros(embed_dim),
        "head.bn.running_mean": torch.zeros(embed_dim),
        "head.bn.running_var": torch.ones(embed_dim),
        "head.bn.num_batches_tracked": torch.tensor(0),
        "head.l.weight": torch.zeros(1000, embed_dim),
        "head.l.bias": torch.zeros(1000),
    }


def _write_imagenet_file(backbone: TopFormer, name: str, path: Path) -> dict[str, torch.Tensor]:
    """Write a file shaped like the official ImageNet release and return its EMA weights.

    Our names are the official ones (the key map is the identity apart from the dropped head), so the file is
    our state dict with random values, without SIM, plus the head. The release holds `state_dict` and
    `state_dict_ema`; the authors' code loads the EMA one, and so does ours.
    """
    ema = {
        k: torch.randn_like(v) if v.is_floating_point() else v
        for k, v in backbone.state_dict().items()
        if not k.startswith("SIM.")
    }
    ema |= _head(EMBED_DIM[name])
    raw = {k: torch.zeros_like(v) for k, v in ema.items()}
    torch.save({"state_dict": raw, "state_dict_ema": ema, "epoch": 300}, path)
    return ema


@pytest.mark.parametrize("name", SIZES)
def test_declared_channels(name: str) -> None:
    # that the outputs have these channels and strides is checked for every backbone in test_model.py
    assert build_backbone(name).feature_info.channels == CHANNELS[name]


@pytest.mark.parametrize("name", SIZES)
def test_parameter_count(name: str) -> None:
    backbone = build_backbone(name)
    assert sum(p.numel() for p in backbone.parameters()) == BACKBONE_PARAMS[name]
    assert sum(p.numel() for p in backbone.SIM.parameters()) == SIM_PARAMS[name]
    head = sum(t.numel() for k, t in _head(EMBED_DIM[name]).items() if "running" not in k and "num_" not in k)
    classifier = BACKBONE_PARAMS[name] - SIM_PARAMS[name] + head
    assert round(classifier / 1e6, 1) == PUBLISHED_CLASSIFIER_MILLIONS[name]


def test_state_dict_has_official_names() -> None:
    state = build_backbone("topformer_tiny").state_dict()
    for key, shape in (OFFICIAL_TINY_KEYS | OFFICIAL_TINY_SIM_KEYS).items():
        assert tuple(state[key].shape) == shape, key
    assert TopFormer.official_key_map("head.l.weight") is None
    assert TopFormer.official_key_map("tpm.stem.0.c.weight") == "tpm.stem.0.c.weight"


@pytest.mark.parametrize("name", SIZES)
def test_imagenet_weights_land_and_sim_keeps_its_init(name: str, tmp_path: Path) -> None:
    backbone = build_backbone(name)
    sim_before = {k: v.clone() for k, v in backbone.state_dict().items() if k.startswith("SIM.")}
    ema = _write_imagenet_file(backbone, name, tmp_path / "imagenet.pth")
    dropped = load_official_weights(backbone, tmp_path / "imagenet.pth")
    assert sorted(dropped) == sorted(_head(EMBED_DIM[name]))
    state = backbone.state_dict()
    landed = [k for k in state if not k.startswith("SIM.")]
    assert len(landed) == len(ema) - len(dropped)
    assert all(torch.equal(state[k], ema[k]) for k in landed)
    assert all(torch.equal(state[k], v) for k, v in sim_before.items())


def test_missing_key_is_named(tmp_path: Path) -> None:
    backbone = build_backbone("topformer_tiny")
    ema = _write_imagenet_file(backbone, "topformer_tiny", tmp_path / "imagenet.pth")
    del ema["trans.transformer_blocks.2.mlp.dwconv.weight"]
    torch.save({"state_dict_ema": ema}, tmp_path / "imagenet.pth")
    with pytest.raises(CheckpointError, match=r"trans\.transformer_blocks\.2\.mlp\.dwconv\.weight"):
        load_official_weights(backbone, tmp_path / "imagenet.pth")


def test_full_official_names_load_strictly(tmp_path: Path) -> None:
    """A file with every official key (as a segmentation checkpoint's backbone has them) loads strictly."""
    source = build_backbone("topformer_small")
    full = source.state_dict() | _head(EMBED_DIM["topformer_small"])
    torch.save({"state_dict": full}, tmp_path / "full.pth")
    target = build_backbone("topformer_small")
    load_official_weights(target, tmp_path / "full.pth")
    assert torch.equal(target.SIM[2].global_embedding.conv.weight, source.SIM[2].global_embedding.conv.weight)


POOL_SIZES = [(64, 64), (32, 128), (128, 192), (512, 320), (96, 160), (120, 224), (800, 1333)]


@pytest.mark.parametrize("size", POOL_SIZES)
def test_pyramid_pooling_equals_adaptive_pooling_bitwise(size: tuple[int, int]) -> None:
    """Static pooling replaces the official adaptive pooling only where it gives the same bits."""
    torch.manual_seed(0)
    h, w = size
    # The token maps' sizes: each stride-2 conv rounds up.
    widths_and_strides = ((16, 4), (32, 8), (64, 16), (96, 32))
    inputs = [torch.randn(2, c, -(-h // s), -(-w // s)) * 10 for c, s in widths_and_strides]
    out_size = ((inputs[-1].shape[2] - 1) // 2 + 1, (inputs[-1].shape[3] - 1) // 2 + 1)
    expected = torch.cat([F.adaptive_avg_pool2d(x, out_size) for x in inputs], dim=1)
    assert torch.equal(PyramidPoolAgg(stride=2)(inputs), expected)


@pytest.mark.parametrize("size", [64, 128])
def test_export_matches_eager(size: int) -> None:
    torch.manual_seed(0)
    backbone = build_backbone("topformer_tiny").eval()
    x = torch.randn(1, 3, size, size)
    program = torch.export.export(backbone, (x,))
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert not any("adaptive" in t for t in targets), targets
    with torch.no_grad():
        eager = backbone(x)
    exported = program.module()(x)
    for a, b in zip(eager, exported):
        assert (a - b).abs().max().item() <= 1e-5
