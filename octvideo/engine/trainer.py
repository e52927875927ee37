"""Training: ``train(cfg)`` behind tools/train_net.py.

The loop itself (:func:`train_one_epoch`) is one screen; set-up, resume, validation,
checkpoints, logging and plots hang around it in :func:`train`.
"""
import contextlib
import json
import os
import random
import time
from typing import Dict, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from octvideo.models import CUDA_GRAPH_MODES, build_model, display_name, to_model_memory_format

from . import distributed as du
from .logger import MetricsWriter, Progress, setup_logging
from .metrics import topk_correct
from .optim import build_optimizer, lr_at, set_lr
from .plots import plot_training_curves


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the run stops and the last good checkpoint stays."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> Dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: Optional[Dict]) -> None:
    if not state:
        return
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def autocast_context(cfg, device: torch.device, logger=None):
    """Mixed precision per TRAIN.MIXED_PRECISION: fp16 (CUDA), bf16 (CUDA or CPU), none.

    Known PyTorch bug (torch 2.14/2.15, CPU, bf16 autocast): the Conv3d weight gradient is wrong
    (huge or NaN) when the clip has fewer frames than about twice the temporal kernel, e.g. a
    3x1x1 kernel on 2 frames or the 5x7x7 I3D stem on 2-4 frames. The published 8-frame clips
    are not affected; for shorter clips on the CPU train in fp32 (MIXED_PRECISION none).
    """
    mode = cfg.TRAIN.MIXED_PRECISION
    if mode == "none":
        return contextlib.nullcontext()
    if mode == "fp16" and device.type != "cuda":
        if logger:
            logger.warning("TRAIN.MIXED_PRECISION fp16 needs CUDA; running in fp32 on the CPU (use bf16 there)")
        return contextlib.nullcontext()
    dtype = torch.float16 if mode == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_scaler(cfg, device: torch.device):
    enabled = cfg.TRAIN.MIXED_PRECISION == "fp16" and device.type == "cuda"
    return torch.amp.GradScaler(device.type, enabled=enabled)


def to_device(batch: Dict, device: torch.device, channels_last: bool = False):
    x = batch["inputs"].to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d if x.dim() == 5 else torch.channels_last)
    return x, batch["labels"].to(device, non_blocking=True)


def _mark_cuda_graph_step(cfg, device: torch.device) -> None:
    """Under MODEL.COMPILE with a CUDA-graph mode (MODEL.COMPILE_MODE "reduce-overhead" or
    "max-autotune") on a GPU: tell inductor's CUDA-graph trees that a new step begins, so the
    previous step's graph outputs may be overwritten (the loop has used them by then)."""
    if cfg.MODEL.COMPILE and device.type == "cuda" and cfg.MODEL.COMPILE_MODE in CUDA_GRAPH_MODES:
        torch.compiler.cudagraph_mark_step_begin()


def train_one_epoch(
    model: nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    scaler,
    cfg,
    epoch: int,
    device: torch.device,
    logger,
    metrics: Optional[MetricsWriter] = None,
    start_iteration: int = 0,
) -> Dict:
    """One pass over ``loader``; the learning rate is set every iteration from the schedule."""
    model.train()
    n_iter = len(loader)
    progress = Progress(n_iter, f"epoch {epoch + 1}/{cfg.SOLVER.MAX_EPOCH}", logger, cfg.LOG_PERIOD)
    totals = {"loss": 0.0, "correct": 0, "seen": 0}
    t0 = time.time()
    iteration = start_iteration
    for i, batch in enumerate(loader):
        _mark_cuda_graph_step(cfg, device)
        x, y = to_device(batch, device, cfg.MODEL.CHANNELS_LAST)
        lr = lr_at(cfg, epoch + i / n_iter)
        set_lr(optimizer, lr)
        with autocast_context(cfg, device):
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
        iteration += 1
        # Every process must agree to stop, or the others would hang in the next all-reduce.
        finite = du.all_reduce_sum(torch.tensor([float(torch.isfinite(loss))], device=device))
        if finite.item() < du.world_size():
            raise NonFiniteLossError(
                f"non-finite loss ({loss.item()}) at iteration {iteration} (epoch {epoch + 1}, step {i + 1}); "
                f"stopping. The last complete checkpoint in {cfg.OUTPUT_DIR} is kept."
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        correct = topk_correct(logits.detach().float(), y, (1,))[1]
        totals["loss"] += loss.item() * len(y)
        totals["correct"] += correct
        totals["seen"] += len(y)
        speed = totals["seen"] * du.world_size() / max(time.time() - t0, 1e-9)
        progress.update(loss=loss.item(), lr=lr, clips_per_s=speed)
        if metrics is not None and (iteration % cfg.LOG_PERIOD == 0 or i + 1 == n_iter):
            metrics.write(
                {"kind": "train", "epoch": epoch + 1, "epoch_float": round(epoch + (i + 1) / n_iter, 4),
                 "iteration": iteration, "loss": loss.item(), "lr": lr, "top1": 100.0 * correct / len(y),
                 "clips_per_s": speed},
                iteration,
            )
    progress.close()
    seen = max(totals["seen"], 1)
    return {"loss": totals["loss"] / seen, "top1": 100.0 * totals["correct"] / seen, "iteration": iteration,
            "seconds": time.time() - t0}


@torch.no_grad()
def validate(model: nn.Module, loader, cfg, device: torch.device, logger) -> Dict:
    """Clip-level top-1 / top-5 over the validation split (one centre clip per video), all processes."""
    model.eval()
    counts = torch.zeros(3, dtype=torch.float64, device=device)  # top1, top5, n
    progress = Progress(len(loader), "val", logger, cfg.LOG_PERIOD)
    for batch in loader:
        _mark_cuda_graph_step(cfg, device)
        x, y = to_device(batch, device, cfg.MODEL.CHANNELS_LAST)
        with autocast_context(cfg, device):
            logits = model(x).float()
        c = topk_correct(logits, y, (1, 5))
        counts += torch.tensor([c[1], c[5], len(y)], dtype=torch.float64, device=device)
        progress.update()
    progress.close()
    counts = du.all_reduce_sum(counts)
    n = max(counts[2].item(), 1)
    return {"top1": 100.0 * counts[0].item() / n, "top5": 100.0 * counts[1].item() / n, "num_clips": int(counts[2].item())}


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


# Keys whose change still continues the same run when resuming: where results go, how data
# is loaded, logging, testing, checkpoint cadence, and SOLVER.MAX_EPOCH (to extend a run).
# Any other key that differs from the checkpoint's config means OUTPUT_DIR holds another run.
RESUME_FREE_KEYS = (
    "OUTPUT_DIR", "LOG_PERIOD", "DEVICE", "DATA_LOADER.", "TEST.", "DATA.DECODER", "DATA.PATH_TO_DATA_DIR",
    "DATA.PATH_PREFIX", "CLASSNAMES_FILE", "MODEL.COMPILE", "MODEL.CHANNELS_LAST", "SOLVER.MAX_EPOCH",
    "TRAIN.AUTO_RESUME", "TRAIN.EVAL_PERIOD", "TRAIN.ENABLE", "TRAIN.CHECKPOINT_",
)


def _flat(node, prefix: str = "") -> Dict[str, object]:
    out: Dict[str, object] = {}
    for k, v in node.items():
        key = prefix + k
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = list(v) if isinstance(v, tuple) else v  # YAML has no tuples
    return out


def check_resume_config(path: str, cfg, logger) -> None:
    """Refuse to resume ``path`` when it was written by a run with another config.

    Auto-resume picks the newest checkpoint in OUTPUT_DIR; when that folder holds a run with
    another model, data or schedule (an old experiment, another config pointed at the same
    folder), resuming would silently mix the two. Keys of RESUME_FREE_KEYS may differ (logged).
    A checkpoint without a config (written by other tools) is resumed as is.
    """
    from octvideo import checkpoint as cu
    from octvideo.config import CfgNode

    saved_text = (cu.read_checkpoint(path) or {}).get("cfg")
    if not saved_text:
        return
    saved, now = _flat(CfgNode.load_cfg(saved_text)), _flat(cfg)
    changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    free = [k for k in changed if k.startswith(RESUME_FREE_KEYS)]
    fatal = [k for k in changed if k not in free]
    if fatal:
        listing = "; ".join(f"{k}: {saved.get(k, '(absent)')!r} in the checkpoint, {now.get(k, '(absent)')!r} now"
                            for k in fatal[:8])
        more = f" (and {len(fatal) - 8} more)" if len(fatal) > 8 else ""
        raise ValueError(
            f"{path} was written by a run with another config ({listing}{more}). Refusing to resume it: "
            f"use another OUTPUT_DIR, or set TRAIN.AUTO_RESUME False to start over in {cfg.OUTPUT_DIR}."
        )
    for k in free:
        logger.info(f"resuming with {k} changed: {saved.get(k)!r} -> {now.get(k)!r}")


def train(cfg) -> Dict:
    """Train per ``cfg``, validating and checkpointing periodically; resumes automatically.

    Returns a summary dict (final validation metrics, test results when TEST.ENABLE).
    """
    from octvideo import checkpoint as cu
    from octvideo import data as data_lib

    device_name = du.resolve_device(cfg.DEVICE)
    device = du.init_from_env(device_name)
    out = cfg.OUTPUT_DIR
    if du.is_main_process():
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "config.yaml"), "w") as f:
            f.write(cfg.dump())
    du.barrier()
    logger = setup_logging(out)
    seed_everything(cfg.RNG_SEED + du.rank())
    logger.info(
        f"training {display_name(cfg.MODEL.ARCH, cfg.OCT.ALPHA, cfg.MODEL.DEPTH)} on {device} "
        f"x{du.world_size()} process(es); run folder: {os.path.abspath(out)}"
    )

    train_set = data_lib.build_dataset(cfg, "train")
    class_names = list(train_set.class_names)
    if len(class_names) > cfg.MODEL.NUM_CLASSES:
        raise ValueError(
            f"the training annotations have {len(class_names)} classes but MODEL.NUM_CLASSES is "
            f"{cfg.MODEL.NUM_CLASSES}"
        )
    if du.is_main_process():
        data_lib.write_classnames(out, class_names)
    train_loader = data_lib.build_loader(cfg, "train", train_set)
    if len(train_loader) == 0:
        raise ValueError(
            f"the training loader is empty: {len(train_set)} videos for a global batch of "
            f"{cfg.TRAIN.BATCH_SIZE} (TRAIN.BATCH_SIZE) with drop_last"
        )
    val_loader = None
    try:
        val_loader = data_lib.build_loader(cfg, "val", data_lib.build_dataset(cfg, "val"))
    except FileNotFoundError as e:
        logger.warning(f"no validation split, skipping validation: {e}")

    model = to_model_memory_format(build_model(cfg).to(device), cfg)
    optimizer = build_optimizer(cfg, model)
    scaler = make_scaler(cfg, device)

    start_epoch, iteration = 0, 0
    last = cu.find_last_checkpoint(out) if cfg.TRAIN.AUTO_RESUME else None
    if last:
        check_resume_config(last, cfg, logger)
        info = cu.load_checkpoint(last, model, optimizer=optimizer, scaler=scaler)
        start_epoch, iteration = int(info.get("epoch", 0)), int(info.get("iteration", 0))
        saved_rng = (info.get("extra") or {}).get("rng_state") or {}
        set_rng_state(saved_rng.get(du.rank()))
        logger.info(f"resumed from {last}: {start_epoch} epoch(s), {iteration} iteration(s) done")
    elif cfg.TRAIN.CHECKPOINT_FILE_PATH:
        cu.load_pretrained_for_training(cfg, model)
        logger.info(f"initialised from {cfg.TRAIN.CHECKPOINT_FILE_PATH} (epoch and optimizer start fresh)")
    elif cfg.TRAIN.CHECKPOINT_INFLATE:
        logger.warning("TRAIN.CHECKPOINT_INFLATE is set but TRAIN.CHECKPOINT_FILE_PATH is empty: training from scratch")

    metrics = MetricsWriter(out)
    metrics.truncate_after(iteration)
    ddp_model = model
    if du.is_distributed():
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg.MODEL.COMPILE:
        ddp_model = torch.compile(ddp_model, mode=cfg.MODEL.COMPILE_MODE)

    summary: Dict = {"output_dir": out, "class_names": class_names}
    for epoch in range(start_epoch, cfg.SOLVER.MAX_EPOCH):
        data_lib.set_epoch(train_loader, epoch)
        stats = train_one_epoch(ddp_model, train_loader, optimizer, scaler, cfg, epoch, device, logger, metrics, iteration)
        iteration = stats["iteration"]
        logger.info(
            f"epoch {epoch + 1}/{cfg.SOLVER.MAX_EPOCH}: loss {stats['loss']:.4f}, train top-1 {stats['top1']:.1f}%, "
            f"{stats['seconds']:.1f}s"
        )
        is_last = epoch + 1 == cfg.SOLVER.MAX_EPOCH
        if val_loader is not None and ((epoch + 1) % cfg.TRAIN.EVAL_PERIOD == 0 or is_last):
            v = validate(ddp_model, val_loader, cfg, device, logger)
            logger.info(f"epoch {epoch + 1} validation: top-1 {v['top1']:.2f}%, top-5 {v['top5']:.2f}% ({v['num_clips']} clips)")
            metrics.write({"kind": "val", "epoch": epoch + 1, "iteration": iteration, **v}, iteration)
            summary["val"] = v
        if (epoch + 1) % cfg.TRAIN.CHECKPOINT_PERIOD == 0 or is_last:
            # RNG of every process, so a resumed run draws the same dropout masks / clips.
            states = du.all_gather_objects(rng_state())
            if du.is_main_process():
                path = cu.save_run_checkpoint(
                    out, model, optimizer=optimizer, scaler=scaler, epoch=epoch + 1, iteration=iteration,
                    cfg=cfg, class_names=class_names, extra={"rng_state": dict(enumerate(states))},
                )
                logger.info(f"checkpoint: {path}")
            du.barrier()
        if du.is_main_process():
            plot_training_curves(out)
    metrics.close()
    summary["iteration"] = iteration
    if cfg.TEST.ENABLE:
        from .evaluator import run_test

        summary["test"] = run_test(cfg, model=model, class_names=class_names, logger=logger, device=device)
    du.shutdown()  # leave the process group this call joined (a no-op in one process)
    return summary
