"""The multi-view test (10 temporal clips x 3 crops by default) behind tools/test_net.py.

Each dataset item holds all views of one video, decoded once, as uint8 pixels
(V, T, 3, H, W); they are normalised on the device. Views go through the model in chunks
of ``TEST.VIEW_BATCH_SIZE`` (0 = the whole batch at once); softmax scores are averaged per
video; predictions are gathered across processes. With TEST.FUSE_CONV_BN the model is an
eval-mode copy with BatchNorm folded into the convolutions (:func:`inference_model`).
"""
import json
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

from octvideo.data.transforms import normalise
from octvideo.models import build_model, compile_for_inference, fuse_conv_bn, to_model_memory_format

from . import distributed as du
from .logger import Progress, setup_logging
from .metrics import confusion_matrix, mean_class_accuracy
from .plots import plot_confusion_matrix
from .trainer import autocast_context


@torch.no_grad()
def video_scores(model: nn.Module, frames: torch.Tensor, view_batch_size: int, cfg, device) -> torch.Tensor:
    """uint8 (B, V, T, 3, H, W) views -> (B, num_classes) softmax averaged over the V views.

    The views arrive as the test loader's uint8 pixels (``batch["frames"]``); each chunk is
    moved to ``device`` as uint8 and normalised there with DATA.MEAN / DATA.STD (a quarter
    of the bytes of float views to move, between processes and to the GPU).
    Views go through the model ``view_batch_size`` at a time (0: all B*V at once). When a chunk
    does not fit in GPU memory the chunk size is halved and the chunk retried, down to one view,
    so the 30-view test of a large model runs on a small GPU without tuning TEST.VIEW_BATCH_SIZE.
    """
    if frames.dtype != torch.uint8 or frames.dim() != 6 or frames.shape[3] != 3:
        raise ValueError(
            f"video_scores expects uint8 views (B, V, T, 3, H, W); got {frames.dtype} {tuple(frames.shape)}"
        )
    b, v = frames.shape[:2]
    flat = frames.reshape(b * v, *frames.shape[2:])
    chunk = view_batch_size if view_batch_size > 0 else flat.shape[0]
    mean, std = tuple(cfg.DATA.MEAN), tuple(cfg.DATA.STD)
    # The (5D) views in the layout of the model's weights (MODEL.CHANNELS_LAST): channels-last
    # inputs keep every convolution on its pre-packed oneDNN path on the CPU.
    fmt = torch.channels_last_3d if cfg.MODEL.CHANNELS_LAST else torch.contiguous_format
    probs = []
    start = 0
    while start < flat.shape[0]:
        x = None
        try:
            x = normalise(flat[start:start + chunk].to(device, non_blocking=True), mean=mean, std=std,
                          memory_format=fmt)
            with autocast_context(cfg, device):
                probs.append(model(x).float().softmax(dim=1).cpu())
        except torch.OutOfMemoryError:
            if chunk == 1:
                raise
            del x
            if device.type == "cuda":
                torch.cuda.empty_cache()
            chunk = max(1, chunk // 2)
            continue
        start += x.shape[0]
    return torch.cat(probs).reshape(b, v, -1).mean(dim=1)


def inference_model(model: nn.Module, cfg) -> nn.Module:
    """The model the test runs: with TEST.FUSE_CONV_BN, an eval-mode copy with BN folded into the convs.

    A DistributedDataParallel wrapper is unwrapped first (inference needs no gradient sync).
    The copy computes the same scores up to float rounding, ~15% faster on the CPU
    (docs/benchmarks.md); ``model`` itself keeps its BatchNorms and its mode. With
    MODEL.CHANNELS_LAST the result's weights are channels-last (without folding that is
    ``model`` itself, converted in place as ``Module.to`` does; a model trained here already is).
    With MODEL.COMPILE the result is compiled for inference (:func:`compile_for_inference`:
    weights frozen into the graph on the CPU; the first chunk of views pays the compilation).
    """
    model = getattr(model, "module", model)
    if cfg.TEST.FUSE_CONV_BN:
        model = fuse_conv_bn(model)
    # (A no-op for a model trained here, which is in this layout already.)
    model = to_model_memory_format(model, cfg)
    if cfg.MODEL.COMPILE:
        model = compile_for_inference(model, cfg.MODEL.COMPILE_MODE)
    return model


@torch.no_grad()
def multi_view_predict(model: nn.Module, loader, cfg, device, logger) -> Dict:
    """Scores of every video this process sees, plus the failures the loader reported."""
    model.eval()
    indices: List[int] = []
    labels: List[int] = []
    scores: List[np.ndarray] = []
    failed: List[Dict] = []
    progress = Progress(len(loader), "test", logger, cfg.LOG_PERIOD)
    for batch in loader:
        failed.extend(batch.get("failed", []))
        if batch["frames"].shape[0] > 0:
            s = video_scores(model, batch["frames"], cfg.TEST.VIEW_BATCH_SIZE, cfg, device)
            scores.extend(s.numpy())
            indices.extend(int(i) for i in batch["indices"])
            labels.extend(int(y) for y in batch["labels"])
        progress.update(videos=len(indices), failed=len(failed))
    progress.close()
    return {"indices": indices, "labels": labels, "scores": scores, "failed": failed}


def summarise(parts: Sequence[Dict], class_names: Sequence[str], paths: Sequence[str]) -> Dict:
    """Merge per-process predictions (a distributed sampler repeats a few videos) and score them."""
    by_index: Dict[int, tuple] = {}
    failed: Dict[int, Dict] = {}
    for part in parts:
        for i, y, s in zip(part["indices"], part["labels"], part["scores"]):
            by_index[i] = (y, s)
        for f in part["failed"]:
            failed[int(f["index"])] = f
    order = sorted(by_index)
    num_classes = len(class_names)
    labels = np.array([by_index[i][0] for i in order], dtype=np.int64)
    scores = np.stack([by_index[i][1] for i in order]) if order else np.zeros((0, num_classes))
    top5 = np.argsort(-scores, axis=1)[:, :5]
    # Rows without a label (-1: e.g. Kinetics-600's test.csv) are predicted but not scored.
    scored = labels >= 0
    if scored.any():
        preds, truth = top5[scored, 0], labels[scored]
        top1 = float((preds == truth).mean() * 100)
        top5_acc = float((top5[scored] == truth[:, None]).any(axis=1).mean() * 100)
        cm = confusion_matrix(preds, truth, num_classes)
        mca = mean_class_accuracy(cm) * 100
    else:
        top1 = top5_acc = mca = float("nan")
        cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    predictions = []
    for row, i in enumerate(order):
        predictions.append({
            "index": i, "path": paths[i] if i < len(paths) else "",
            "label": class_names[labels[row]] if labels[row] >= 0 else None,
            "top5": [[class_names[c], round(float(scores[row, c]), 6)] for c in top5[row]],
        })
    return {
        "top1": top1, "top5": top5_acc, "mean_class_accuracy": mca, "num_videos": len(order),
        "num_scored": int(scored.sum()), "num_failed": len(failed),
        "failed": sorted(failed.values(), key=lambda f: f["index"]),
        "confusion_matrix": cm, "predictions": predictions,
    }


def run_test(cfg, model: Optional[nn.Module] = None, class_names: Optional[List[str]] = None,
             logger=None, device: Optional[torch.device] = None, checkpoint_path: str = "") -> Dict:
    """The full multi-view test; writes test_results.json, test_predictions.json and the confusion matrix PNG."""
    from octvideo import checkpoint as cu
    from octvideo import data as data_lib

    out = cfg.OUTPUT_DIR
    joined = device is None  # called on its own (tools/test_net.py): it joins and leaves the group
    if joined:
        device = du.init_from_env(du.resolve_device(cfg.DEVICE))
    if logger is None:
        logger = setup_logging(out)
    if model is None:
        checkpoint_path = checkpoint_path or cfg.TEST.CHECKPOINT_FILE_PATH or (cu.find_last_checkpoint(out) or "")
        if not checkpoint_path:
            raise FileNotFoundError(f"no checkpoint to test: set TEST.CHECKPOINT_FILE_PATH or train into {out} first")
        model = build_model(cfg).to(device)
        info = cu.load_checkpoint(checkpoint_path, model)
        class_names = class_names or info.get("class_names")
    dataset = data_lib.build_dataset(cfg, "test")
    class_names = list(class_names or dataset.class_names)
    loader = data_lib.build_loader(cfg, "test", dataset)
    views = cfg.TEST.NUM_ENSEMBLE_VIEWS * cfg.TEST.NUM_SPATIAL_CROPS
    logger.info(f"testing {len(dataset)} videos x {views} views ({cfg.TEST.NUM_ENSEMBLE_VIEWS} clips x {cfg.TEST.NUM_SPATIAL_CROPS} crops)")
    part = multi_view_predict(inference_model(model, cfg), loader, cfg, device, logger)
    parts = du.all_gather_objects(part)
    result = summarise(parts, class_names, list(dataset.paths))
    summary = {k: result[k] for k in ("top1", "top5", "mean_class_accuracy", "num_videos", "num_scored", "num_failed")}
    summary.update(
        views=views, num_ensemble_views=cfg.TEST.NUM_ENSEMBLE_VIEWS, num_spatial_crops=cfg.TEST.NUM_SPATIAL_CROPS,
        checkpoint=checkpoint_path or "(model in memory after training)", num_classes=len(class_names),
        failed_videos=result["failed"],
    )
    if du.is_main_process():
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "test_results.json"), "w") as f:
            json.dump(summary, f, indent=2)
        with open(os.path.join(out, "test_predictions.json"), "w") as f:
            json.dump(result["predictions"], f, indent=1)
        plot_confusion_matrix(result["confusion_matrix"], class_names, os.path.join(out, "plots", "confusion_matrix.png"))
        logger.info(
            f"test: top-1 {summary['top1']:.2f}%, top-5 {summary['top5']:.2f}%, mean class accuracy "
            f"{summary['mean_class_accuracy']:.2f}% on {summary['num_videos']} videos "
            f"({summary['num_failed']} failed to decode); {os.path.join(out, 'test_results.json')}"
        )
    if joined:
        du.shutdown()
    return summary
