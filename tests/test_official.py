"""Importing the authors' released RAP-SAM: a synthetic checkpoint with the official names and shapes
(tests/data/rapsam_r50_12e_keys.txt) goes through `rapsam-import` strictly, every tensor lands and is used."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import rapsam
from rapsam.cli import convert_main, import_main
from rapsam.models.backbones.pretrained import CheckpointError
from rapsam.models.head import BOX, POINT
from rapsam.models.rapsam import RapSAM
from rapsam.official import import_official, preprocessor_from_meta
from rapsam.taxonomy import COCO_PANOPTIC_OV, COCO_YTVIS2019_OV, merge_class_texts

KEYS_FILE = Path(__file__).parent / "data" / "rapsam_r50_12e_keys.txt"


def official_shapes() -> dict[str, tuple[int, ...]]:
    shapes = {}
    for line in KEYS_FILE.read_text().splitlines():
        if line and not line.startswith("#"):
            name, shape = line.split()
            shapes[name] = () if shape == "scalar" else tuple(int(v) for v in shape.split("x"))
    return shapes


def official_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under the official names; BN statistics plausible (positive variances)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in official_shapes().items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(1000, dtype=torch.int64)
        elif name.endswith("running_var"):
            state[name] = 0.5 + torch.rand(shape, generator=generator)
        else:
            state[name] = 0.05 * torch.randn(shape, generator=generator)
    return state


class HistoryBuffer:
    """Stands for mmengine's logging buffer: a class `weights_only` refuses."""

    def __init__(self) -> None:
        self.values = np.arange(4.0)


def save_official(path: Path, state: dict[str, torch.Tensor], meta: dict | None = None) -> Path:
    """The mmengine checkpoint layout: meta block, state_dict, training state with arbitrary objects."""
    torch.save({"meta": meta or {"epoch": 12}, "state_dict": state, "message_hub": {"loss": HistoryBuffer()}}, path)
    return path


def save_classifier(path: Path, num_classes: int = 155, prototypes: int = 17, seed: int = 1) -> Path:
    generator = torch.Generator().manual_seed(seed)
    torch.save(nn.functional.normalize(torch.randn(num_classes, prototypes, 768, generator=generator), dim=-1), path)
    return path


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, torch.Tensor]]:
    folder = tmp_path_factory.mktemp("release")
    state = official_state()
    return (
        save_official(folder / "rapsam_r50_12e.pth", state),
        save_classifier(folder / "CocoPanopticOVDataset_YouTubeVISDataset_2019.pth"),
        state,
    )


@pytest.fixture(scope="module")
def imported(release: tuple[Path, Path, dict[str, torch.Tensor]]) -> RapSAM:
    checkpoint, classifier, _ = release
    return import_official(checkpoint, classifier)[0]


def test_every_official_tensor_lands_and_every_one_of_ours_is_filled(
    release: tuple[Path, Path, dict[str, torch.Tensor]], imported: RapSAM
) -> None:
    _, classifier, state = release
    ours = imported.state_dict()
    assert set(ours) - set(state) == {f"panoptic_head.mask_heads.{i}.fc_cls" for i in range(3)}
    for key, value in state.items():
        assert torch.equal(ours[key], value), key
    embeddings = torch.load(classifier, weights_only=True)
    for stage in imported.panoptic_head.mask_heads:
        assert torch.equal(stage.fc_cls[:, :-1].permute(1, 2, 0), embeddings)
    config = imported.config
    assert (config.name, config.taxonomy, config.class_prototypes, config.class_embed_dim) == (
        "rapsam_r50", COCO_YTVIS2019_OV, 17, 768
    )
    assert (config.pixel_mean, config.pixel_std) == ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375))
    assert (config.channel_order, config.click_embedding, config.temperature) == ("RGB", "box", 0.1)


class OfficialForward(nn.Module):
    """Everything the official head's forward returns, in both modes: every stage's class logits, masks and
    IoU, then the object adapter's (panoptic) or the prompt adapter's (prompts) outputs."""

    def __init__(self, model: RapSAM) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, boxes: torch.Tensor, kinds: torch.Tensor) -> list[torch.Tensor]:
        head = self.model.panoptic_head
        features = self.model.encode(image)
        prompts = head.prompt_queries(boxes, kinds, height=image.shape[-2], width=image.shape[-1])
        outputs = [*self.model.panoptic_logits(features), *self.model.prompt_logits(features, boxes, kinds)]
        for queries in (head.kernels.weight[None], prompts):
            class_logits, masks, ious, _ = head.decode(features, queries, None)
            outputs += [*class_logits, *masks, *ious]
        return outputs


def test_a_forward_pass_uses_every_imported_tensor(imported: RapSAM) -> None:
    """A tensor is used when the outputs change with it: a non-zero gradient for every parameter and
    embedding table, and a changed feature map for each BN statistic (autograd does not reach those)."""
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 255
    boxes = torch.tensor([[[10.0, 10.0, 16.0, 16.0], [8.0, 20.0, 50.0, 60.0]]])
    kinds = torch.tensor([[POINT, BOX]])
    forward = OfficialForward(imported)
    statistics = ("running_mean", "running_var", "num_batches_tracked")
    tensors = {
        f"model.{k}": v.detach().clone().requires_grad_(v.is_floating_point() and not k.endswith(statistics))
        for k, v in imported.state_dict().items()
    }
    outputs = torch.func.functional_call(forward, tensors, (image, boxes, kinds))
    generator = torch.Generator().manual_seed(1)
    loss = sum((out * torch.randn(out.shape, generator=generator)).sum() for out in outputs)
    leaves = {k: v for k, v in tensors.items() if v.requires_grad}
    grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    unused = [k for k, g in zip(leaves, grads) if g is None or not g.any()]
    assert not unused, f"no effect on any output: {unused}"

    # BN statistics: perturb each one alone and watch the features (`num_batches_tracked` only counts
    # training steps; eval-mode BN never reads it).
    with torch.no_grad():
        reference = imported.encode(image)
        for key, value in imported.state_dict().items():
            if key.endswith(("running_mean", "running_var")):
                original = value.clone()
                value.mul_(1.5).add_(0.1)
                changed = not torch.equal(imported.encode(image), reference)
                value.copy_(original)
                assert changed, f"{key} has no effect on the features"


def test_unknown_and_missing_official_keys_are_listed(tmp_path: Path, release: tuple[Path, Path, dict]) -> None:
    _, classifier, state = release
    broken = dict(state)
    broken["panoptic_head.sam_prompt_encoder.weight"] = torch.zeros(3)
    del broken["neck.loc_conv.bias"]
    checkpoint = save_official(tmp_path / "broken.pth", broken)
    with pytest.raises(CheckpointError) as error:
        import_official(checkpoint, classifier)
    message = str(error.value)
    assert "missing keys (1): neck.loc_conv.bias" in message
    assert "unexpected keys (1): panoptic_head.sam_prompt_encoder.weight" in message
    # Not strict: reported, the unknown tensor ignored, the missing one left at init.
    lines: list[str] = []
    model, report = import_official(checkpoint, classifier, strict=False, progress=lines.append)
    assert (report.ignored, report.left_at_init) == (("panoptic_head.sam_prompt_encoder.weight",), ("neck.loc_conv.bias",))
    assert any("1 official tensors have no place" in line for line in lines)
    assert any("neck.loc_conv.bias" in line and "left at init" in line for line in lines)
    assert torch.equal(model.neck.loc_conv.weight, state["neck.loc_conv.weight"])


def test_classifier_choice_and_errors(tmp_path: Path, release: tuple[Path, Path, dict]) -> None:
    checkpoint, classifier, _ = release
    with pytest.raises(CheckpointError, match="pass --classifier CocoPanopticOVDataset_YouTubeVISDataset_2019.pth"):
        import_official(checkpoint, None)
    coco = save_classifier(tmp_path / "CocoPanopticOVDataset.pth", num_classes=133)
    model, report = import_official(checkpoint, coco)  # the vocabulary follows the file
    assert (report.dataset, model.config.taxonomy) == ("coco", COCO_PANOPTIC_OV)
    with pytest.raises(CheckpointError, match="133 classes but --dataset coco\\+ytvis has 155"):
        import_official(checkpoint, coco, dataset="coco+ytvis")
    odd = save_classifier(tmp_path / "odd.pth", num_classes=40)
    with pytest.raises(CheckpointError, match="embeds 40 classes; the official vocabularies have 133"):
        import_official(checkpoint, odd)
    backbone_only = tmp_path / "resnet50.pth"
    torch.save({k: v for k, v in release[2].items() if k.startswith("backbone.")}, backbone_only)
    with pytest.raises(CheckpointError, match="not an official RAP-SAM checkpoint"):
        import_official(backbone_only, classifier)


def test_meta_block_is_read_as_data_and_checked(tmp_path: Path, release: tuple[Path, Path, dict]) -> None:
    _, classifier, state = release
    marker = tmp_path / "pickled-code-ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    cfg = "data_preprocessor = dict(\n    type='VideoPromptDataPreprocessor',\n    mean=[1.0, 2.0, 3.0],\n" \
          "    std=[4.0, 5.0, 6.0],\n    bgr_to_rgb=False,\n    pad_size_divisor=32)\n"
    meta = {"cfg": cfg, "dataset_meta": {"classes": list(COCO_YTVIS2019_OV.texts)}, "hook": Payload()}
    model, report = import_official(save_official(tmp_path / "meta.pth", state, meta), classifier)
    assert not marker.exists()
    assert report.preprocessor_source == "checkpoint meta"
    assert (model.config.pixel_mean, model.config.pixel_std, model.config.channel_order) == (
        (1.0, 2.0, 3.0), (4.0, 5.0, 6.0), "BGR"
    )
    # A network trained on BGR gets its flip inside the graph: RGB in, the same features as BGR fed directly.
    image = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        expected = model.neck(model.backbone((image.flip(1) - model.pixel_mean) / model.pixel_std))
        assert torch.equal(model.encode(image), expected)

    shifted = {"dataset_meta": {"classes": list(COCO_YTVIS2019_OV.texts[1:]) + ["person"]}}
    with pytest.raises(CheckpointError, match="disagree on the class order"):
        import_official(save_official(tmp_path / "shifted.pth", state, shifted), classifier)


def test_preprocessor_from_meta_reads_mmengine_config_text() -> None:
    text = "model = dict(\n    data_preprocessor=dict(\n        bgr_to_rgb=True,\n        mean=[\n            123.675,\n" \
           "            116.28,\n            103.53,\n        ],\n        std=[58.395, 57.12, 57.375],\n    ))"
    assert preprocessor_from_meta({"cfg": text}) == {
        "mean": (123.675, 116.28, 103.53), "std": (58.395, 57.12, 57.375), "bgr_to_rgb": True,
    }
    assert preprocessor_from_meta({"cfg": "model = dict()"}) is None
    assert preprocessor_from_meta({}) is None


def test_joint_taxonomy_follows_the_official_merge() -> None:
    assert (COCO_PANOPTIC_OV.num_classes, sum(COCO_PANOPTIC_OV.is_thing)) == (133, 80)
    assert (COCO_YTVIS2019_OV.num_classes, sum(COCO_YTVIS2019_OV.is_thing)) == (155, 102)
    assert COCO_YTVIS2019_OV.class_names[:80] == COCO_PANOPTIC_OV.class_names[:80]
    assert COCO_YTVIS2019_OV.class_names[80:84] == ("giant panda", "lizard", "parrot", "sedan")
    assert COCO_YTVIS2019_OV.class_names[101] == "earless seal"
    assert COCO_YTVIS2019_OV.class_names[102:] == COCO_PANOPTIC_OV.class_names[80:]
    # "mouse" (YouTube-VIS's animal) shares its synonym with COCO's computer mouse, so it is merged, as in
    # the official ConcatOVDataset; "motorbike" shares none with "motorcycle,motorcycles" and is new.
    assert "mouse" not in COCO_YTVIS2019_OV.class_names[80:102]
    assert "motorbike" in COCO_YTVIS2019_OV.class_names[80:102]
    assert merge_class_texts([(("cat,cats", "dog"), ("sky",)), (("cats", "tennis_racket"), ("sky,clouds",))]) == (
        ("cat,cats", "dog", "tennis racket"), ("sky",)
    )


def test_rapsam_import_writes_our_checkpoint(tmp_path: Path, release: tuple[Path, Path, dict], capsys) -> None:
    checkpoint, classifier, state = release
    output = tmp_path / "rapsam_r50_official.safetensors"
    assert import_main([str(checkpoint), "--classifier", str(classifier), "-o", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "imported 568 of 568 tensors into rapsam_r50; none dropped" in printed
    assert "102 things + 53 stuff" in printed
    model = rapsam.build_model(weights=output)
    assert model.config.taxonomy == COCO_YTVIS2019_OV
    assert torch.equal(model.panoptic_head.kernels.weight, state["panoptic_head.kernels.weight"])
    from safetensors import safe_open

    with safe_open(str(output), framework="pt") as f:
        provenance = json.loads(f.metadata()["rapsam_provenance"])
    assert provenance["checkpoint_sha256"] == rapsam.checkpoint.file_sha256(checkpoint)

    assert import_main([str(tmp_path / "missing.pth"), "--classifier", str(classifier)]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.safetensors.*"))  # no half-written file


@pytest.mark.slow
def test_convert_imports_the_official_checkpoint_on_the_fly(
    tmp_path: Path, release: tuple[Path, Path, dict], capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint, classifier, _ = release
    code = convert_main([
        "--target", "onnx", "--weights", str(checkpoint), "--classifier", str(classifier),
        "--input-size", "64x64", "--entry-points", "encode,prompt", "--out", str(tmp_path),
    ])
    assert code == 0
    manifest = json.loads((tmp_path / "rapsam_r50-64x64-onnx" / "manifest.json").read_text())
    assert manifest["parity"]["gate"] == "passed"
    assert manifest["model"]["weights"].count("sha256:") == 2  # checkpoint and classifier
    assert len(manifest["classes"]) == 155 and manifest["classes"][0]["synonyms"][:2] == ["person", "child"]
    assert manifest["normalization"]["network_channel_order"] == "RGB"
    # --check rebuilds the same model from the same two files, and refuses another classifier.
    folder = str(tmp_path / "rapsam_r50-64x64-onnx")
    assert convert_main(["--check", folder, "--weights", str(checkpoint), "--classifier", str(classifier)]) == 0
    other = save_classifier(tmp_path / "other.pth", seed=7)
    assert convert_main(["--check", folder, "--weights", str(checkpoint), "--classifier", str(other)]) == 2
    assert f"with --classifier {other} is not what" in capsys.readouterr().err
