"""Our checkpoint format: one `.safetensors` file whose metadata holds the model config as JSON.

`.pth` files are read with `weights_only=True`, so a checkpoint never runs code.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from rapsam.config import RapSAMConfig, get_config
from rapsam.fileio import atomic_path
from rapsam.models.backbones.pretrained import (
    CheckpointError,
    check_state_dict,
    read_pth,
    read_state_dict,
    unwrap_state_dict,
)
from rapsam.models.rapsam import RapSAM

_CONFIG_KEY = "rapsam_config"
_FORMAT_KEY = "rapsam_format"
_PROVENANCE_KEY = "rapsam_provenance"
FORMAT_VERSION = "1"


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(model: RapSAM, path: str | Path, *, provenance: dict[str, str] | None = None) -> Path:
    """Write weights + config (+ where the weights came from) atomically; returns the path."""
    from safetensors.torch import save_file

    path = Path(path)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    metadata = {_CONFIG_KEY: json.dumps(model.config.to_dict()), _FORMAT_KEY: FORMAT_VERSION}
    if provenance:
        metadata[_PROVENANCE_KEY] = json.dumps(provenance)
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return path


def read_checkpoint(path: str | Path) -> tuple[RapSAMConfig | None, dict[str, torch.Tensor]]:
    """Config (None for a bare `.pth` state dict) and tensors of a checkpoint file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix != ".safetensors":
        return None, read_state_dict(path)
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    config = RapSAMConfig.from_dict(json.loads(metadata[_CONFIG_KEY])) if _CONFIG_KEY in metadata else None
    return config, tensors


def build_model(
    name: str | None = None,
    weights: str | Path | None = None,
    *,
    seed: int = 0,
    classifier: str | Path | None = None,
    dataset: str | None = None,
) -> RapSAM:
    """The door to every model: a registered variant, our checkpoint, or both (then they must agree).

    Without weights the parameters are a random init seeded by `seed` (the caller's RNG is untouched).
    The authors' released `.pth` is imported on the fly with its `classifier` file (see rapsam.official).
    The model comes back in eval mode.
    """
    if name is None and weights is None:
        raise ValueError("give a model name, a weights file, or both")
    if weights is not None and Path(weights).suffix != ".safetensors":
        from rapsam.official import import_official, is_official_state

        contents = read_pth(weights)  # read once: the import needs its meta block as well as its tensors
        stored_config, state = None, unwrap_state_dict(contents, source=str(weights))
        if is_official_state(state):
            model, _ = import_official(weights, classifier, dataset=dataset, contents=contents)
            if name is not None and name != model.config.name:
                raise CheckpointError(f"{weights} is the official {model.config.name!r}, not {name!r}")
            return model
    else:
        stored_config, state = read_checkpoint(weights) if weights is not None else (None, None)
    if classifier is not None or dataset is not None:
        raise CheckpointError("--classifier and --dataset go with the official .pth checkpoint; "
                              "our .safetensors checkpoints carry their classes")
    config = get_config(name) if name is not None else stored_config
    if config is None:
        raise CheckpointError(f"{weights} holds no rapsam config; name the model it was trained as")
    if stored_config is not None and stored_config.name != config.name:
        raise CheckpointError(
            f"{weights} is a checkpoint of {stored_config.name!r}, not {config.name!r}; "
            f"build {stored_config.name!r} or pass the matching weights"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = RapSAM(stored_config or config)
    if state is not None:
        check_state_dict(model, state, source=str(weights))
        model.load_state_dict(state)
    return model.eval()


def read_class_embeddings(path: str | Path) -> torch.Tensor:
    """A classifier file as the official `tools/gen_cls.py` writes it: a tensor (C, P, E) of unit vectors."""
    tensor = torch.load(Path(path), map_location="cpu", weights_only=True) if Path(path).is_file() else None
    if tensor is None:
        raise CheckpointError(f"class embedding file not found: {path}")
    if isinstance(tensor, dict) and len(tensor) == 1:
        tensor = next(iter(tensor.values()))
    if not isinstance(tensor, torch.Tensor) or tensor.ndim != 3:
        raise CheckpointError(f"{path} does not hold a (classes, prototypes, dim) tensor")
    norms = tensor.float().norm(dim=-1)
    if not torch.allclose(norms, torch.ones_like(norms), atol=1e-3):
        raise CheckpointError(f"{path}: text embeddings must be unit vectors (norms {float(norms.min()):.3f}..{float(norms.max()):.3f})")
    return tensor.float()


BUILTIN_WEIGHTS_DIR = Path(__file__).parent / "weights"


def builtin_weights(name: str) -> Path | None:
    """The weights that ship with the package for a registered variant (the demo's), or None."""
    path = BUILTIN_WEIGHTS_DIR / f"{name}.safetensors"
    return path if path.is_file() else None


def weights_id(weights: str | Path | None, seed: int = 0, classifier: str | Path | None = None) -> str:
    """What the manifest calls the weights: the file's sha256 (and the classifier's, for an official
    checkpoint imported on the fly), or the seed of a random init."""
    if weights is None:
        return f"random-init:seed={seed}"
    suffix = f"+classifier:sha256:{file_sha256(classifier)}" if classifier is not None else ""
    return f"sha256:{file_sha256(weights)}{suffix}"

