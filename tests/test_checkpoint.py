"""Our checkpoint format and the build_model door."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import rapsam
from rapsam.checkpoint import file_sha256, read_checkpoint, weights_id
from rapsam.models.backbones.pretrained import CheckpointError


def test_round_trip_keeps_weights_and_config(tmp_path: Path) -> None:
    model = rapsam.build_model("rapsam_tiny", seed=3)
    path = rapsam.save_checkpoint(model, tmp_path / "tiny.safetensors")
    config, _ = read_checkpoint(path)
    assert config == model.config
    loaded = rapsam.build_model(weights=path)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed, not left behind


def test_seeded_init_is_reproducible_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = rapsam.build_model("rapsam_tiny", seed=7)
    after = torch.rand(1)
    b = rapsam.build_model("rapsam_tiny", seed=7)
    c = rapsam.build_model("rapsam_tiny", seed=8)
    assert torch.equal(before, after)
    assert torch.equal(a.panoptic_head.kernels.weight, b.panoptic_head.kernels.weight)
    assert not torch.equal(a.panoptic_head.kernels.weight, c.panoptic_head.kernels.weight)


def test_checkpoint_of_another_variant_names_both(tmp_path: Path) -> None:
    path = rapsam.save_checkpoint(rapsam.build_model("rapsam_tiny"), tmp_path / "tiny.safetensors")
    with pytest.raises(CheckpointError, match="'rapsam_tiny', not 'rapsam_r18'"):
        rapsam.build_model("rapsam_r18", weights=path)


def test_corrupt_and_missing_files_give_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        rapsam.build_model("rapsam_tiny", weights=bad)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        rapsam.build_model("rapsam_tiny", weights=tmp_path / "nope.safetensors")


def test_pth_state_dict_loads_without_running_code(tmp_path: Path) -> None:
    model = rapsam.build_model("rapsam_tiny", seed=5)
    marker = tmp_path / "pickled-code-ran"

    class Payload:
        def __reduce__(self):
            return (Path.write_text, (marker, "ran"))

    torch.save({"state_dict": model.state_dict(), "hook": Payload()}, tmp_path / "tiny.pth")
    loaded = rapsam.build_model("rapsam_tiny", weights=tmp_path / "tiny.pth")
    assert torch.equal(loaded.panoptic_head.kernels.weight, model.panoptic_head.kernels.weight)
    assert not marker.exists()

    torch.save({"state_dict": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="holds no tensors"):
        rapsam.build_model("rapsam_tiny", weights=tmp_path / "evil.pth")
    assert not marker.exists()
    (tmp_path / "corrupt.pth").write_bytes(b"\x80\x02 not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        rapsam.build_model("rapsam_tiny", weights=tmp_path / "corrupt.pth")


def test_missing_and_misshaped_keys_are_listed(tmp_path: Path) -> None:
    state = rapsam.build_model("rapsam_tiny").state_dict()
    del state["panoptic_head.prompt_iou.weight"]
    state["panoptic_head.kernels.weight"] = torch.zeros(3, 3)
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError) as error:
        rapsam.build_model("rapsam_tiny", weights=tmp_path / "broken.pth")
    assert "missing keys (1): panoptic_head.prompt_iou.weight" in str(error.value)
    assert "panoptic_head.kernels.weight: checkpoint (3, 3) vs model (8, 32)" in str(error.value)


def test_weights_id(tmp_path: Path) -> None:
    path = rapsam.save_checkpoint(rapsam.build_model("rapsam_tiny"), tmp_path / "tiny.safetensors")
    assert weights_id(path) == f"sha256:{file_sha256(path)}"
    assert weights_id(None, seed=4) == "random-init:seed=4"


def test_class_embedding_file_drives_the_classifier(tmp_path: Path) -> None:
    from rapsam.checkpoint import read_class_embeddings

    model = rapsam.build_model("rapsam_tiny")
    config = model.config
    embed = torch.nn.functional.normalize(torch.randn(config.taxonomy.num_classes, config.class_prototypes,
                                                      config.class_embed_dim), dim=-1)
    torch.save(embed, tmp_path / "classes.pth")  # the official gen_cls.py layout
    model.panoptic_head.set_class_embeddings(read_class_embeddings(tmp_path / "classes.pth"))
    for stage in model.panoptic_head.mask_heads:
        assert torch.equal(stage.fc_cls[:, :-1].permute(1, 2, 0), embed)
        assert not stage.fc_cls[:, -1].any()  # no-object stays a zero vector
    # the embeddings are persistent: they travel with our checkpoint
    path = rapsam.save_checkpoint(model, tmp_path / "tiny.safetensors")
    assert torch.equal(rapsam.build_model(weights=path).panoptic_head.mask_heads[1].fc_cls, model.panoptic_head.mask_heads[1].fc_cls)

    torch.save(embed * 2, tmp_path / "not_unit.pth")
    with pytest.raises(CheckpointError, match="unit vectors"):
        read_class_embeddings(tmp_path / "not_unit.pth")
    with pytest.raises(ValueError, match=r"needs \(C, P, E\) = \(8, 2, 16\)"):
        model.panoptic_head.set_class_embeddings(embed[:4])
