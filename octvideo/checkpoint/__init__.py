"""Checkpoints: save / load / resume, 2D -> 3D inflation, converters of published checkpoints.

See docs/checkpoints.md. The modules, by role:

* io.py       -- the octvideo file format, atomic writes, ``last_checkpoint``, weights-only reading
* formats.py  -- published layouts (torchvision, octconv.pytorch, pytorchvideo) as key-rename tables
* inflate.py  -- octave re-splitting and temporal inflation (initialising a model of another shape)
* load.py     -- exact loading (resume / test / predict) and ``TRAIN.CHECKPOINT_FILE_PATH``
* pytorchvideo.py -- the logits check of a pytorchvideo conversion
"""
from .formats import FORMAT_NAMES, Checkpoint, convert_state_dict, open_checkpoint
from .inflate import INFLATE_METHODS, TransferReport, dense_state_dict, inflate_kernel, transfer_weights
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
    "checkpoint_dir", "convert_state_dict", "dense_state_dict", "find_last_checkpoint", "inflate_kernel",
    "initialise_from", "list_checkpoints", "load_checkpoint", "load_pretrained_for_training",
    "open_checkpoint", "read_checkpoint", "save_checkpoint", "save_run_checkpoint", "transfer_weights",
    "unwrap_model",
]
