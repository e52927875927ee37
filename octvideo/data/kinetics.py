"""Kinetics-400/600 dataset: train / val clips and decode-once multi-view test items.

Items (before collation)::

    train / val   {"inputs": float32 [C, T, S, S], "labels": int, "indices": int}
                  S = DATA.TRAIN_CROP_SIZE
    test          {"frames": uint8 [V, T, 3, S, S], "labels": int, "indices": int,
                   "failed": None}
                  V = TEST.NUM_ENSEMBLE_VIEWS * TEST.NUM_SPATIAL_CROPS, view v = clip
                  (v // crops) at crop (v % crops); S = DATA.TEST_CROP_SIZE
                  or, for an unusable video,
                  {"frames": None, "labels": int, "indices": int,
                   "failed": {"index": int, "path": str, "error": str}}

A test item keeps its views as uint8 pixels, and so does the test batch
(loader.TestCollate stacks them into "frames" [B, V, T, 3, S, S] and drops the failed
items); the evaluator normalises each chunk of views on the device. At Kinetics sizes one
video's 30 views are ~47 MB of uint8 against ~190 MB of float32: 4x less to move between
DataLoader workers and the main process, and to the GPU.
:meth:`KineticsDataset.load_views` gives the normalised float views of one video directly.

Randomness of a training item comes from a generator seeded by
(RNG_SEED, epoch, index, draw): the same seed and epoch give the same clips and crops
whatever the number of workers or the order of the samples.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

try:  # POSIX: serialises appends to bad_videos.txt across workers and ranks
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

from . import annotations as ann_mod
from .decoder import VideoDecodeError, check_backend, decode_frames
from .sampling import centre_clip_start, clip_indices, clip_starts_uniform, frame_step, random_clip_start
from .transforms import (
    centre_crop,
    normalise,
    random_crop,
    resize_short_side,
    spatial_crop_offsets,
    to_tensor_frames,
)

__all__ = ["ClipConfig", "KineticsDataset", "build_dataset", "is_main_process"]

logger = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


def is_main_process() -> bool:
    """True when torch.distributed is not initialised or this is rank 0."""
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


@dataclass(frozen=True)
class ClipConfig:
    """Everything a dataset item needs from the config (picklable, no CfgNode in workers)."""

    decoder: str = "decord"
    num_frames: int = 8
    sampling_rate: int = 8
    target_fps: float = 30.0
    jitter_scales: Tuple[int, int] = (256, 320)
    train_crop_size: int = 224
    test_crop_size: int = 256
    mean: Tuple[float, float, float] = (0.45, 0.45, 0.45)
    std: Tuple[float, float, float] = (0.225, 0.225, 0.225)
    random_flip: bool = True
    num_ensemble_views: int = 10
    num_spatial_crops: int = 3
    num_retries: int = 10
    seed: int = 0
    decoder_threads: int = 1

    @classmethod
    def from_cfg(cls, cfg) -> "ClipConfig":
        return cls(
            decoder=cfg.DATA.DECODER,
            num_frames=int(cfg.DATA.NUM_FRAMES),
            sampling_rate=int(cfg.DATA.SAMPLING_RATE),
            target_fps=float(cfg.DATA.TARGET_FPS),
            jitter_scales=tuple(int(s) for s in cfg.DATA.TRAIN_JITTER_SCALES),
            train_crop_size=int(cfg.DATA.TRAIN_CROP_SIZE),
            test_crop_size=int(cfg.DATA.TEST_CROP_SIZE),
            mean=tuple(float(m) for m in cfg.DATA.MEAN),
            std=tuple(float(s) for s in cfg.DATA.STD),
            random_flip=bool(cfg.DATA.RANDOM_FLIP),
            num_ensemble_views=int(cfg.TEST.NUM_ENSEMBLE_VIEWS),
            num_spatial_crops=int(cfg.TEST.NUM_SPATIAL_CROPS),
            num_retries=int(cfg.DATA.NUM_RETRIES),
            seed=int(cfg.RNG_SEED),
            decoder_threads=int(cfg.DATA_LOADER.DECODER_THREADS),
        )

    def check(self) -> None:
        """Raise ValueError naming the config key of an inconsistent value."""
        lo, hi = self.jitter_scales if len(self.jitter_scales) == 2 else (None, None)
        if lo is None or lo > hi:
            raise ValueError(f"DATA.TRAIN_JITTER_SCALES must be [min, max]; got {list(self.jitter_scales)}")
        if lo < self.train_crop_size:
            raise ValueError(
                f"DATA.TRAIN_JITTER_SCALES min {lo} is smaller than DATA.TRAIN_CROP_SIZE {self.train_crop_size}"
            )
        if self.num_frames < 1 or self.sampling_rate < 1 or self.target_fps <= 0:
            raise ValueError(
                "DATA.NUM_FRAMES and DATA.SAMPLING_RATE must be >= 1 and DATA.TARGET_FPS > 0; got "
                f"{self.num_frames}, {self.sampling_rate}, {self.target_fps}"
            )
        if self.num_spatial_crops not in (1, 3):
            raise ValueError(f"TEST.NUM_SPATIAL_CROPS must be 1 or 3; got {self.num_spatial_crops}")
        if self.num_ensemble_views < 1:
            raise ValueError(f"TEST.NUM_ENSEMBLE_VIEWS must be >= 1; got {self.num_ensemble_views}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"DATA.MEAN and DATA.STD need 3 values (RGB); got {self.mean}, {self.std}")
        # Inputs are uint8 frames: finite MEAN and positive STD keep every value finite.
        if not all(np.isfinite(m) for m in self.mean) or not all(np.isfinite(s) and s > 0 for s in self.std):
            raise ValueError(f"DATA.MEAN must be finite and DATA.STD positive; got {list(self.mean)}, {list(self.std)}")
        if self.decoder_threads < 1:
            raise ValueError(f"DATA_LOADER.DECODER_THREADS must be >= 1; got {self.decoder_threads}")
        check_backend(self.decoder)

    @property
    def num_views(self) -> int:
        return self.num_ensemble_views * self.num_spatial_crops


class BadVideoLog:
    """Reports each unusable video once and appends it to ``bad_videos.txt``.

    Every DataLoader worker (and every rank) holds its own copy of this object, and
    workers are re-created each epoch, so "once" is decided by the file itself: under an
    exclusive lock, a video already listed there is neither logged nor written again.
    Without a file, each process reports a video once.
    """

    def __init__(self, path: Optional[str]):
        self.path = path
        self.seen: Set[str] = set()

    def report(self, video: str, error: str) -> None:
        if video in self.seen:
            return
        self.seen.add(video)
        if self.path:
            try:
                if not self._append_if_new(video, error):
                    return  # listed by another worker, rank or epoch: already reported
            except OSError as e:  # a read-only OUTPUT_DIR must not stop training
                logger.warning("cannot write %s: %s", self.path, e)
        logger.warning("unusable video %s: %s (skipped; listed in %s)", video, error, self.path or "no file")

    def _append_if_new(self, video: str, error: str) -> bool:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        with open(self.path, "a+", encoding="utf-8") as f:
            _lock(f)
            try:
                f.seek(0)
                listed = {ln.split("\t", 1)[0] for ln in f.read().splitlines()}
                if video in listed:
                    return False
                f.write(f"{video}\t{error}\n")
                f.flush()
                return True
            finally:
                _unlock(f)


def _lock(f) -> None:
    if fcntl is not None:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)


def _unlock(f) -> None:
    if fcntl is not None:
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)


class KineticsDataset(Dataset):
    """Video clips with labels; see the module docstring for the items of each split."""

    def __init__(
        self,
        *,
        paths: Sequence[str],
        labels: Sequence[int],
        class_names: Sequence[str],
        split: str,
        clip: ClipConfig,
        bad_video_file: Optional[str] = None,
        missing_paths: Sequence[str] = (),
        annotation_file: str = "",
    ):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        clip.check()
        self.paths = list(paths)
        self.labels = [int(x) for x in labels]
        self.class_names = list(class_names)
        self.split = split
        self.clip = clip
        self.missing_paths = list(missing_paths)
        self.annotation_file = annotation_file
        self.epoch = 0
        self.bad_videos = BadVideoLog(bad_video_file)

    # ------------------------------------------------------------------ basics
    @property
    def num_videos(self) -> int:
        return len(self.paths)

    @property
    def num_missing(self) -> int:
        return len(self.missing_paths)

    def __len__(self) -> int:
        return len(self.paths)

    def set_epoch(self, epoch: int) -> None:
        """Select the per-epoch randomness (call before iterating; workers copy the dataset)."""
        self.epoch = int(epoch)

    def _rng(self, index: int, draw: int) -> np.random.Generator:
        return np.random.default_rng([self.clip.seed, self.epoch, index, draw])

    def __getitem__(self, index: int) -> Dict:
        if self.split == "test":
            return self.get_test_item(index)
        return self._get_clip_with_retries(index)

    # ------------------------------------------------------------------ train / val
    def _get_clip_with_retries(self, index: int) -> Dict:
        """A clip of ``index``; an unusable video is replaced by another (bounded retries).

        Substitutes come from a fixed random sequence per (seed, epoch, index): the first
        usable video in it is returned, so the result does not depend on which worker
        already knows which videos are bad. Known-bad videos are skipped without decoding
        and do not use up DATA.NUM_RETRIES; at most NUM_RETRIES + 1 videos are decoded.
        """
        tried: List[str] = []
        current = index
        max_draws = 20 * (self.clip.num_retries + 1)  # bounds the skipping of known-bad videos
        for draw in range(max_draws):
            path = self.paths[current]
            if path not in self.bad_videos.seen:
                try:
                    inputs = self.load_clip(path, rng=self._rng(index, draw), train=self.split == "train")
                    return {"inputs": inputs, "labels": self.labels[current], "indices": current}
                except VideoDecodeError as e:
                    self.bad_videos.report(path, e.reason)
                tried.append(path)
                if len(tried) > self.clip.num_retries:
                    break
            if len(self.paths) == 1:
                break
            current = int(self._rng(index, draw + 1_000_003).integers(0, len(self.paths)))
        raise RuntimeError(
            f"no usable video after decoding {len(tried)} (DATA.NUM_RETRIES={self.clip.num_retries}) "
            f"starting from index {index}: {tried[:5]}{' ...' if len(tried) > 5 else ''}; see the warnings "
            f"and {self.bad_videos.path or 'the log'}"
        )

    def load_clip(self, path: str, *, rng: np.random.Generator, train: bool) -> torch.Tensor:
        """Decode one clip of ``path`` -> float32 [C, T, S, S] (S = DATA.TRAIN_CROP_SIZE).

        train: random start, random short side in TRAIN_JITTER_SCALES, random crop, flip.
        val:   centre start, short side TRAIN_JITTER_SCALES[0], centre crop.
        """
        c = self.clip

        def indices(num_video_frames: int, fps: float) -> List[int]:
            step = frame_step(sampling_rate=c.sampling_rate, video_fps=fps, target_fps=c.target_fps)
            kw = dict(num_video_frames=num_video_frames, num_frames=c.num_frames, step=step)
            start = random_clip_start(rng=rng, **kw) if train else centre_clip_start(**kw)
            return clip_indices(start=start, num_frames=c.num_frames, step=step)

        video = decode_frames(path, indices, backend=c.decoder, num_threads=c.decoder_threads)
        frames = to_tensor_frames(video.frames)  # uint8 [T, 3, H, W]
        if train:
            scale = int(rng.integers(c.jitter_scales[0], c.jitter_scales[1] + 1))
            frames = random_crop(resize_short_side(frames, size=scale), size=c.train_crop_size, rng=rng)
            if c.random_flip and rng.random() < 0.5:
                frames = frames.flip(-1)
        else:
            frames = centre_crop(resize_short_side(frames, size=c.jitter_scales[0]), size=c.train_crop_size)
        return normalise(frames, mean=c.mean, std=c.std)

    # ------------------------------------------------------------------ test
    def get_test_item(self, index: int) -> Dict:
        """All views of one video, decoded once; failures are returned, never raised."""
        path = self.paths[index]
        item = {"labels": self.labels[index], "indices": index}
        try:
            item["frames"] = self.load_view_frames(path)
            item["failed"] = None
        except VideoDecodeError as e:
            self.bad_videos.report(path, e.reason)
            item["frames"] = None
            item["failed"] = {"index": index, "path": path, "error": e.reason}
        return item

    def load_views(self, path: str) -> torch.Tensor:
        """Decode ``path`` ONCE -> float32 [V, C, T, S, S], V = clips x crops, S = TEST_CROP_SIZE."""
        return normalise(self.load_view_frames(path), mean=self.clip.mean, std=self.clip.std)

    def load_view_frames(self, path: str) -> torch.Tensor:
        """Decode ``path`` ONCE -> uint8 [V, T, 3, S, S], the pixels of all its views.

        The union of the clips' frames is decoded and resized once; clips are gathered
        from it and the 1 or 3 crops are slices of the same resized frames.
        """
        c = self.clip
        plan: Dict[str, np.ndarray] = {}

        def indices(num_video_frames: int, fps: float) -> List[int]:
            step = frame_step(sampling_rate=c.sampling_rate, video_fps=fps, target_fps=c.target_fps)
            starts = clip_starts_uniform(
                num_video_frames=num_video_frames, num_frames=c.num_frames, step=step, num_clips=c.num_ensemble_views
            )
            clips = np.array([clip_indices(start=s, num_frames=c.num_frames, step=step) for s in starts])
            clips = np.clip(clips, 0, num_video_frames - 1)  # [clips, T]
            unique, inverse = np.unique(clips, return_inverse=True)
            plan["inverse"] = inverse.reshape(clips.shape)
            return unique.tolist()

        video = decode_frames(path, indices, backend=c.decoder, num_threads=c.decoder_threads)
        frames = resize_short_side(to_tensor_frames(video.frames), size=c.test_crop_size)  # [U, 3, h, w]
        clips = frames[torch.from_numpy(plan["inverse"])]  # [clips, T, 3, h, w]
        offsets = spatial_crop_offsets(
            height=frames.shape[-2], width=frames.shape[-1], size=c.test_crop_size, num_crops=c.num_spatial_crops
        )
        s = c.test_crop_size
        views = torch.stack([clips[:, :, :, t : t + s, l : l + s] for t, l in offsets], dim=1)
        return views.flatten(0, 1)  # [clips * crops, T, 3, s, s], clip-major


# --------------------------------------------------------------------------- #
# Building from a config
# --------------------------------------------------------------------------- #
def _main_print(msg: str) -> None:
    if is_main_process():
        print(msg, flush=True)


def _class_names(cfg, split: str, ann: ann_mod.Annotation) -> List[str]:
    """CLASSNAMES_FILE, else the sorted names of the train annotations, else OUTPUT_DIR's file.

    Integer labels without a names file give names "0" .. "NUM_CLASSES-1".
    """
    if cfg.CLASSNAMES_FILE:
        return ann_mod.read_classnames(cfg.CLASSNAMES_FILE)
    raw = ann.raw_labels
    if split != "train":
        try:
            train_file = ann_mod.find_annotation_file(cfg.DATA.PATH_TO_DATA_DIR, "train")
        except FileNotFoundError:
            saved = os.path.join(cfg.OUTPUT_DIR, "classnames.json") if cfg.OUTPUT_DIR else ""
            if saved and os.path.isfile(saved):
                return ann_mod.read_classnames(saved)
            raise FileNotFoundError(
                f"cannot name the classes of split {split!r}: no train annotations in "
                f"{cfg.DATA.PATH_TO_DATA_DIR!r}, no CLASSNAMES_FILE and no {saved or 'OUTPUT_DIR/classnames.json'}"
            ) from None
        raw = ann_mod.read_label_column(train_file)
    names = ann_mod.class_names_from_labels(raw)
    if names is None:
        return [str(i) for i in range(int(cfg.MODEL.NUM_CLASSES))]
    return names


def build_dataset(cfg, split: str) -> KineticsDataset:
    """The Kinetics dataset of ``split`` ("train", "val" or "test") described by ``cfg``.

    Prints found / missing counts, writes OUTPUT_DIR/classnames.json and
    OUTPUT_DIR/missing_<split>.txt (rank 0 only).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
    if cfg.DATA.DATASET != "kinetics":
        raise ValueError(f"DATA.DATASET {cfg.DATA.DATASET!r} is not supported by octvideo.data (use 'kinetics')")
    data_dir = cfg.DATA.PATH_TO_DATA_DIR
    file = ann_mod.find_annotation_file(data_dir, split)
    video_root = cfg.DATA.PATH_PREFIX or data_dir
    ann = ann_mod.read_annotations(file, split=split, video_root=video_root)
    class_names = _class_names(cfg, split, ann)
    if len(class_names) > int(cfg.MODEL.NUM_CLASSES):
        raise ValueError(
            f"{len(class_names)} classes in the annotations ({file}) but MODEL.NUM_CLASSES is {cfg.MODEL.NUM_CLASSES}"
        )
    labels = ann_mod.resolve_labels(ann.raw_labels, class_names=class_names, file=file)
    if split != "test" and any(lab < 0 for lab in labels):
        raise ValueError(f"{file}: split {split!r} has rows without a label")

    found = [i for i, ok in enumerate(ann.found) if ok]
    missing = [ann.paths[i] for i, ok in enumerate(ann.found) if not ok]
    _main_print(f"[octvideo.data] {split}: {len(found)} videos found, {len(missing)} missing ({file})")
    if is_main_process() and cfg.OUTPUT_DIR:
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        ann_mod.write_classnames(cfg.OUTPUT_DIR, class_names)
        with open(os.path.join(cfg.OUTPUT_DIR, f"missing_{split}.txt"), "w", encoding="utf-8") as f:
            f.writelines(p + "\n" for p in missing)
    if not found:
        raise FileNotFoundError(
            f"none of the {len(ann.paths)} videos of {file} were found under {video_root!r} "
            f"(first looked for: {ann.paths[0]!r}); set DATA.PATH_PREFIX to the video folder"
        )
    return KineticsDataset(
        paths=[ann.paths[i] for i in found],
        labels=[labels[i] for i in found],
        class_names=class_names,
        split=split,
        clip=ClipConfig.from_cfg(cfg),
        bad_video_file=os.path.join(cfg.OUTPUT_DIR, "bad_videos.txt") if cfg.OUTPUT_DIR else None,
        missing_paths=missing,
        annotation_file=file,
    )
