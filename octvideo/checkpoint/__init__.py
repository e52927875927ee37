"""Checkpoints: save / load / resume, 2D -> 3D inflation, converters of published checkpoints.

See docs/checkpoints.md. The modules, by role:

* io.py        -- the octvideo file format, atomic writes, ``last_checkpoint``, weights-only reading
* formats.py   -- published layouts (torchvision, octconv-pytorch, pytorchvideo, pyslowfast) as
                  key-rename tables
* inflation.py -- :func:`inflate` (2D -> 3D) and the rule for initialising a model from a checkpoint
* load.py      -- exact loading (resume / test / predict) and ``TRAIN.CHECKPOINT_FILE_PATH``
* convert.py   -- published checkpoint -> octvideo file (tools/convert_checkpoint.py)
* pytorchvideo.py -- the logits check of a pytorchvideo conversion
"""
from .formats import FORMAT_NAMES, Checkpoint, convert_state_dict, open_checkpoint
from .inflation import INFLATE_METHODS, TransferReport, inflate, inflate_kernel, transfer_state
from .io import (
    CheckpointError,
    checkpoint_dir,
    find_last_checkpoint,
    list_checkpoints,
    read_checkpoint,
    save_checkpoint,
    save_run_checkpoint,
    unwrap_model,
)
from .load import initialise_from, load_checkpoint, load_pretrained_for_training

__all__ = [
    "Checkpoint", "CheckpointError", "FORMAT_NAMES", "INFLATE_METHODS", "TransferReport",
    "checkpoint_dir", "convert_state_dict", "find_last_checkpoint", "inflate", "inflate_kernel",
    "initialise_from", "list_checkpoints", "load_checkpoint", "load_pretrained_for_training",
    "open_checkpoint", "read_checkpoint", "save_checkpoint", "save_run_checkpoint", "transfer_state",
    "unwrap_model",
]
