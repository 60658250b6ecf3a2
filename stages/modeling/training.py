"""Training machinery shared by the teacher and the student.

Resumable and reproducible by construction: the batch of iteration ``t`` (which images, their
augmentation) and every random choice inside the model (proposal sampling, federated classes)
are drawn from generators seeded with ``(seed, t)``, and the checkpointer stores model,
optimizer and scheduler. A job killed at any point and restarted resumes from its last
checkpoint and continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data.samplers import RepeatFactorTrainingSampler
from detectron2.engine import hooks
from detectron2.engine.train_loop import SimpleTrainer
from detectron2.solver import build_lr_scheduler
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping, reduce_param_groups
from detectron2.utils import comm
from detectron2.utils.events import CommonMetricPrinter, JSONWriter, TensorboardXWriter
from detectron2.utils.logger import setup_logger

from stages.utils.atomic import atomic_path, lock_exclusively, prepare_signed_dir, release_lock

logger = logging.getLogger("stages.modeling.training")


def setup_logging(output_dir: str | Path | None = None) -> None:
    """detectron2's logger (progress lines with iteration, ETA, losses) on stdout and in a file."""
    output = str(output_dir) if output_dir else None
    rank = comm.get_rank()  # only the main process prints; every process keeps its own log file
    setup_logger(output=output, distributed_rank=rank, name="detectron2", abbrev_name="d2")
    setup_logger(output=output, distributed_rank=rank, name="stages", abbrev_name="stages")
    # Where this job runs: a Slurm job id and the GPUs it was given, for whoever reads the log.
    keys = ("SLURM_JOB_ID", "SLURM_JOB_NODELIST", "SLURMD_NODENAME", "SLURM_NODEID", "CUDA_VISIBLE_DEVICES")
    placement = {k: os.environ[k] for k in keys if k in os.environ}
    if placement:
        logger.info("placement: %s", " ".join(f"{k}={v}" for k, v in placement.items()))


def seed_everything(seed: int, iteration: int, stream: int = 0) -> None:
    """Seed python, numpy (global) and torch from (seed, stream, iteration)."""
    mixed = int(np.random.SeedSequence([seed, stream, iteration]).generate_state(1)[0])
    random.seed(mixed)
    np.random.seed(mixed)
    torch.manual_seed(mixed)


def sampling_weights(dataset_dicts: Sequence[dict], repeat_threshold: float) -> np.ndarray:
    """Per-image sampling probabilities from LVIS repeat factors (detectron2's own formula)."""
    if repeat_threshold <= 0:
        factors = np.ones(len(dataset_dicts))
    else:
        factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
            list(dataset_dicts), repeat_threshold
        ).numpy()
    return factors / factors.sum()






class IterationBatches(torch.utils.data.Dataset):
    """Item ``k`` is the mapped batch of iteration ``start_iter + k``, a pure function of the seed.

    Works with any number of DataLoader workers (each item seeds its own generators).
    """

    def __init__(self, dataset_dicts: Sequence[dict], mapper: Callable[[dict], Any], batch_size: int,
                 seed: int, start_iter: int, max_iter: int, weights: np.ndarray | None = None, stream: int = 0,
                 rank: int = 0):
        if len(dataset_dicts) == 0:
            raise ValueError("no images to train on")
        self.dataset_dicts = list(dataset_dicts)
        self.mapper = mapper
        self.batch_size = batch_size
        self.seed = seed
        self.start_iter = start_iter
        self.max_iter = max_iter
        self.weights = weights
        self.stream = stream
        self.rank = rank  # each process of a distributed run draws its own share of the batch

    def __len__(self) -> int:
        return max(self.max_iter - self.start_iter, 0)

    def __getitem__(self, k: int) -> list[Any]:
        iteration = self.start_iter + k
        rng = np.random.default_rng([self.seed, self.stream, self.rank, iteration])
        indices = rng.choice(len(self.dataset_dicts), size=self.batch_size, replace=True, p=self.weights)
        seed_everything(self.seed, iteration, stream=1000 + 100 * self.rank + self.stream)
        return [self.mapper(copy.deepcopy(self.dataset_dicts[i])) for i in indices]


class ZippedBatches(torch.utils.data.Dataset):
    """Several IterationBatches side by side (the student's labeled and unlabeled streams)."""

    def __init__(self, *parts: IterationBatches):
        self.parts = parts

    def __len__(self) -> int:
        return min(len(p) for p in self.parts)

    def __getitem__(self, k: int) -> tuple:
        return tuple(p[k] for p in self.parts)


def _identity(batch: Any) -> Any:
    return batch


def iteration_loader(dataset: torch.utils.data.Dataset, workers: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers,
                                       collate_fn=_identity)


def save_torch_file(data: dict[str, Any], target: str | Path) -> None:
    """torch.save ``data`` to ``target`` atomically, with the same bytes for the same tensors.

    torch.save names the zip archive's top folder after the path it writes to; written through a
    file handle it is always "archive", so the atomic writer's random temporary name does not make
    two identical checkpoints differ byte for byte."""
    with atomic_path(target) as tmp, open(tmp, "wb") as handle:
        torch.save(data, handle)


class AtomicCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer whose files appear only when completely written."""

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_to_disk:  # only the main process of a distributed run writes
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        target = Path(self.save_dir) / f"{name}.pth"
        save_torch_file(data, target)
        self.tag_last_checkpoint(target.name)

    def _load_file(self, filename: str) -> dict[str, Any]:
        # weights_only: a checkpoint directory is a path from the config, never trusted with pickle
        try:
            return torch.load(filename, map_location=torch.device("cpu"), weights_only=True)
        except Exception as exc:  # truncated or foreign files raise several types
            raise RuntimeError(
                f"checkpoint {filename} cannot be loaded ({type(exc).__name__}: {exc}); checkpoints are written "
                f"atomically, so this file was changed by something else: delete it (and point "
                f"{Path(filename).parent / 'last_checkpoint'} at an earlier model_*.pth to resume from there)"
            ) from exc

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if not self.save_to_disk:
            return
        with atomic_path(Path(self.save_dir) / "last_checkpoint") as tmp:
            tmp.write_text(last_filename_basename)


def checkpoint_lock(directory: str | Path) -> Path:
    """The lock file of a checkpoint directory (beside it: the directory itself may be emptied)."""
    directory = Path(directory)
    return directory.with_name(f".{directory.name}.lock")


def prepare_checkpoint_dir(directory: str | Path, signature: dict[str, Any]) -> Path:
    """A checkpoint directory that only resumes runs with the same signature (config, inputs), held
    exclusively by this training job.

    A leftover directory from a run with other settings is cleared instead of being resumed. A second
    trainer on the same directory (e.g. a job left running after its snakemake was killed, and the
    rule started again) refuses to start, naming the first one's PID.
    """
    directory = Path(directory)
    if comm.is_main_process():
        lock_exclusively(checkpoint_lock(directory), f"checkpoint directory {directory}")
        if prepare_signed_dir(directory, signature):
            logger.warning("checkpoint dir %s belongs to other settings; starting fresh", directory)
    comm.synchronize()
    return directory


def file_digest(path: str | Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def layer_lr_scales(model: torch.nn.Module, decay: float) -> dict[torch.nn.Parameter, float]:
    """Layer-wise learning-rate decay (ViTDet, EVA-02 detection): a trunk parameter at depth d (0 for
    the embeddings, i + 1 for block i) learns at decay ** (depth + 1 - d) of the base rate; the
    trunk's last norm, the feature pyramid and the heads at the base rate."""
    trunk = getattr(getattr(model, "backbone", None), "net", None)
    if not hasattr(trunk, "lr_layer_ids"):
        raise ValueError("config key 'model.layer_decay' < 1 needs a ViT trunk (model.backbone: vit_sfp)")
    depth = len(trunk.model.blocks)
    params = dict(trunk.model.named_parameters())
    return {params[name]: decay ** (depth + 1 - layer) for name, layer in trunk.lr_layer_ids().items()}


def optimizer_param_groups(cfg, model: torch.nn.Module) -> list[dict[str, Any]]:
    """detectron2's parameter groups (no weight decay on norms), each learning rate scaled by the
    layer-wise decay when cfg.SOLVER.LAYER_DECAY < 1."""
    groups = get_default_optimizer_params(model, base_lr=cfg.SOLVER.BASE_LR, weight_decay_norm=0.0)
    decay = float(cfg.SOLVER.get("LAYER_DECAY", 1.0))
    if decay == 1.0:
        return groups
    scales = layer_lr_scales(model, decay)
    per_param = [{**{k: v for k, v in g.items() if k != "params"}, "params": [p]} for g in groups for p in g["params"]]
    for group in per_param:
        group["lr"] = group["lr"] * scales.get(group["params"][0], 1.0)
    return reduce_param_groups(per_param)


def build_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SGD (momentum 0.9) or AdamW (cfg.SOLVER.OPTIMIZER), with detectron2's parameter groups
    (no weight decay on norms, layer-wise decay when configured) and gradient clipping. The paper's
    4e-5 learning rate is AdamW's."""
    params = optimizer_param_groups(cfg, model)
    kind = cfg.SOLVER.OPTIMIZER
    if kind == "sgd":
        return maybe_add_gradient_clipping(cfg, torch.optim.SGD)(params, lr=cfg.SOLVER.BASE_LR, momentum=0.9,
                                                                 weight_decay=cfg.SOLVER.WEIGHT_DECAY)
    if kind == "adamw":
        return maybe_add_gradient_clipping(cfg, torch.optim.AdamW)(params, lr=cfg.SOLVER.BASE_LR, betas=(0.9, 0.999),
                                                                   weight_decay=cfg.SOLVER.WEIGHT_DECAY)
    raise ValueError(f"unknown optimizer {kind!r} (sgd | adamw)")


class SeededTrainer(SimpleTrainer):
    """SimpleTrainer that reseeds model-side randomness per iteration and rejects non-finite losses.

    ``loss_fn(batch)`` returns the loss dict of one step; the teacher's is the model
    itself, the student's adds pseudo-labelling. Gradients are zeroed before ``loss_fn`` so that it
    may backpropagate a part of the loss itself (the student does, for DDP's gradient accumulation).
    """

    def __init__(self, model: torch.nn.Module, data_loader, optimizer, seed: int,
                 loss_fn: Callable[[Any], dict[str, torch.Tensor]]):
        super().__init__(model, data_loader, optimizer)
        self.seed = seed
        self.loss_fn = loss_fn

    def run_step(self) -> None:
        assert self.model.training, "model was changed to eval mode"
        data = next(self._data_loader_iter)
        seed_everything(self.seed, self.iter, stream=1 + comm.get_rank())
        self.optimizer.zero_grad()
        loss_dict = self.loss_fn(data)
        losses = sum(loss_dict.values())
        if not torch.isfinite(losses):
            bad = {k: float(v.detach()) for k, v in loss_dict.items() if not torch.isfinite(v)}
            raise FloatingPointError(f"non-finite loss at iteration {self.iter}: {bad}")
        if losses.requires_grad:
            losses.backward()
        self._write_metrics(loss_dict, 0.0)
        self.optimizer.step()


WRITE_PERIOD = 20  # iterations between progress lines / metrics.json rows / TensorBoard points


def metric_writers(checkpoint_dir: Path, max_iter: int) -> list[hooks.HookBase]:
    """The main process's event writers (detectron2's convention): progress lines in the log, the
    event storage's scalars -- ``total_loss``, every loss term, ``lr``, timings, the student's
    pseudo-label counts -- as ``metrics.json`` (one JSON object per line; a resumed run appends) and as
    TensorBoard event files, both in ``checkpoint_dir``, every WRITE_PERIOD iterations and at the
    last. Losses are medians over the last WRITE_PERIOD iterations (the storage's smoothing hint).
    ``tensorboard --logdir <checkpoint_dir>`` follows a run live."""
    if not comm.is_main_process():
        return []
    writers = [CommonMetricPrinter(max_iter), JSONWriter(str(checkpoint_dir / "metrics.json"), window_size=WRITE_PERIOD),
               TensorboardXWriter(str(checkpoint_dir), window_size=WRITE_PERIOD)]
    return [hooks.PeriodicWriter(writers, period=WRITE_PERIOD)]


def train(model: torch.nn.Module, cfg, dataset: torch.utils.data.Dataset | Callable[[int], torch.utils.data.Dataset],
          checkpoint_dir: Path, final_path: Path, seed: int, workers: int,
          loss_factory: Callable[[torch.nn.Module], Callable[[Any], dict[str, torch.Tensor]]] | None = None,
          extra_checkpointables: dict[str, Any] | None = None,
          extra_hooks: list[hooks.HookBase] | None = None) -> None:
    """Train ``model`` for cfg.SOLVER.MAX_ITER iterations, resuming from ``checkpoint_dir``.

    ``dataset(start_iter)`` builds the iteration-indexed dataset from the resume point;
    ``loss_factory(trained_model)`` gives the step's loss function (default: the model's own
    losses), where ``trained_model`` is the DDP wrapper in a multi-process run. The final weights
    are written atomically to ``final_path`` (model state only) by the main process.
    """
    max_iter = cfg.SOLVER.MAX_ITER
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    checkpointer = AtomicCheckpointer(model, str(checkpoint_dir), save_to_disk=comm.is_main_process(),
                                      optimizer=optimizer, scheduler=scheduler, **(extra_checkpointables or {}))
    start_iter = 0
    if checkpointer.has_checkpoint():
        state = checkpointer.resume_or_load("", resume=True)
        start_iter = state.get("iteration", -1) + 1
        logger.info("resuming from %s at iteration %d", checkpointer.get_checkpoint_file(), start_iter)
    loader = iteration_loader(dataset(start_iter), workers)
    trained = wrap_distributed(model)
    loss_fn = loss_factory(trained) if loss_factory else trained
    trainer = SeededTrainer(trained, loader, optimizer, seed, loss_fn)
    trainer.register_hooks([
        hooks.IterationTimer(),
        hooks.LRScheduler(optimizer, scheduler),
        # Extra hooks (the student's EMA teacher update) run before the checkpointer, so that a
        # checkpoint holds the state after the whole step.
        *(extra_hooks or []),
        hooks.PeriodicCheckpointer(checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD, max_iter=max_iter),
        *metric_writers(checkpoint_dir, max_iter),
    ])
    if start_iter < max_iter:
        trainer.train(start_iter, max_iter)
    if comm.is_main_process():
        save_torch_file({"model": model.state_dict(), "iteration": max_iter - 1}, final_path)
        os.sync()
        release_lock(checkpoint_lock(checkpoint_dir))
    comm.synchronize()


def wrap_distributed(model: torch.nn.Module) -> torch.nn.Module:
    """DistributedDataParallel in a multi-process run (device_ids only on GPUs), else the model."""
    if comm.get_world_size() == 1:
        return model
    device_ids = [comm.get_local_rank()] if next(model.parameters()).is_cuda else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)
