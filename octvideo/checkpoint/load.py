"""Loading checkpoints into models: exactly (resume, test, predict) or as a start (fine-tune, inflate).

* :func:`load_checkpoint` -- the file must describe exactly this model (every tensor, every shape);
  any supported layout (octvideo, pytorchvideo, pyslowfast, torchvision, octconv-pytorch) is renamed
  first, so a published pytorchvideo I3D can be tested directly. Optimizer / scaler state are
  restored when asked for; epoch and iteration are returned for a resume.
* :func:`load_pretrained_for_training` -- ``TRAIN.CHECKPOINT_FILE_PATH``: weights only, by the rules
  of :mod:`.inflation` (a 2D file inflated when ``TRAIN.CHECKPOINT_INFLATE``). The file's epoch,
  iteration and optimizer state are never read: a run started from a checkpoint starts at epoch 0
  with a fresh optimizer (PySlowFast's trap: resuming the epoch counter of an ImageNet or Kinetics
  checkpoint skips the new schedule).
"""
import logging
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn

from .formats import Checkpoint, open_checkpoint
from .inflation import TransferReport, transfer_state
from .io import CheckpointError, model_info, unwrap_model

logger = logging.getLogger(__name__)

_CFG_KEYS = {"arch": "MODEL.ARCH", "depth": "MODEL.DEPTH", "width": "MODEL.WIDTH", "alpha": "OCT.ALPHA",
             "channel_multiple": "OCT.CHANNEL_MULTIPLE", "num_classes": "MODEL.NUM_CLASSES", "in_channels": "DATA.INPUT_CHANNEL_NUM"}
_LIST = 8  # names listed per category in a mismatch error


def _describe_mismatch(ckpt: Checkpoint, model: nn.Module) -> str:
    """'OCT.ALPHA 0.25 in the checkpoint, 0.0 in the model; ...' from the stored model_info, when there is one."""
    saved = ckpt.meta.get("model_info") or {}
    here = model_info(model)
    diffs = [f"{_CFG_KEYS[k]} {saved[k]!r} in the checkpoint, {here[k]!r} in the model"
             for k in _CFG_KEYS if saved.get(k) is not None and here.get(k) is not None and saved[k] != here[k]]
    return ("; ".join(diffs) + ". ") if diffs else ""


def _listing(title: str, items: Sequence[str]) -> List[str]:
    lines = [f"{title} ({len(items)}):" + ("" if items else " none")]
    lines += [f"  {item}" for item in items[:_LIST]]
    if len(items) > _LIST:
        lines.append(f"  ... and {len(items) - _LIST} more")
    return lines


def _check_exact(ckpt: Checkpoint, model: nn.Module) -> None:
    """Raise one error listing the missing keys, the unexpected keys and the shape mismatches."""
    target = model.state_dict()
    missing = [k for k in target if k not in ckpt.state]
    unexpected = [ckpt.source_name(k) for k in ckpt.state if k not in target]
    shapes = [f"{k}: checkpoint {tuple(ckpt.state[k].shape)}, model {tuple(target[k].shape)}"
              for k in target if k in ckpt.state and ckpt.state[k].shape != target[k].shape]
    if not (missing or unexpected or shapes):
        return
    lines = [f"{ckpt.path} ({ckpt.format} layout) does not fit the model built from the config. "
             + _describe_mismatch(ckpt, model).strip()]
    lines += _listing("missing keys", missing) + _listing("unexpected keys", unexpected)
    lines += _listing("shape mismatches", shapes)
    lines.append("Set MODEL.* / OCT.* to the checkpoint's model. To start training from a checkpoint of "
                 "another classifier size, set TRAIN.CHECKPOINT_FILE_PATH instead.")
    raise CheckpointError("\n  ".join(lines))


def load_checkpoint(
    path: str,
    model: nn.Module,
    optimizer: Optional[torch.optim.Optimizer] = None,
    scaler=None,
    fmt: Optional[str] = None,
) -> Dict:
    """Load ``path`` into ``model`` exactly (and optionally the optimizer and AMP scaler state).

    Returns ``{"path", "format", "epoch", "iteration", "class_names", "cfg", "extra", "model_info",
    "octvideo_version"}`` (``None`` / 0 / ``{}`` for what the file does not hold; files of other
    layouts hold only weights, so epoch and iteration are 0). ``fmt`` forces a layout instead of
    recognising it. Raises FileNotFoundError for a missing file and :class:`CheckpointError`, naming
    the file, for one that is truncated, not a checkpoint, or not this model (missing keys,
    unexpected keys and shape mismatches listed together).
    """
    ckpt = open_checkpoint(path, fmt)
    bare = unwrap_model(model)
    _check_exact(ckpt, bare)
    bare.load_state_dict(ckpt.state, strict=True)
    meta = ckpt.meta
    if optimizer is not None:
        if "optimizer_state" in meta:
            try:
                optimizer.load_state_dict(meta["optimizer_state"])
            except ValueError as e:  # parameter groups differ: the optimizer was built differently
                raise CheckpointError(f"{path}: optimizer state does not fit the optimizer: {e}") from None
        else:
            logger.warning(f"{path} holds no optimizer state; the optimizer starts fresh")
    if scaler is not None and meta.get("scaler_state"):
        scaler.load_state_dict(meta["scaler_state"])
    return {
        "path": path,
        "format": ckpt.format,
        "epoch": int(meta.get("epoch", 0) or 0),
        "iteration": int(meta.get("iteration", 0) or 0),
        "class_names": meta.get("class_names"),
        "cfg": meta.get("cfg"),
        "extra": meta.get("extra") or {},
        "model_info": meta.get("model_info"),
        "octvideo_version": meta.get("octvideo_version"),
    }


def initialise_from(path: str, model: nn.Module, inflate: bool = False, inflate_method: str = "mean") -> TransferReport:
    """Initialise ``model`` from the weights in ``path`` (see :mod:`.inflation` for the rules).

    ``inflate``: a 2D file is inflated into the 3D ``model`` with ``inflate_method``; a file of
    the model's own dimensionality is taken as it is either way (an already inflated file needs no
    second inflation). Without ``inflate`` a 2D file for a 3D model is an error that says so.
    Epoch, iteration and optimizer state of the file are ignored.
    """
    ckpt = open_checkpoint(path)
    bare = unwrap_model(model)
    method = None
    if ckpt.dims == 2 and bare.dims == 3:
        if not inflate:
            raise CheckpointError(
                f"{path} is a 2D ({ckpt.format}) checkpoint and the model is 3D: set TRAIN.CHECKPOINT_INFLATE True "
                f"to inflate it while loading, or inflate it once with tools/inflate.py"
            )
        method = inflate_method
    report = transfer_state(ckpt, bare, method)
    logger.info(f"initialised from {report.source} ({report.source_format}, {ckpt.dims}D): {report.summary()}")
    return report


def load_pretrained_for_training(cfg, model: nn.Module) -> TransferReport:
    """``TRAIN.CHECKPOINT_FILE_PATH`` into ``model`` per ``TRAIN.CHECKPOINT_INFLATE(_METHOD)``; weights only."""
    return initialise_from(
        cfg.TRAIN.CHECKPOINT_FILE_PATH, model, bool(cfg.TRAIN.CHECKPOINT_INFLATE), cfg.TRAIN.CHECKPOINT_INFLATE_METHOD
    )

