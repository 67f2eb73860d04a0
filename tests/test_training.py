"""Training: batches as a pure function of (seed, iteration, rank), the loss going down, exact resume, DDP
ranks staying identical, the lr schedule and parameter groups, config loading and the CLI's errors."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from rapsam.cli import train_main
from rapsam.config import get_config
from rapsam.data import write_synthetic
from rapsam.models.rapsam import RapSAM
from rapsam.taxonomy import SHAPES
from rapsam.training.config import CONFIGS, TrainConfig, TrainConfigError, load_config
from rapsam.training.data import Datasets, ImageBatch, IterationBatches, VideoBatch, epoch_indices, is_video_iteration
from rapsam.training.trainer import (
    CHECKPOINT,
    FINAL_WEIGHTS,
    TrainingError,
    lr_factor,
    parameter_groups,
    train,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Two cores, often shared: one intra-op thread is several times faster than two fighting another job.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    write_synthetic(root, num_train=8, num_val=4, num_videos_train=2, num_videos_val=2, image_size=(64, 64),
                    num_frames=3)
    return root


def tiny_config(synthetic: Path, output: Path, **changes) -> TrainConfig:
    base = TrainConfig(
        name="test_tiny", model="rapsam_tiny", synthetic=str(synthetic), synthetic_images=8, synthetic_videos=2,
        synthetic_size=64, crop_size=64, batch_size=2, num_points=256, num_prompts=3, num_workers=0,
        warmup_iterations=2, log_every=1, lr=1e-3, clip_grad=1.0, iterations=4, output=str(output),
    )
    return base.replace(**changes)


def read_log(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]


def quiet(message: str) -> None:
    pass


# ----------------------------------------------------------------------------- data


def test_epoch_indices_split_each_epoch_disjointly_over_ranks() -> None:
    size, batch, world = 8, 2, 2  # 2 iterations x 2 ranks x 2 images = one epoch
    for epoch in range(3):
        per_rank = [[i for it in (2 * epoch, 2 * epoch + 1) for i in epoch_indices(0, it, rank, world, batch, size)]
                    for rank in range(world)]
        assert set(per_rank[0]).isdisjoint(per_rank[1])
        assert sorted(per_rank[0] + per_rank[1]) == list(range(size))
    # A fresh permutation per epoch and per seed; the same call always gives the same answer.
    first = [epoch_indices(0, it, r, world, batch, size) for it in (0, 1) for r in (0, 1)]
    second = [epoch_indices(0, it, r, world, batch, size) for it in (2, 3) for r in (0, 1)]
    assert first != second
    assert first != [epoch_indices(1, it, r, world, batch, size) for it in (0, 1) for r in (0, 1)]
    assert epoch_indices(0, 5, 1, world, batch, size) == epoch_indices(0, 5, 1, world, batch, size)
    # A dataset smaller than one iteration's batch wraps into the next epoch.
    assert len(epoch_indices(0, 0, 0, 1, 5, 3)) == 5


def test_is_video_iteration_spreads_the_fraction_evenly() -> None:
    flags = [is_video_iteration(i, 0.25) for i in range(100)]
    assert sum(flags) == 25
    assert all(sum(flags[k:k + 4]) == 1 for k in range(0, 100, 4))
    assert sum(is_video_iteration(i, 0.1) for i in range(1000)) == 100
    assert not any(is_video_iteration(i, 0.0) for i in range(50))
    assert all(is_video_iteration(i, 1.0) for i in range(50))


def _assert_batches_equal(a, b) -> None:
    assert type(a) is type(b)
    tensors = ("images", "boxes", "kinds", "prompt_masks") if isinstance(a, ImageBatch) else ("frames",)
    for name in tensors:
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert len(a.targets) == len(b.targets)
    for ta, tb in zip(a.targets, b.targets):
        assert torch.equal(ta.labels, tb.labels) and torch.equal(ta.masks, tb.masks)


def test_iteration_batches_are_deterministic_and_well_shaped(synthetic_root: Path, tmp_path: Path) -> None:
    config = tiny_config(synthetic_root, tmp_path, video_fraction=0.25, clip_length=2, iterations=8)
    datasets = Datasets(config, SHAPES)
    pad = get_config("rapsam_tiny").pad_value
    batches = IterationBatches(config, datasets, rank=0, world=1, pad_value=pad)
    assert len(batches) == 8
    image, video = batches[0], batches[3]  # fraction 0.25: iteration 3 is the first video batch
    assert isinstance(image, ImageBatch) and isinstance(video, VideoBatch)
    _assert_batches_equal(image, batches[0])
    _assert_batches_equal(video, batches[3])
    # A new reader of the same files (a loader worker, a resumed run) yields the very same batch.
    _assert_batches_equal(image, IterationBatches(config, Datasets(config, SHAPES), rank=0, world=1,
                                                  pad_value=pad)[0])

    b, s, k = config.batch_size, config.crop_size, config.num_prompts
    assert image.images.shape == (b, 3, s, s) and image.images.dtype == torch.float32
    assert 0 <= image.images.min() and image.images.max() <= 255 and image.images.max() > 1
    assert image.boxes.shape == (b, k, 4) and image.boxes.dtype == torch.float32
    assert image.kinds.shape == (b, k) and image.kinds.dtype == torch.int32
    assert set(image.kinds.unique().tolist()) <= {-1, 0, 1}
    assert image.prompt_masks.shape == (b, k, s, s) and image.prompt_masks.dtype == torch.bool
    for kinds, masks in zip(image.kinds, image.prompt_masks):  # real prompts have a mask, padding none
        assert bool((masks.flatten(1).any(1) == (kinds >= 0)).all())
    assert len(image.targets) == b
    for target in image.targets:
        assert target.masks.dtype == torch.bool and target.masks.shape[1:] == (s, s)
        assert target.labels.dtype == torch.int64 and len(target.labels) == len(target.masks) > 0
        assert 0 <= target.labels.min() and target.labels.max() < SHAPES.num_classes
    t = config.clip_length
    assert video.frames.shape == (b, t, 3, s, s) and video.frames.dtype == torch.float32
    for target in video.targets:
        assert target.masks.shape[1:] == (t * s, s) and target.masks.dtype == torch.bool
        assert all(SHAPES.is_thing[label] for label in target.labels.tolist())

    # Rank 1 of a 2-process run gets other images than rank 0 in the same iteration.
    rank0 = IterationBatches(config, datasets, rank=0, world=2, pad_value=pad)[0]
    rank1 = IterationBatches(config, datasets, rank=1, world=2, pad_value=pad)[0]
    assert not torch.equal(rank0.images, rank1.images)


# ----------------------------------------------------------------------------- training runs


def test_a_few_steps_on_two_images_lower_the_loss(tmp_path: Path) -> None:
    root = tmp_path / "two"
    write_synthetic(root, num_train=2, num_val=1, num_videos_train=1, num_videos_val=1, image_size=(64, 64),
                    num_frames=2)
    output = tmp_path / "run"
    config = tiny_config(root, output, synthetic_images=2, iterations=30, video_fraction=0.0, decay_at=(),
                         warmup_iterations=0, scale_range=(1.0, 1.0))
    summary = train(config, log=quiet)
    records = read_log(output)
    assert [r["iteration"] for r in records] == list(range(1, 31))
    assert all(r["task"] == "image" and r["lr"] == pytest.approx(1e-3) for r in records)
    losses = [r["loss"] for r in records]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.7 * first, (first, last)
    assert summary.iterations == 30 and summary.final_loss == pytest.approx(losses[-1])
    assert summary.weights == output / FINAL_WEIGHTS and summary.weights.is_file()
    saved = json.loads((output / "summary.json").read_text())
    assert saved["iterations"] == 30 and saved["world"] == 1
    assert json.loads((output / "config.json").read_text())["iterations"] == 30
    assert torch.load(output / CHECKPOINT, weights_only=True)["iteration"] == 30


def test_resume_continues_bit_exactly(synthetic_root: Path, tmp_path: Path) -> None:
    # decay_at=() and no warm-up: the schedule does not depend on `iterations`, so 3 + 3 is the same run as 6.
    # video_fraction 0.25 makes iteration index 3 (the first after the resume) a video batch.
    common = {"decay_at": (), "warmup_iterations": 0, "video_fraction": 0.25, "checkpoint_every": 3}
    straight = tiny_config(synthetic_root, tmp_path / "a", iterations=6, **common)
    train(straight, log=quiet)
    halves = tiny_config(synthetic_root, tmp_path / "b", iterations=3, **common)
    train(halves, log=quiet)
    assert torch.load(tmp_path / "b" / CHECKPOINT, weights_only=True)["iteration"] == 3
    messages: list[str] = []
    summary = train(halves.replace(iterations=6), resume=True, log=messages.append)
    assert summary.iterations == 3
    assert any("resumed" in m and "iteration 3" in m for m in messages)

    a, b = load_file(tmp_path / "a" / FINAL_WEIGHTS), load_file(tmp_path / "b" / FINAL_WEIGHTS)
    assert a.keys() == b.keys()
    different = [name for name in a if not torch.equal(a[name], b[name])]
    assert not different, different[:5]
    log_a, log_b = read_log(tmp_path / "a"), read_log(tmp_path / "b")
    assert [r["iteration"] for r in log_b] == list(range(1, 7))
    assert [r["loss"] for r in log_a] == [r["loss"] for r in log_b]
    assert [r["task"] for r in log_a] == ["image", "image", "image", "video", "image", "image"]
    state_a = torch.load(tmp_path / "a" / CHECKPOINT, weights_only=True)
    state_b = torch.load(tmp_path / "b" / CHECKPOINT, weights_only=True)
    assert state_a["iteration"] == state_b["iteration"] == 6
    assert state_a["scheduler"] == state_b["scheduler"]
    for sa, sb in zip(state_a["optimizer"]["state"].values(), state_b["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in ("step", "exp_avg", "exp_avg_sq"))


def test_resume_without_a_checkpoint_names_it(synthetic_root: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match=r"last\.pt.*without --resume"):
        train(tiny_config(synthetic_root, tmp_path / "fresh"), resume=True, log=quiet)


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is refused on the CPU only")
def test_fp16_on_the_cpu_is_refused_with_the_alternative(synthetic_root: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="bf16"):
        train(tiny_config(synthetic_root, tmp_path, amp="fp16"), log=quiet)


# ----------------------------------------------------------------------------- DDP


def _ddp_worker(rank: int, world: int, port: int, config: TrainConfig, out_dir: str) -> None:
    """One torchrun-like rank: train() keeps the model to itself, so catch it where it is built and save each
    rank's weights after the run."""
    import torch.distributed as dist

    from rapsam.training import trainer

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    built: list[RapSAM] = []
    build = trainer.build_training_model

    def capture(cfg: TrainConfig) -> RapSAM:
        built.append(build(cfg))
        return built[-1]

    trainer.build_training_model = capture
    try:
        summary = trainer.train(config, log=lambda m: None)
        assert summary.world == world and dist.get_backend() == "gloo"
        torch.save({"params": {n: p.detach().clone() for n, p in built[0].named_parameters()}},
                   Path(out_dir) / f"rank{rank}.pt")
    finally:
        trainer.build_training_model = build
        if dist.is_initialized():
            dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the gloo (CPU) path")
def test_ddp_ranks_hold_identical_weights(synthetic_root: Path, tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    output = tmp_path / "ddp"
    # 4 iterations at fraction 0.25: the last is a video batch, which leaves the prompt adapter unused.
    config = tiny_config(synthetic_root, output, iterations=4, video_fraction=0.25)
    mp.spawn(_ddp_worker, args=(2, _free_port(), config, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True)["params"] for r in range(2)]
    assert ranks[0].keys() == ranks[1].keys()
    different = [n for n in ranks[0] if not torch.equal(ranks[0][n], ranks[1][n])]
    assert not different, different[:5]
    # What rank 0 saved is what both hold, and it moved away from the (seeded) initial weights.
    saved = load_file(output / FINAL_WEIGHTS)
    assert all(torch.equal(saved[n], ranks[0][n]) for n in ranks[0])
    torch.manual_seed(config.seed)
    initial = dict(RapSAM(get_config("rapsam_tiny")).named_parameters())
    moved = [n for n in ranks[0] if not torch.equal(initial[n].detach(), ranks[0][n])]
    assert len(moved) > len(ranks[0]) // 2
    records = read_log(output)
    assert [r["iteration"] for r in records] == [1, 2, 3, 4] and records[-1]["task"] == "video"
    assert json.loads((output / "summary.json").read_text())["world"] == 2


# ----------------------------------------------------------------------------- schedule and parameter groups


def test_lr_factor_warms_up_then_steps_down() -> None:
    config = TrainConfig(name="s", synthetic="x", iterations=100, warmup_iterations=10, decay_at=(0.5, 0.75),
                         decay_factor=0.1)
    assert lr_factor(0, config) == pytest.approx(0.001)
    assert lr_factor(5, config) == pytest.approx(0.001 + 0.999 * 0.5)
    factors = [lr_factor(i, config) for i in range(11)]
    assert factors == sorted(factors) and factors[10] == 1.0
    assert lr_factor(49, config) == 1.0
    assert lr_factor(50, config) == pytest.approx(0.1) and lr_factor(74, config) == pytest.approx(0.1)
    assert lr_factor(75, config) == pytest.approx(0.01) and lr_factor(99, config) == pytest.approx(0.01)
    assert lr_factor(0, config.replace(warmup_iterations=0)) == 1.0
    assert lr_factor(99, config.replace(decay_at=())) == 1.0
    # The registered paper schedule: decay at 8/12 and 11/12 of 44,358 iterations.
    paper = CONFIGS["coco_r18"]
    assert lr_factor(int(8 / 12 * paper.iterations) - 1, paper) == 1.0
    assert lr_factor(int(8 / 12 * paper.iterations), paper) == pytest.approx(0.1)
    assert lr_factor(paper.iterations - 1, paper) == pytest.approx(0.01)


def _groups_by_param(model: RapSAM, config: TrainConfig) -> dict[str, dict]:
    groups = parameter_groups(model, config)
    owner = {}
    for group in groups:
        for param in group["params"]:
            assert id(param) not in owner, "a parameter is in two groups"
            owner[id(param)] = group
    return {name: owner[id(p)] for name, p in model.named_parameters()}


def test_parameter_groups_exempt_norms_and_biases_and_slow_the_backbone() -> None:
    model = RapSAM(get_config("rapsam_tiny"))
    config = TrainConfig(name="g", synthetic="x", lr=1e-3, backbone_lr_mult=0.1, weight_decay=0.05)
    groups = _groups_by_param(model, config)  # every parameter in exactly one group
    norm_params = {f"{m}.{n}" for m, module in model.named_modules()
                   if isinstance(module, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm))
                   for n, _ in module.named_parameters(recurse=False)}
    embeddings = {f"{m}.weight" for m, module in model.named_modules() if isinstance(module, nn.Embedding)}
    assert norm_params and "panoptic_head.mask_tokens.weight" in embeddings
    for name, param in model.named_parameters():
        group = groups[name]
        assert group["lr"] == pytest.approx(1e-4 if name.startswith("backbone.") else 1e-3), name
        exempt = param.ndim <= 1 or name in norm_params or name in embeddings
        assert group["weight_decay"] == (0.0 if exempt else 0.05), name
    assert groups["panoptic_head.kernels.weight"]["weight_decay"] == 0.0  # the query embedding
    assert any(n.startswith("backbone.") and g["weight_decay"] == 0.05 for n, g in groups.items())
    assert any(n.endswith(".bias") and n.startswith("backbone.") for n in groups)


# ----------------------------------------------------------------------------- configs


def test_load_config_overrides_a_registered_config() -> None:
    config = load_config("demo_edgenext", ["iterations=5", "lr=0.01", "amp=bf16", "decay_at=[0.5, 0.75]",
                                           "scale_range=[1, 1]", 'output="runs/x y"', "model = rapsam_tiny"])
    assert config.name == "demo_edgenext" and config.crop_size == 128  # the rest is the registered config's
    assert config.iterations == 5 and isinstance(config.iterations, int)
    assert config.lr == 0.01 and isinstance(config.lr, float)
    assert config.amp == "bf16" and config.model == "rapsam_tiny" and config.output == "runs/x y"
    assert config.decay_at == (0.5, 0.75) and config.scale_range == (1, 1)
    assert config.output_dir == Path("runs/x y")
    assert load_config("demo_edgenext") == CONFIGS["demo_edgenext"]
    assert CONFIGS["demo_edgenext"].iterations == 3000  # overrides never touch the registry


def test_gpu_demo_config_trains_the_demo_architecture() -> None:
    gpu, cpu = load_config("demo_edgenext_gpu"), load_config("demo_edgenext")
    assert (gpu.model, gpu.model_overrides, gpu.crop_size, gpu.num_prompts) == (
        cpu.model, cpu.model_overrides, cpu.crop_size, cpu.num_prompts)
    assert gpu.click_margin == 3 and cpu.click_margin == 0 and gpu.synthetic != cpu.synthetic


def test_load_config_reads_toml_with_a_base(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('base = "demo_edgenext"\niterations = 7\nscale_range = [0.8, 1.2]\n'
                    '[model_overrides]\nnum_queries = 10\n')
    config = load_config(str(path), ["batch_size=3"])
    assert config.name == "mine" and config.model == "rapsam_edgenext_demo" and config.crop_size == 128
    assert config.iterations == 7 and config.scale_range == (0.8, 1.2) and config.batch_size == 3
    assert dict(config.model_overrides) == {"num_queries": 10}
    standalone = tmp_path / "alone.toml"
    standalone.write_text('name = "named"\nsynthetic = "data/s"\nmodel = "rapsam_tiny"\n')
    config = load_config(str(standalone))
    assert config.name == "named" and config.model == "rapsam_tiny" and config.iterations == 44358


def test_load_config_errors_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(TrainConfigError, match=r"unknown config keys \['iteratons'\]; valid: .*iterations"):
        load_config("demo_edgenext", ["iteratons=5"])
    with pytest.raises(TrainConfigError, match="write key=value"):
        load_config("demo_edgenext", ["iterations"])
    with pytest.raises(TrainConfigError, match="neither a file nor a registered config.*demo_edgenext"):
        load_config(str(tmp_path / "missing.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("iterations = = 3\n")
    with pytest.raises(TrainConfigError, match=r"bad\.toml: not valid TOML"):
        load_config(str(bad))
    no_data = tmp_path / "nodata.toml"
    no_data.write_text("iterations = 3\n")
    with pytest.raises(TrainConfigError, match="names no data"):
        load_config(str(no_data))
    unknown_base = tmp_path / "base.toml"
    unknown_base.write_text('base = "nope"\n')
    with pytest.raises(TrainConfigError, match="base = 'nope' is not a registered config"):
        load_config(str(unknown_base))
    with pytest.raises(TrainConfigError, match="amp='fp8'"):
        load_config("demo_edgenext", ["amp=fp8"])
    with pytest.raises(TrainConfigError, match="video_fraction"):
        load_config("demo_edgenext", ["video_fraction=1.5"])
    with pytest.raises(TrainConfigError, match="batch_size=0"):
        load_config("demo_edgenext", ["batch_size=0"])


def test_train_cli_reports_errors_as_one_line(capsys, synthetic_root: Path, tmp_path: Path) -> None:
    assert train_main(["no_such_config"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "no_such_config" in err[0]
    assert train_main(["demo_edgenext", "--set", "iteratons=3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown config keys")
    assert train_main(["demo_edgenext", "--set", "model=rapsam_tiny", "--set", f"synthetic={synthetic_root}",
                       "--set", f"output={tmp_path}", "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: --resume:") and "last.pt" in err[-1]
