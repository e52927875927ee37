"""DataLoaders for training, validation and the multi-view test.

Batches::

    train / val  {"inputs": float32 [B, C, T, S, S], "labels": int64 [B], "indices": int64 [B]}
    test         {"frames": uint8 [B, V, T, 3, S, S], "labels": int64 [B], "indices": int64 [B],
                  "failed": [{"index": int, "path": str, "error": str}, ...]}

Test views stay uint8 until the evaluator normalises them on the device (see TestCollate).

In the test batch, failed videos are removed from the tensors (B may be 0) and listed in
"failed", so metrics count them instead of scoring an empty tensor.

Determinism: call :func:`set_epoch` before each epoch. The order comes from the sampler
seeded with RNG_SEED + epoch, the clips/crops from the dataset's (seed, epoch, index)
generators, so a resumed run sees exactly the batches of an uninterrupted one.
"""
from __future__ import annotations

import random
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, default_collate

from .kinetics import build_dataset

__all__ = ["build_loader", "set_epoch", "EpochSampler", "collate_clips", "TestCollate", "worker_init_fn"]


class EpochSampler(Sampler[int]):
    """Single-process sampler: a permutation seeded by ``seed + epoch`` (or 0..n-1).

    Same contract as DistributedSampler with one replica, so set_epoch works the same
    with and without torch.distributed.
    """

    def __init__(self, num_samples: int, *, shuffle: bool, seed: int = 0):
        self.num_samples = int(num_samples)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.num_samples))
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.num_samples, generator=g).tolist())

    def __len__(self) -> int:
        return self.num_samples


def worker_init_fn(worker_id: int) -> None:
    """Seed Python / NumPy in a worker from torch's per-worker seed (itself from the loader's
    generator), so any library randomness in a worker is reproducible too."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def _stack(tensors: List[torch.Tensor]) -> torch.Tensor:
    # default_collate stacks straight into shared memory inside a worker; torch.stack would
    # build the batch in private memory and the loader would copy it again (a test batch
    # of 8 videos x 30 views is ~380 MB of uint8 at the Kinetics sizes).
    return default_collate(tensors)


def collate_clips(items: Sequence[Dict]) -> Dict[str, torch.Tensor]:
    """Train / val items -> {"inputs": [B, C, T, S, S], "labels": [B], "indices": [B]}."""
    return {
        "inputs": _stack([it["inputs"] for it in items]),
        "labels": torch.as_tensor([it["labels"] for it in items], dtype=torch.long),
        "indices": torch.as_tensor([it["indices"] for it in items], dtype=torch.long),
    }


class TestCollate:
    """Test items -> {"frames": uint8 [B, V, T, 3, S, S], "labels", "indices", "failed"}.

    The views stay uint8 pixels: normalised float views are 4x the bytes, and with
    DataLoader workers every batch crosses a process boundary through shared memory (a
    256x256 video's 30 views are ~47 MB of uint8 against ~190 MB of float32). The evaluator
    normalises each chunk of views after moving it to the device
    (:func:`octvideo.engine.evaluator.video_scores`; the same arithmetic as training's
    :func:`octvideo.data.transforms.normalise`). ``view_shape`` = (V, C, T, S, S) checks each
    item and gives the empty batch its shape when every video of the batch failed (B = 0),
    instead of returning None.
    """

    def __init__(self, view_shape: Tuple[int, int, int, int, int]):
        self.view_shape = tuple(int(x) for x in view_shape)

    def __call__(self, items: Sequence[Dict]) -> Dict:
        ok = [it for it in items if it.get("failed") is None]
        failed: List[Dict] = [it["failed"] for it in items if it.get("failed") is not None]
        v, c, t, h, w = self.view_shape
        for it in ok:
            frames = it["frames"]
            if tuple(frames.shape) != (v, t, c, h, w) or frames.dtype != torch.uint8:
                raise RuntimeError(
                    f"test item {it['indices']} has {frames.dtype} frames of shape {tuple(frames.shape)}, "
                    f"expected uint8 {(v, t, c, h, w)}"
                )
        frames = _stack([it["frames"] for it in ok]) if ok else torch.empty((0, v, t, c, h, w), dtype=torch.uint8)
        return {
            "frames": frames,
            "labels": torch.as_tensor([it["labels"] for it in ok], dtype=torch.long),
            "indices": torch.as_tensor([it["indices"] for it in ok], dtype=torch.long),
            "failed": failed,
        }


def _world() -> Tuple[int, int, bool]:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank(), True
    return 1, 0, False


def per_process_batch_size(cfg, split: str) -> int:
    """TRAIN.BATCH_SIZE (train/val) or TEST.BATCH_SIZE (test) divided by the world size."""
    world, _, _ = _world()
    key = "TEST.BATCH_SIZE" if split == "test" else "TRAIN.BATCH_SIZE"
    total = int(cfg.TEST.BATCH_SIZE if split == "test" else cfg.TRAIN.BATCH_SIZE)
    if total < 1 or total % world:
        raise ValueError(f"{key} {total} must be a positive multiple of the world size {world}")
    return total // world


def build_loader(cfg, split: str, dataset: Optional[Dataset] = None) -> DataLoader:
    """DataLoader of ``split`` ("train" shuffles and drops the last partial batch)."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test'; got {split!r}")
    dataset = dataset if dataset is not None else build_dataset(cfg, split)
    batch_size = per_process_batch_size(cfg, split)
    train = split == "train"
    world, rank, distributed = _world()
    seed = int(cfg.RNG_SEED)
    if distributed:
        sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=train, seed=seed, drop_last=train)
    else:
        sampler = EpochSampler(len(dataset), shuffle=train, seed=seed)
    # Dropping the last partial batch keeps BatchNorm statistics sane, but not when the
    # (tiny) dataset holds less than one batch: then the epoch would be empty.
    drop_last = train and len(sampler) >= batch_size
    if split == "test":
        clip = dataset.clip
        collate = TestCollate((clip.num_views, 3, clip.num_frames, clip.test_crop_size, clip.test_crop_size))
    else:
        collate = collate_clips
    workers = int(cfg.DATA_LOADER.NUM_WORKERS)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=bool(cfg.DATA_LOADER.PIN_MEMORY) and torch.cuda.is_available(),
        drop_last=drop_last,
        collate_fn=collate,
        worker_init_fn=worker_init_fn,
        generator=generator,
        # Workers are re-created each epoch on purpose: they copy the dataset, and with it
        # the epoch set by set_epoch.
        persistent_workers=False,
        prefetch_factor=2 if workers > 0 else None,
    )


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Select epoch ``epoch``: the sampler's order and the dataset's clip/crop randomness.

    Call before iterating the loader for that epoch.
    """
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    dataset = loader.dataset
    while dataset is not None:
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
            break
        dataset = getattr(dataset, "dataset", None)  # torch.utils.data.Subset and friends
    gen = getattr(loader, "generator", None)
    if gen is not None:
        # Worker base seeds come from this generator: reseed so they depend on the epoch only.
        gen.manual_seed(int(getattr(sampler, "seed", 0)) * 1_000_003 + int(epoch))
