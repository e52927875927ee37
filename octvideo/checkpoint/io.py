"""Checkpoint files: writing them atomically, finding the last complete one, reading them safely.

An octvideo checkpoint is one ``torch.save`` file (``.pyth``, PySlowFast's extension) holding a dict::

    format          "octvideo"
    format_version  1
    octvideo_version  octvideo.__version__ of the code that wrote it
    model_state     the model's state_dict (OctConv paths as <name>.h2h.weight ..., see layers/)
    model_info      {arch, depth, width, alpha, channel_multiple, dims, num_classes, in_channels}: what built it
    optimizer_state, scaler_state   only in training checkpoints
    epoch, iteration                epochs / iterations completed when it was written
    class_names, cfg (YAML text), extra (e.g. the RNG state of every process)

Run folders keep them under ``OUTPUT_DIR/checkpoints/`` as ``checkpoint_epoch_00005.pyth`` next to a
one-line text file ``last_checkpoint`` naming the newest (detectron2's habit). Every file is written
through iopath's PathManager to a temporary name (``<name>.tmp``), flushed to disk and renamed only
once complete, so a process killed during a save never leaves a truncated file under a final name;
``last_checkpoint`` is rewritten (atomically too) only after that rename.

Files are read with ``torch.load(weights_only=True)``: tensors and plain Python containers only, so
opening a checkpoint cannot run code. What we write satisfies that (numpy arrays in ``extra`` are
stored as lists).
"""
import json
import logging
import os
import re
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
from iopath.common.file_io import g_pathmgr

from octvideo import __version__

logger = logging.getLogger(__name__)

FORMAT = "octvideo"
FORMAT_VERSION = 1
CHECKPOINT_SUBDIR = "checkpoints"
LAST_CHECKPOINT_FILE = "last_checkpoint"
_EPOCH_FILE = re.compile(r"^checkpoint_epoch_(\d+)\.pyth$")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not fit the model; the message names the file."""


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare model inside DistributedDataParallel (``.module``) and torch.compile (``._orig_mod``)."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel) or (
            isinstance(model, nn.DataParallel)
        ):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def model_info(model: nn.Module) -> Dict[str, Any]:
    """What built ``model`` (an octvideo ResNet), stored with its weights for clear mismatch errors."""
    model = unwrap_model(model)
    arch = getattr(model, "arch", None)
    return {
        "arch": getattr(arch, "name", None),
        "depth": getattr(model, "depth", None),
        "width": getattr(model, "width", None),
        "alpha": getattr(model, "alpha", None),
        "channel_multiple": getattr(model, "channel_multiple", None),
        "dims": getattr(model, "dims", None),
        "num_classes": getattr(model, "num_classes", None),
        "in_channels": getattr(model, "in_channels", None),
    }


def _plain(obj: Any) -> Any:
    """``obj`` with numpy arrays / scalars turned into lists / Python numbers (weights_only-safe)."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    return obj


def _replace(tmp: str, path: str) -> None:
    """Rename ``tmp`` to ``path``, replacing it. iopath's ``mv`` refuses an existing destination (and
    only logs it), so local files use ``os.replace`` -- atomic on POSIX and Windows."""
    if "://" not in path:
        os.replace(tmp, path)
        return
    if g_pathmgr.exists(path):  # remote stores have no atomic replace; the window is one rename
        g_pathmgr.rm(path)
    if not g_pathmgr.mv(tmp, path):
        raise OSError(f"could not move {tmp} to {path}")


def _write_atomic(write, path: str, mode: str = "wb") -> None:
    """``write(f)`` into a temporary file next to ``path``, then rename it to ``path``.

    The rename happens only after ``write`` returned and the bytes reached the disk (fsync for local
    files: without it a power cut after the rename can leave an empty file under the final name).
    A failed write removes its temporary file; a killed process leaves it behind, and nothing reads
    ``*.tmp`` files.
    """
    parent = os.path.dirname(path)
    if parent:
        g_pathmgr.mkdirs(parent)
    tmp = path + ".tmp"
    try:
        with g_pathmgr.open(tmp, mode) as f:
            write(f)
            if "://" not in path:
                f.flush()
                os.fsync(f.fileno())
        _replace(tmp, path)
    except BaseException:
        if g_pathmgr.exists(tmp):
            g_pathmgr.rm(tmp)
        raise


def save_checkpoint(
    path: str,
    model: nn.Module,
    optimizer: Optional[torch.optim.Optimizer] = None,
    scaler=None,
    epoch: int = 0,
    iteration: int = 0,
    cfg=None,
    class_names: Optional[Sequence[str]] = None,
    extra: Optional[Dict] = None,
) -> str:
    """Write an octvideo checkpoint to ``path`` (atomically) and return ``path``."""
    bare = unwrap_model(model)
    data: Dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "octvideo_version": __version__,
        "model_state": bare.state_dict(),
        "model_info": model_info(bare),
        "epoch": int(epoch),
        "iteration": int(iteration),
        "class_names": list(class_names) if class_names is not None else None,
        "cfg": cfg.dump() if cfg is not None else None,
        "extra": _plain(extra or {}),
    }
    if optimizer is not None:
        data["optimizer_state"] = optimizer.state_dict()
    if scaler is not None:
        data["scaler_state"] = scaler.state_dict()
    _write_atomic(lambda f: torch.save(data, f), path)
    return path


def checkpoint_dir(output_dir: str) -> str:
    return os.path.join(output_dir, CHECKPOINT_SUBDIR)


def save_run_checkpoint(output_dir: str, model: nn.Module, *, epoch: int, **kwargs) -> str:
    """``OUTPUT_DIR/checkpoints/checkpoint_epoch_<epoch>.pyth``, then point ``last_checkpoint`` at it.

    Keyword arguments are those of :func:`save_checkpoint`. Returns the path written.
    """
    folder = checkpoint_dir(output_dir)
    name = f"checkpoint_epoch_{int(epoch):05d}.pyth"
    path = save_checkpoint(os.path.join(folder, name), model, epoch=epoch, **kwargs)
    # The pointer is written after the checkpoint is complete, and atomically itself.
    _write_atomic(lambda f: f.write(name + "\n"), os.path.join(folder, LAST_CHECKPOINT_FILE), mode="w")
    return path


def list_checkpoints(output_dir: str) -> List[str]:
    """Complete run checkpoints in ``OUTPUT_DIR/checkpoints``, oldest epoch first."""
    folder = checkpoint_dir(output_dir)
    if not g_pathmgr.isdir(folder):
        return []
    found = []
    for name in g_pathmgr.ls(folder):
        m = _EPOCH_FILE.match(name)
        if m:
            found.append((int(m.group(1)), os.path.join(folder, name)))
    return [p for _, p in sorted(found)]


def find_last_checkpoint(output_dir: str) -> Optional[str]:
    """The checkpoint a rerun resumes from: the one ``last_checkpoint`` names, else the newest epoch file.

    Returns None when the run folder has no complete checkpoint. Temporary files of an interrupted
    write are never returned.
    """
    folder = checkpoint_dir(output_dir)
    pointer = os.path.join(folder, LAST_CHECKPOINT_FILE)
    if g_pathmgr.isfile(pointer):
        with g_pathmgr.open(pointer, "r") as f:
            name = f.read().strip()
        path = os.path.join(folder, name)
        if name and g_pathmgr.isfile(path):
            return path
        logger.warning(f"{pointer} names {name!r}, which does not exist; using the newest checkpoint file instead")
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def read_checkpoint(path: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with errors that name the file.

    Raises FileNotFoundError when ``path`` does not exist and :class:`CheckpointError` when it is
    not a torch file or holds Python objects other than tensors and plain containers.
    """
    if not path:
        raise FileNotFoundError("no checkpoint path given (empty string)")
    if not g_pathmgr.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path!r}")
    local = g_pathmgr.get_local_path(path)  # the path itself for local files; a cached copy for URLs
    try:
        return torch.load(local, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        text = str(e)
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if refused:
            raise CheckpointError(
                f"{path}: refused to unpickle it with torch.load(weights_only=True): it holds Python objects "
                f"beyond tensors and plain containers ({refused.group(1)}). If you trust the file, re-save its "
                f"state_dict once: torch.save(torch.load(path, weights_only=False)['...'], new_path)."
            ) from None
        first_line = text.strip().splitlines()[0][:200] if text.strip() else ""
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: {first_line})") from None


def read_class_names(cfg) -> Optional[List[str]]:
    """The class names of ``CLASSNAMES_FILE`` (a JSON list of MODEL.NUM_CLASSES names), or None when unset."""
    if not cfg.CLASSNAMES_FILE:
        return None
    with g_pathmgr.open(cfg.CLASSNAMES_FILE, "r") as f:
        names = json.load(f)
    if not isinstance(names, list) or len(names) != cfg.MODEL.NUM_CLASSES:
        got = len(names) if isinstance(names, list) else type(names).__name__
        raise ValueError(
            f"CLASSNAMES_FILE {cfg.CLASSNAMES_FILE!r} must hold a JSON list of MODEL.NUM_CLASSES="
            f"{cfg.MODEL.NUM_CLASSES} names; got {got}"
        )
    return names
