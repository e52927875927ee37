"""Temporal sampling: which frame indices make a clip.

A clip is ``num_frames`` frames ``sampling_rate`` frames apart *at* ``target_fps``. A video
at another frame rate is sampled by time: the step in its own frames is
``sampling_rate * video_fps / target_fps`` (a 60 fps video takes every 16th frame for
SAMPLING_RATE 8 at TARGET_FPS 30, so the clip covers the same 2.1 s)::

    video frames   0 ........................................ n-1
    clip           s   s+step   s+2*step  ...  s+(T-1)*step
                   |<----------- span = (T-1)*step ------->|
    start s in [0, max(n - 1 - span, 0)]

Indices past the end are clamped to ``n - 1`` by the decoder, so a video shorter than a
clip repeats its last frame.
"""
from __future__ import annotations

from typing import List

import numpy as np

__all__ = ["frame_step", "clip_indices", "clip_starts_uniform", "random_clip_start", "centre_clip_start"]


def frame_step(*, sampling_rate: int, video_fps: float, target_fps: float) -> float:
    """Distance in the video's own frames between two sampled frames."""
    if video_fps is None or not np.isfinite(video_fps) or video_fps <= 0:
        video_fps = target_fps  # unknown rate (some containers): assume the target rate
    return float(sampling_rate) * float(video_fps) / float(target_fps)


def _max_start(*, num_video_frames: int, num_frames: int, step: float) -> float:
    span = (num_frames - 1) * step
    return max(num_video_frames - 1 - span, 0.0)


def clip_indices(*, start: float, num_frames: int, step: float) -> List[int]:
    """Frame indices of one clip: round(start + k * step), k = 0..num_frames-1 (not clamped)."""
    return [int(np.floor(start + k * step + 0.5)) for k in range(num_frames)]


def random_clip_start(*, num_video_frames: int, num_frames: int, step: float, rng: np.random.Generator) -> float:
    """Training: a start drawn uniformly from every position where the clip fits."""
    return float(rng.uniform(0.0, _max_start(num_video_frames=num_video_frames, num_frames=num_frames, step=step)))


def centre_clip_start(*, num_video_frames: int, num_frames: int, step: float) -> float:
    """Validation: the clip in the middle of the video."""
    return _max_start(num_video_frames=num_video_frames, num_frames=num_frames, step=step) / 2.0


def clip_starts_uniform(*, num_video_frames: int, num_frames: int, step: float, num_clips: int) -> List[float]:
    """Test: ``num_clips`` starts spaced uniformly from the first to the last position.

    One clip is the centre clip; two or more include the very first and very last clip.
    """
    if num_clips < 1:
        raise ValueError(f"TEST.NUM_ENSEMBLE_VIEWS must be >= 1; got {num_clips}")
    top = _max_start(num_video_frames=num_video_frames, num_frames=num_frames, step=step)
    if num_clips == 1:
        return [top / 2.0]
    return [top * i / (num_clips - 1) for i in range(num_clips)]
