"""Loading checkpoints into models: exactly (resume, test, predict) or as an initialisation (fine-tune).

* :func:`load_checkpoint` -- the file must describe exactly this model (every tensor, every shape);
  any supported layout (octvideo, pytorchvideo, torchvision, octconv.pytorch) is renamed first, so
  a published pytorchvideo I3D can be tested directly. Optimizer / scaler state are restored when
  asked for.
* :func:`load_pretrained_for_training` -- ``TRAIN.CHECKPOINT_FILE_PATH``: a 2D ImageNet model
  inflated into the video model (``TRAIN.CHECKPOINT_INFLATE``), or a 3D model to fine-tune, with
  octaves re-split to the model's alpha; the classifier is taken only when it fits.
"""
import logging
from typing import Dict, List, Optional

import torch
import torch.nn as nn

from .formats import Checkpoint, open_checkpoint
from .inflate import TransferReport, transfer_weights
from .io import CheckpointError, model_info, unwrap_model

logger = logging.getLogger(__name__)

# Parts of a video model that a checkpoint may lack without harm: Non-local blocks start as the
# identity (zero-initialised final BN), and the classifier is trained for the new label set.
_OPTIONAL_PREFIXES = ("head.",)
_OPTIONAL_INFIX = ".nonlocals."

_CFG_KEYS = {"arch": "MODEL.ARCH", "depth": "MODEL.DEPTH", "width": "MODEL.WIDTH", "alpha": "OCT.ALPHA",
             "num_classes": "MODEL.NUM_CLASSES", "in_channels": "DATA.INPUT_CHANNEL_NUM"}


def _describe_mismatch(ckpt: Checkpoint, model: nn.Module) -> str:
    """'checkpoint has OCT.ALPHA 0.25, the model 0.0; ...' from the stored model_info, when there is one."""
    saved = ckpt.meta.get("model_info") or {}
    here = model_info(model)
    diffs = [f"{_CFG_KEYS[k]} {saved[k]!r} in the checkpoint, {here[k]!r} in the model"
             for k in _CFG_KEYS if saved.get(k) is not None and here.get(k) is not None and saved[k] != here[k]]
    return ("; ".join(diffs) + ". ") if diffs else ""


def _check_exact(ckpt: Checkpoint, model: nn.Module) -> None:
    target = model.state_dict()
    missing = [k for k in target if k not in ckpt.state]
    unexpected = [k for k in ckpt.state if k not in target]
    shapes = [f"{k}: {tuple(ckpt.state[k].shape)} in the checkpoint, {tuple(target[k].shape)} in the model"
              for k in target if k in ckpt.state and ckpt.state[k].shape != target[k].shape]
    if not (missing or unexpected or shapes):
        return
    lines = [f"{ckpt.path} ({ckpt.format} layout) does not fit the model built from the config. "
             + _describe_mismatch(ckpt, model)]
    if missing:
        lines.append(f"{len(missing)} tensor(s) missing from the checkpoint, e.g. {missing[:4]}")
    if unexpected:
        lines.append(f"{len(unexpected)} tensor(s) the model does not have, e.g. {unexpected[:4]}")
    if shapes:
        lines.append(f"{len(shapes)} shape mismatch(es), e.g. {shapes[:3]}")
    lines.append("Set MODEL.* / OCT.ALPHA to the checkpoint's model, or initialise from it with "
                 "TRAIN.CHECKPOINT_FILE_PATH (which tolerates a different alpha or classifier).")
    raise CheckpointError("\n  ".join(lines))


def load_checkpoint(
    path: str,
    model: nn.Module,
    optimizer: Optional[torch.optim.Optimizer] = None,
    scaler=None,
) -> Dict:
    """Load ``path`` into ``model`` exactly (and optionally the optimizer and AMP scaler state).

    Returns ``{"path", "format", "epoch", "iteration", "class_names", "cfg", "extra", "model_info"}``
    (``None`` / 0 / ``{}`` for what the file does not hold). Raises FileNotFoundError for a missing
    file and :class:`CheckpointError` naming the file and the first differing tensors otherwise.
    """
    ckpt = open_checkpoint(path)
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
    }


def _required(key: str) -> bool:
    return not key.startswith(_OPTIONAL_PREFIXES) and _OPTIONAL_INFIX not in key


def initialise_from(
    path: str,
    model: nn.Module,
    inflate: bool,
    inflate_method: str = "mean",
) -> TransferReport:
    """Initialise ``model`` from the checkpoint at ``path`` (any layout, any alpha).

    ``inflate``: the file must be a 2D image model, inflated into the 3D ``model``; its classifier is
    never taken (ImageNet classes are not the video classes). Otherwise the file must have the
    model's dimensionality; the classifier is loaded when its shape fits. Every backbone tensor
    must be found and fit (an error lists those that do not); Non-local blocks may be missing.
    """
    ckpt = open_checkpoint(path)
    bare = unwrap_model(model)
    if inflate and ckpt.dims != 2:
        raise CheckpointError(
            f"{path} is a {ckpt.dims}D ({ckpt.format}) checkpoint but TRAIN.CHECKPOINT_INFLATE is True, which "
            f"expects a 2D image model; set TRAIN.CHECKPOINT_INFLATE False to fine-tune from it"
        )
    if inflate and bare.dims != 3:
        raise CheckpointError(f"TRAIN.CHECKPOINT_INFLATE needs a 3D video model; MODEL.ARCH builds a {bare.dims}D one")
    if not inflate and ckpt.dims != bare.dims:
        hint = " set TRAIN.CHECKPOINT_INFLATE True to inflate it" if ckpt.dims == 2 else ""
        raise CheckpointError(
            f"{path} is a {ckpt.dims}D ({ckpt.format}) checkpoint and the model is {bare.dims}D;{hint}"
        )
    report = transfer_weights(ckpt.state, bare, inflate_method, skip=("head.",) if inflate else ())
    bad: List[str] = [k for k in report.missing if _required(k)]
    bad += [f"{k} (checkpoint {s}, model {t})" for k, s, t in report.mismatched if _required(k)]
    if bad:
        raise CheckpointError(
            f"{path} ({ckpt.format}) cannot initialise the model's backbone: {len(bad)} tensor(s) missing or "
            f"of another shape, e.g. {bad[:4]}. " + _describe_mismatch(ckpt, bare)
            + "Check MODEL.DEPTH / MODEL.WIDTH against the checkpoint."
        )
    logger.info(f"initialised from {path} ({ckpt.format}, {ckpt.dims}D"
                f"{', inflated with ' + inflate_method if report.inflated else ''}): {report.summary()}")
    return report


def load_pretrained_for_training(cfg, model: nn.Module) -> TransferReport:
    """``TRAIN.CHECKPOINT_FILE_PATH`` into ``model`` per ``TRAIN.CHECKPOINT_INFLATE(_METHOD)``."""
    return initialise_from(
        cfg.TRAIN.CHECKPOINT_FILE_PATH, model, bool(cfg.TRAIN.CHECKPOINT_INFLATE), cfg.TRAIN.CHECKPOINT_INFLATE_METHOD
    )
