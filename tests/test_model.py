"""The assembled model: registry, parameter counts, official names, decoder maths, prompt semantics."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

import rapsam
from rapsam.config import VARIANTS
from rapsam.models.backbones import BACKBONES, build_backbone
from rapsam.models.decoder import KernelUpdator, MultiheadAttention, open_vocab_logits
from rapsam.models.head import BOX, PADDING, POINT, box_sine_encoding, normalize_boxes
from rapsam.models.neck import YOSONeck
from rapsam.models.rapsam import RapSAM

# Whole-model parameter counts (open-vocabulary classifier, 133 COCO classes, d=256, 100 queries).
PARAMS = {
    "rapsam_r18": 20_827_445,
    "rapsam_r50": 47_252_245,
    "rapsam_edgenext_xxs": 9_897_609,
    "rapsam_edgenext_xs": 10_934_809,
    "rapsam_edgenext_s": 14_330_741,
    "rapsam_topformer_t": 10_252_093,
    "rapsam_topformer_s": 12_181_057,
    "rapsam_topformer_b": 14_618_629,
    "rapsam_seaformer_t": 10_308_797,
    "rapsam_seaformer_s": 12_678_369,
    "rapsam_seaformer_b": 17_371_845,
    "rapsam_seaformer_l": 22_944_693,
    "rapsam_tiny": 123_116,
}

# Keys and shapes of the released rapsam_r50_12e.pth (mmdet names), written from the official modules.
OFFICIAL_R50_KEYS = {
    "backbone.conv1.weight": (64, 3, 7, 7),
    "backbone.layer4.2.conv3.weight": (2048, 512, 1, 1),
    "neck.deconv.lateral_conv0.weight": (1024, 2048, 1, 1),
    "neck.deconv.deform_conv1.dcn_offset.weight": (27, 1024, 3, 3),
    "neck.deconv.deform_conv1.dcn.weight": (512, 1024, 3, 3),
    "neck.deconv.deform_conv3.up_sample.weight": (128, 128, 4, 4),
    "neck.deconv.deform_conv3.up_bn.running_var": (128,),
    "neck.deconv.bias": (1, 128, 1, 1),
    "neck.deconv.conv_a5.weight": (128, 1024, 1, 1),
    "neck.loc_conv.weight": (256, 130, 1, 1),
    "panoptic_head.kernels.weight": (100, 256),
    "panoptic_head.mask_tokens.weight": (1, 256),
    "panoptic_head.pb_embedding.weight": (2, 256),
    "panoptic_head.pos_linear.weight": (256, 512),
    "panoptic_head.mask_heads.0.kernel_update.dynamic_layer.weight": (512, 256),
    "panoptic_head.mask_heads.0.kernel_update.fc_norm.weight": (256,),
    "panoptic_head.mask_heads.1.s_atten.in_proj_weight": (768, 256),
    "panoptic_head.mask_heads.1.s_atten.out_proj.weight": (256, 256),
    "panoptic_head.mask_heads.2.ffn.layers.0.0.weight": (2048, 256),
    "panoptic_head.mask_heads.2.ffn.layers.1.weight": (256, 2048),
    "panoptic_head.mask_heads.2.cls_fcs.0.weight": (256, 256),
    "panoptic_head.mask_heads.2.cls_fcs.1.bias": (256,),
    "panoptic_head.mask_heads.2.cls_proj.4.weight": (768, 256),
    "panoptic_head.mask_heads.0.mask_fcs.0.weight": (256, 256),
    "panoptic_head.mask_heads.0.fc_mask.weight": (256, 256),
    "panoptic_head.mask_heads.0.iou_embed.4.weight": (1, 256),
    "panoptic_head.panoptic_attn.input_gate.weight": (256, 256),
    "panoptic_head.panoptic_cls.0.weight": (768, 256),
    "panoptic_head.prompt_attn.attn.in_proj_weight": (768, 256),
    "panoptic_head.prompt_attn.attn.out_proj.bias": (256,),
    "panoptic_head.prompt_norm.weight": (256,),
    "panoptic_head.prompt_iou.weight": (1, 256),
}


def test_unknown_variant_lists_valid_names() -> None:
    with pytest.raises(KeyError, match="rapsam_r18.*rapsam_tiny"):
        rapsam.build_model("rapsam_r99")


def test_variant_registry_covers_the_issue() -> None:
    expected = {"rapsam_r18", "rapsam_r50", "rapsam_tiny", "rapsam_edgenext_demo"}
    expected |= {f"rapsam_edgenext_{s}" for s in ("xxs", "xs", "s")}
    expected |= {f"rapsam_topformer_{s}" for s in "tsb"} | {f"rapsam_seaformer_{s}" for s in "tsbl"}
    assert set(VARIANTS) == expected


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_returns_what_it_declares(name: str) -> None:
    backbone = build_backbone(name).eval()
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 128, 96))
    assert len(features) == 4
    for feature, channels, stride in zip(features, backbone.feature_info.channels, backbone.feature_info.strides):
        assert tuple(feature.shape) == (1, channels, 128 // stride, 96 // stride)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_parameter_counts(name: str) -> None:
    model = rapsam.build_model(name)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]


def test_paper_parameter_rows() -> None:
    """Table 3 of the paper: R50 47.2M, EdgeNeXt 14.3M, TopFormer 15.0M match within 5%; R18 (22.8M) does
    not, see the README."""
    for name, paper in (("rapsam_r50", 47.2e6), ("rapsam_edgenext_s", 14.3e6), ("rapsam_topformer_b", 15.0e6)):
        assert abs(PARAMS[name] / paper - 1) < 0.05, name
    assert abs(PARAMS["rapsam_r18"] / 22.8e6 - 1) == pytest.approx(0.0865, abs=1e-3)


def test_state_dict_uses_official_names() -> None:
    state = rapsam.build_model("rapsam_r50").state_dict()
    for key, shape in OFFICIAL_R50_KEYS.items():
        assert tuple(state[key].shape) == shape, key


def test_forward_shapes(tiny_model) -> None:
    config = tiny_model.config
    with torch.no_grad():
        features = tiny_model.encode(torch.rand(1, 3, 64, 96) * 255)
        masks, logits, queries = tiny_model.panoptic_logits(features)
        boxes = torch.tensor([[[4.0, 4.0, 10.0, 10.0], [10.0, 20.0, 60.0, 50.0]]])
        prompt_masks, iou = tiny_model.prompt_logits(features, boxes, torch.tensor([[POINT, BOX]]))
    assert features.shape == (1, config.hidden_dim, 16, 24)
    assert masks.shape == (1, config.num_queries, 16, 24)
    assert logits.shape == (1, config.num_queries, config.taxonomy.num_classes + 1)
    assert queries.shape == (1, config.num_queries, config.hidden_dim)
    assert prompt_masks.shape == (1, 2, 16, 24) and iou.shape == (1, 2)


def test_prompts_are_independent_and_padding_is_blank(tiny_model) -> None:
    features = tiny_model.encode(torch.rand(1, 3, 64, 64) * 255)
    boxes = torch.tensor([[[4.0, 4.0, 10.0, 10.0], [10.0, 20.0, 60.0, 50.0], [0.0, 0.0, 0.0, 0.0]]])
    with torch.no_grad():
        masks, iou = tiny_model.prompt_logits(features, boxes, torch.tensor([[POINT, BOX, PADDING]]))
        alone_masks, alone_iou = tiny_model.prompt_logits(features, boxes[:, 1:2], torch.tensor([[BOX]]))
    torch.testing.assert_close(masks[:, 1:2], alone_masks, atol=1e-5, rtol=0)
    torch.testing.assert_close(iou[:, 1:2], alone_iou, atol=1e-6, rtol=0)
    assert bool((masks[0, 2] == -1e4).all()) and float(iou[0, 2]) == 0.0
    assert not torch.allclose(masks[0, 0], masks[0, 1])


@pytest.mark.parametrize("click_embedding", ["box", "point"])
def test_clicks_use_the_configured_prompt_embedding(click_embedding: str) -> None:
    """As the official training labels every prompt a box, a click is by default a small box to the model;
    a model trained with distinct labels gives the two kinds different embeddings."""
    config = dataclasses.replace(rapsam.get_config("rapsam_tiny"), click_embedding=click_embedding)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = RapSAM(config).eval()
    boxes = torch.tensor([[[10.0, 10.0, 40.0, 40.0]]])
    with torch.no_grad():
        features = model.encode(torch.rand(1, 3, 64, 64) * 255)
        as_point, _ = model.prompt_logits(features, boxes, torch.tensor([[POINT]]))
        as_box, _ = model.prompt_logits(features, boxes, torch.tensor([[BOX]]))
    difference = float((as_point - as_box).abs().max())
    assert difference == 0.0 if click_embedding == "box" else difference > 1e-3


def test_box_normalisation_and_sine_encoding_match_mmdet() -> None:
    boxes = torch.tensor([[[16.0, 8.0, 48.0, 40.0], [-5.0, 0.0, 3.0, 70.0]]])
    normalized = normalize_boxes(boxes, height=64, width=64)
    assert normalized[0, 0].tolist() == pytest.approx([0.5, 0.375, 0.5, 0.5])
    # clamped into (0, 1) as mmdet's inverse_sigmoid + sigmoid do
    assert normalized[0, 1].tolist() == pytest.approx([0.0, 0.546875, 0.125, 1.0], abs=2e-5)
    encoding = box_sine_encoding(normalized, num_feats=8)
    assert encoding.shape == (1, 2, 32)
    # first y feature: sin(cy * 2pi / 10000 ** 0); first x feature of the second block: sin(cx * 2pi)
    assert float(encoding[0, 0, 0]) == pytest.approx(math.sin(0.375 * 2 * math.pi), abs=1e-6)
    assert float(encoding[0, 0, 8]) == pytest.approx(math.sin(0.5 * 2 * math.pi), abs=1e-6)
    # second pair uses 10000 ** (2 * 1 / 8) as its period divisor, cosine
    assert float(encoding[0, 0, 3]) == pytest.approx(math.cos(0.375 * 2 * math.pi / 10000 ** 0.25), abs=1e-6)


def test_attention_matches_torch_multihead_attention() -> None:
    ours = MultiheadAttention(32, 4)
    theirs = nn.MultiheadAttention(32, 4, batch_first=True)
    theirs.load_state_dict(ours.state_dict())
    x, keys = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
    forbid = torch.rand(5, 7) > 0.6
    forbid[:, 0] = False
    with torch.no_grad():
        expected = theirs(x, keys, keys, attn_mask=forbid, need_weights=False)[0]
        actual = ours(x, keys, keys, attn_bias=forbid.float() * -1e4)
        # self-attention (one tensor as query, key and value) takes the single-GEMM projection
        expected_self = theirs(x, x, x, need_weights=False)[0]
        actual_self = ours(x, x, x)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(actual_self, expected_self, atol=1e-5, rtol=0)


def test_kernel_updator_is_the_gated_update() -> None:
    """Q' = sigma(LN(W_ug g)) * LN(X_out) + sigma(LN(W_ig g)) * LN(Q_out), g = X_in * Q_in, then FC+LN+ReLU."""
    updator = KernelUpdator(in_channels=8, feat_channels=8)
    pooled, kernels = torch.randn(1, 3, 8), torch.randn(1, 3, 8)
    with torch.no_grad():
        x_in, x_out = updator.dynamic_layer(pooled).split(8, -1)
        q_in, q_out = updator.input_layer(kernels).split(8, -1)
        gate = x_in * q_in
        update_gate = updator.norm_in(updator.update_gate(gate)).sigmoid()
        input_gate = updator.input_norm_in(updator.input_gate(gate)).sigmoid()
        mixed = update_gate * updator.norm_out(x_out) + input_gate * updator.input_norm_out(q_out)
        expected = torch.relu(updator.fc_norm(updator.fc_layer(mixed)))
        torch.testing.assert_close(updator(pooled, kernels), expected)


def test_open_vocab_logits_best_prototype_times_scale() -> None:
    embed = torch.zeros(4, 3, 2)  # (E, C+1, P): class 0 prototypes e0/e1, class 1 e2/e3, no-object zero
    embed[0, 0, 0] = embed[1, 0, 1] = embed[2, 1, 0] = embed[3, 1, 1] = 1.0
    query = torch.tensor([[[3.0, 0.0, 4.0, 0.0]]])  # cosine 0.6 with e0, 0.8 with e2
    logits = open_vocab_logits(query, embed)
    assert logits[0, 0].tolist() == pytest.approx([60.0, 80.0, 0.0], rel=1e-4)


def test_plain_conv_neck_takes_the_deformable_weights() -> None:
    model = rapsam.build_model("rapsam_tiny")
    plain = YOSONeck(feature_info=model.backbone.feature_info, agg_dim=16, hidden_dim=32, deformable=False)
    state = {k: v for k, v in model.neck.state_dict().items() if "dcn_offset" not in k}
    plain.load_state_dict(state, strict=True)
    features = model.backbone(torch.rand(1, 3, 64, 64))
    with torch.no_grad():
        # zero offsets and sigmoid(0) = 0.5 modulation: the deformable neck is the plain one at half weight
        for layer in (model.neck.deconv.deform_conv1, model.neck.deconv.deform_conv2, model.neck.deconv.deform_conv3):
            layer.dcn.weight.mul_(2)
        torch.testing.assert_close(plain.eval()(features), model.neck(features), atol=1e-4, rtol=1e-4)



@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_hard_mask_is_the_logit_threshold_for_every_float(dtype: torch.dtype) -> None:
    from rapsam.models.decoder import hard_mask

    info = torch.finfo(dtype)
    edges = torch.tensor([0.0, -0.0, info.tiny, -info.tiny, info.smallest_normal / 4, -info.smallest_normal / 4,
                          info.max, -info.max, float("inf"), float("-inf")])
    logits = torch.cat([edges, torch.randn(10_000) * 10.0 ** torch.randint(-8, 4, (10_000,))]).to(dtype)
    assert torch.equal(hard_mask(logits), (logits > 0).to(dtype))  # subnormals included


def test_mask_pooling_has_no_gradient_through_the_binary_mask() -> None:
    """Logits of exactly 0 sit on the clamp's edge, where its slope was 1/tiny: bf16 training overflowed there
    (NaN at the fourth step on the GPU). The binary mask is a selection; only the features get gradients."""
    from rapsam.models.decoder import PixelFeatures, hard_mask_pool

    logits = torch.tensor([[[0.0, 2.0, -1.0, 0.0]]], dtype=torch.bfloat16, requires_grad=True)
    features = torch.randn(1, 3, 2, 2, dtype=torch.bfloat16, requires_grad=True)
    pooled = hard_mask_pool(logits, PixelFeatures.of(features))
    torch.testing.assert_close(pooled, features.flatten(2)[:, :, 1][:, None].detach())  # only the logit-2 pixel
    (pooled.float() * 1e3).sum().backward()
    assert logits.grad is None
    assert torch.isfinite(features.grad).all() and features.grad.flatten(2)[0, :, 1].eq(1e3).all()


@pytest.mark.parametrize("height, width", [(3, 5), (7, 1), (96, 32), (128, 128)])
def test_every_pooling_gives_the_same_sums(height: int, width: int) -> None:
    from rapsam.models.decoder import POOLINGS, PixelFeatures

    # Positive terms: sums in another order then differ by rounding only, not by cancellation.
    features, weights = torch.rand(2, 8, height, width), torch.rand(2, 4, height * width)
    by_matmul = PixelFeatures.of(features).pool(weights)
    torch.testing.assert_close(by_matmul, torch.einsum("bqp,bcp->bqc", weights, features.flatten(2)))
    for pooling in POOLINGS:
        torch.testing.assert_close(PixelFeatures.of(features, pooling).pool(weights), by_matmul, rtol=1e-5, atol=0)


@pytest.mark.parametrize("height, width, chunks", [(96, 32, 3), (128, 128, 16), (16, 16, 2), (3, 5, 3)])
def test_pixel_chunks_pool_by_one_product_over_chunks_of_at_most_1024_pixels(height: int, width: int,
                                                                             chunks: int) -> None:
    from rapsam.models.decoder import PixelFeatures

    features, weights = torch.randn(1, 8, height, width), torch.rand(1, 4, height * width)
    program = torch.export.export(_Pooling(PixelFeatures.of(features, "pixel_chunks")), (weights,))
    (product,) = [n for n in program.graph.nodes if n.target == torch.ops.aten.bmm.default]
    assert list(product.meta["val"].shape) == [chunks, 4, 8]


class _Pooling(torch.nn.Module):
    def __init__(self, pixels: object) -> None:
        super().__init__()
        self.pixels = pixels

    def forward(self, weights: torch.Tensor) -> torch.Tensor:
        return self.pixels.pool(weights)


def test_the_pooling_switch_is_scoped() -> None:
    from rapsam.models.head import pixel_pooling

    model = rapsam.build_model("rapsam_tiny").eval()
    image = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        expected = model.segment_logits(image)
        with pixel_pooling(model, "pixel_chunks"):
            assert model.panoptic_head.pooling == "pixel_chunks"
            switched = model.segment_logits(image)
    assert model.panoptic_head.pooling == "matmul"
    for got, want in zip(switched, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="unknown pooling 'sum'; valid: matmul, pixel_chunks"):
        pixel_pooling(model, "sum").__enter__()
