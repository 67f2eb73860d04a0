"""`rapsam-train`: joint co-training of panoptic, prompt (COCO-SAM) and video batches on one process or under
`torchrun` (DDP), with AMP, gradient clipping, warm-up + step decay, exact resume and JSONL/TensorBoard logs."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from rapsam.checkpoint import build_model, save_checkpoint
from rapsam.config import get_config
from rapsam.fileio import atomic_path
from rapsam.models.rapsam import RapSAM
from rapsam.taxonomy import TAXONOMIES
from rapsam.training.config import PAPER_ITERATIONS, TrainConfig
from rapsam.training.data import (
    Datasets,
    ImageBatch,
    IterationBatches,
    VideoBatch,
    batch_images,
    batch_to,
)
from rapsam.training.losses import SetCriterion

CHECKPOINT = "last.pt"
FINAL_WEIGHTS = "model.safetensors"
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class TrainingError(RuntimeError):
    """A run that cannot start or go on: one line naming the cause and the fix."""


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


@dataclass(frozen=True)
class TrainSummary:
    iterations: int
    seconds: float
    iterations_per_s: float  # after the first iterations (cuDNN autotuning, allocator growth, loader start)
    images_per_s: float  # over all ranks, likewise
    peak_memory_mb: float  # CUDA memory of rank 0 on a GPU, else the process's peak RSS
    final_loss: float
    weights: Path | None
    device: str
    world: int

    @property
    def paper_schedule_hours(self) -> float:
        """The paper's 12 COCO epochs at its global batch of 32, on `32 / images per iteration` such processes,
        at this iteration rate (no communication cost counted)."""
        return PAPER_ITERATIONS / self.iterations_per_s / 3600 if self.iterations_per_s else math.inf

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["weights"] = str(self.weights) if self.weights else None
        return {**data, "paper_schedule_hours": self.paper_schedule_hours}


class TrainingModel(nn.Module):
    """The model and the losses in one forward, so that DDP sees every parameter used in one call."""

    def __init__(self, model: RapSAM, criterion: SetCriterion) -> None:
        super().__init__()
        self.model, self.criterion = model, criterion

    def forward(self, batch: ImageBatch | VideoBatch) -> dict[str, torch.Tensor]:
        head = self.model.panoptic_head
        if isinstance(batch, VideoBatch):
            frames = batch.frames
            batch_size, length = frames.shape[:2]
            features = self.model.encode(frames.flatten(0, 1))  # (B*T, C, h, w)
            channels, height, width = features.shape[1:]
            # A clip is one image of its frames stacked along the height: each query's masks form a tube.
            tubes = features.view(batch_size, length, channels, height, width).permute(0, 2, 1, 3, 4)
            outputs = head.panoptic_stages(tubes.reshape(batch_size, channels, length * height, width))
            return self.criterion.panoptic(outputs.class_logits, outputs.mask_logits, batch.targets)
        features = self.model.encode(batch.images)
        panoptic = head.panoptic_stages(features)
        losses = self.criterion.panoptic(panoptic.class_logits, panoptic.mask_logits, batch.targets)
        prompts = head.prompt_stages(features, batch.boxes, batch.kinds)
        assert prompts.iou is not None
        losses.update(self.criterion.prompt(prompts.mask_logits, prompts.iou, batch.prompt_masks, batch.kinds >= 0))
        return losses


def setup_distributed() -> Distributed:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; NCCL on GPUs, gloo on CPUs."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Distributed()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return Distributed(rank=dist.get_rank(), world=world, local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def build_training_model(config: TrainConfig) -> RapSAM:
    overrides = dict(config.model_overrides)
    taxonomy = config.taxonomy or ("shapes" if config.synthetic else None)
    if taxonomy is not None:
        if taxonomy not in TAXONOMIES:
            raise TrainingError(f"taxonomy {taxonomy!r} is not one of {', '.join(TAXONOMIES)}")
        overrides["taxonomy"] = TAXONOMIES[taxonomy]
    model_config = dataclasses.replace(get_config(config.model), **overrides)
    if config.init_weights is not None:
        model = build_model(weights=config.init_weights)
        if model.config != model_config:
            raise TrainingError(f"init_weights {config.init_weights} hold {model.config.name!r} with another "
                                f"architecture than {config.model!r} + model_overrides")
        return model
    torch.manual_seed(config.seed)
    return RapSAM(model_config)


def parameter_groups(model: RapSAM, config: TrainConfig) -> list[dict[str, Any]]:
    """No weight decay on norms, biases and embeddings (as the official paramwise config); the backbone at
    `backbone_lr_mult` of the rate."""
    exempt = {id(p) for m in model.modules()
              if isinstance(m, (nn.Embedding, nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase))
              for p in m.parameters(recurse=False)}
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = param.ndim <= 1 or id(param) in exempt
        groups.setdefault((name.startswith("backbone."), no_decay), []).append(param)
    return [{"params": params, "lr": config.lr * (config.backbone_lr_mult if backbone else 1.0),
             "weight_decay": 0.0 if no_decay else config.weight_decay}
            for (backbone, no_decay), params in groups.items()]


def lr_factor(iteration: int, config: TrainConfig) -> float:
    """Linear warm-up from 0.001, then x decay_factor at each of `decay_at` (fractions of the run)."""
    warmup = 1.0
    if iteration < config.warmup_iterations:
        warmup = 0.001 + (1 - 0.001) * iteration / config.warmup_iterations
    steps = sum(iteration >= int(f * config.iterations) for f in config.decay_at)
    return warmup * config.decay_factor**steps


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    log: Callable[[str], None] = lambda message: print(message, file=sys.stderr, flush=True),
) -> TrainSummary:
    """Run `config` to its last iteration (from the checkpoint in its output folder with `resume`)."""
    env = setup_distributed()
    device = torch.device(f"cuda:{env.local_rank}" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.cuda.reset_peak_memory_stats(device)
    if config.amp == "fp16" and device.type != "cuda":
        raise TrainingError("amp=fp16 needs a GPU (its gradient scaler is CUDA's); use amp=bf16 or none on the CPU")
    output = config.output_dir
    if env.main:
        output.mkdir(parents=True, exist_ok=True)
        (output / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")

    model = build_training_model(config)
    # Rank 0 writes the synthetic data once; the others wait for it.
    datasets = Datasets(config, model.config.taxonomy) if env.main else None
    if env.world > 1:
        dist.barrier()
    datasets = datasets or Datasets(config, model.config.taxonomy)
    criterion = SetCriterion(model.config.taxonomy.num_classes, num_points=config.num_points)
    model.train().to(device)
    if config.sync_bn and env.world > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    wrapped: nn.Module = TrainingModel(model, criterion)
    if env.world > 1:
        wrapped = nn.parallel.DistributedDataParallel(
            wrapped, device_ids=[device.index] if device.type == "cuda" else None,
            # Video batches leave the prompt adapter unused.
            find_unused_parameters=config.video_fraction > 0,
        )
    optimizer = torch.optim.AdamW(parameter_groups(model, config), lr=config.lr, betas=(0.9, 0.999), eps=1e-8)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: lr_factor(i, config))
    scaler = torch.amp.GradScaler("cuda", enabled=config.amp == "fp16")
    start = 0
    checkpoint_path = output / CHECKPOINT
    if resume:
        if not checkpoint_path.is_file():
            raise TrainingError(f"--resume: {checkpoint_path} does not exist; start without --resume")
        state = torch.load(checkpoint_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start = int(state["iteration"])
        log(f"resumed {checkpoint_path} at iteration {start}")

    batches = IterationBatches(config, datasets, rank=env.rank, world=env.world, pad_value=model.config.pad_value)
    loader = torch.utils.data.DataLoader(
        batches, batch_size=None, sampler=range(start, config.iterations), num_workers=config.num_workers,
        persistent_workers=False, prefetch_factor=2 if config.num_workers else None,
    )
    amp = torch.autocast(device.type, dtype=AMP_DTYPES[config.amp]) if config.amp != "none" else nullcontext()
    logger = _Logger(output, enabled=env.main)
    started, last_time, total_loss = time.perf_counter(), time.perf_counter(), math.nan
    # Speed is counted from here on: the first iterations autotune cuDNN, grow the allocator, start the loader.
    steady_from = start + min(10, (config.iterations - start) // 5)
    steady_start, steady_images = started, 0
    log(f"training {model.config.name} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params) for "
        f"{config.iterations} iterations on {env.world} x {device.type}, {config.batch_size} per process, "
        f"{config.crop_size}px crops, amp={config.amp}")
    for iteration, batch in zip(range(start, config.iterations), loader):
        # Point sampling draws from torch's generator: seeding it per iteration keeps resume exact.
        torch.manual_seed(hash((config.seed, iteration, env.rank)) & 0x7FFFFFFF)
        batch = batch_to(batch, device)
        with amp:
            losses = wrapped(batch)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise TrainingError(f"iteration {iteration}: the loss is {loss.item()}; lower lr or use amp=none/bf16")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        done = iteration + 1
        if done == steady_from:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            steady_start, steady_images = time.perf_counter(), 0
        elif done > steady_from:
            steady_images += batch_images(batch) * env.world
        total_loss = float(loss.detach())
        if done % config.log_every == 0 or done == config.iterations:
            now = time.perf_counter()
            # The base rate (the head's): group 0 holds the backbone, at backbone_lr_mult of it.
            record = {"iteration": done, "loss": total_loss, "lr": config.lr * lr_factor(done, config),
                      "grad_norm": float(grad_norm), "seconds": now - started,
                      "task": "video" if isinstance(batch, VideoBatch) else "image",
                      **{k: float(v.detach()) for k, v in losses.items()}}
            logger.write(record)
            log(f"[{done}/{config.iterations}] loss {total_loss:.3f} lr {record['lr']:.2e} "
                f"{config.log_every / max(now - last_time, 1e-9):.2f} it/s")
            last_time = now
        if env.main and (done % config.checkpoint_every == 0 or done == config.iterations):
            _save_state(checkpoint_path, model, optimizer, scheduler, scaler, done)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    now = time.perf_counter()
    seconds, steady_seconds = now - started, now - steady_start
    ran = config.iterations - start
    steady_ran = config.iterations - max(steady_from, start)
    weights = None
    if env.main:
        weights = save_checkpoint(model, output / FINAL_WEIGHTS, provenance={
            "trained_by": "rapsam-train", "config": config.name, "iterations": str(config.iterations)})
    logger.close()
    summary = TrainSummary(
        iterations=ran, seconds=seconds, iterations_per_s=steady_ran / steady_seconds if steady_ran else 0.0,
        images_per_s=steady_images / steady_seconds if steady_ran else 0.0, peak_memory_mb=_peak_memory_mb(device),
        final_loss=total_loss, weights=weights, device=_device_name(device), world=env.world,
    )
    if env.main:
        (output / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    if env.world > 1:
        dist.barrier()
    return summary


def _save_state(path: Path, model: RapSAM, optimizer: torch.optim.Optimizer, scheduler: Any,
                scaler: torch.amp.GradScaler, iteration: int) -> None:
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "scaler": scaler.state_dict(), "iteration": iteration}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from rapsam.bench.machine import machine_info

    return f"{machine_info().get('cpu_model')} ({torch.get_num_threads()} threads)"


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    from rapsam.bench.machine import peak_rss_mb

    return peak_rss_mb() or 0.0


class _Logger:
    """JSONL always (rank 0), TensorBoard scalars too when the tensorboard package is installed."""

    def __init__(self, output: Path, *, enabled: bool) -> None:
        self.enabled = enabled
        self.jsonl = (output / "log.jsonl").open("a") if enabled else None
        self.tensorboard = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tensorboard = SummaryWriter(str(output / "tensorboard"))
            except ImportError:
                pass

    def write(self, record: dict[str, Any]) -> None:
        if self.jsonl is not None:
            self.jsonl.write(json.dumps(record) + "\n")
            self.jsonl.flush()
        if self.tensorboard is not None:
            for key, value in record.items():
                if isinstance(value, float):
                    self.tensorboard.add_scalar(key, value, record["iteration"])

    def close(self) -> None:
        if self.jsonl is not None:
            self.jsonl.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
