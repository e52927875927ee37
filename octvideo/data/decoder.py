"""Frame-accurate video decoding with decord or PyAV.

One entry point, :func:`decode_frames`, opens a video ONCE and returns the frames at
the requested (sorted or unsorted, possibly repeated) indices::

    decode_frames(path, [0, 8, 8, 16], backend="pyav")
        -> frames uint8 [N=4, H, W, 3] (RGB), fps (float), num_frames (int)

Frame ``i`` is the ``i``-th frame in presentation order for both backends, so the same
indices give the same pictures from decord and PyAV (up to the colour conversion of
their two ffmpeg builds; see docs/data.md).

Indices past the end of a video are clamped to its last frame: a clip longer than the
video repeats its last frame instead of failing.

Every failure (missing, zero-byte, corrupt, audio-only, zero-frame file) raises
:class:`VideoDecodeError` whose message names the file, so the datasets can replace or
report the video.
"""
from __future__ import annotations

import bisect
import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np

__all__ = [
    "VideoDecodeError",
    "DecodedVideo",
    "decode_frames",
    "probe_video",
    "available_backends",
    "check_backend",
    "BACKENDS",
]

BACKENDS = ("decord", "pyav")


class VideoDecodeError(RuntimeError):
    """A video that cannot be used: missing, empty, corrupt, audio-only or zero frames."""

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass
class DecodedVideo:
    """Decoded frames and the stream facts needed for sampling.

    frames: uint8 array [N, H, W, 3] (RGB), one row per requested index, in request order.
    """

    frames: np.ndarray
    fps: float
    num_frames: int


def available_backends() -> List[str]:
    """The decoders importable in this environment (decord wheels are x86-64 Linux only)."""
    out = []
    for name, module in (("decord", "decord"), ("pyav", "av")):
        try:
            __import__(module)
            out.append(name)
        except ImportError:
            pass
    return out


def check_backend(backend: str) -> None:
    """Raise ValueError naming DATA.DECODER when ``backend`` is unknown or not installed."""
    if backend not in BACKENDS:
        raise ValueError(f"DATA.DECODER must be one of {list(BACKENDS)}; got {backend!r}")
    if backend not in available_backends():
        raise ValueError(
            f"DATA.DECODER {backend!r} is not installed here (decord wheels exist for x86-64 Linux only); "
            f"installed: {available_backends()}"
        )


def _check_file(path: str) -> None:
    # Checked up-front because both libraries report these cases with opaque messages.
    if not os.path.exists(path):
        raise VideoDecodeError(path, "file not found")
    if not os.path.isfile(path):
        raise VideoDecodeError(path, "not a regular file")
    if os.path.getsize(path) == 0:
        raise VideoDecodeError(path, "zero-byte file")


# Frame indices, or a function (num_frames, fps) -> indices for callers whose sampling
# depends on the video's length and rate: the file is still opened only once.
Indices = Union[Sequence[int], Callable[[int, float], Sequence[int]]]


def _clamp_indices(indices: Indices, num_frames: int, fps: float, path: str) -> np.ndarray:
    if num_frames <= 0:
        raise VideoDecodeError(path, "video stream has zero frames")
    if callable(indices):
        indices = indices(num_frames, fps)
    idx = np.asarray(list(indices), dtype=np.int64)
    if idx.size == 0:
        raise ValueError(f"{path}: no frame indices requested")
    # Short videos repeat their last frame rather than failing (issue 4, section 2).
    return np.clip(idx, 0, num_frames - 1)


# --------------------------------------------------------------------------- #
# decord
# --------------------------------------------------------------------------- #
def _decode_decord(path: str, indices: Indices, num_threads: int) -> DecodedVideo:
    import decord

    try:
        # num_threads=1: decord's default (0) starts one thread per core in EVERY
        # DataLoader worker, which oversubscribes the CPU.
        vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=num_threads)
    except Exception as e:  # decord raises DECORDError / RuntimeError with C++ traces
        raise VideoDecodeError(path, f"decord cannot open the file ({_short(e)})") from None
    try:
        try:
            num_frames = len(vr)
            fps = float(vr.get_avg_fps() or 0.0)
        except Exception as e:
            raise VideoDecodeError(path, f"decord cannot read the stream ({_short(e)})") from None
        # Outside the decoder's try: a bug in an index function must not pass as a bad video.
        idx = _clamp_indices(indices, num_frames, fps, path)
        # Decode each distinct frame once, in increasing order (decord seeks forward).
        unique, inverse = np.unique(idx, return_inverse=True)
        try:
            batch = vr.get_batch(unique.tolist()).asnumpy()
        except Exception as e:
            raise VideoDecodeError(path, f"decord failed to decode ({_short(e)})") from None
    finally:
        del vr
    frames = batch[inverse.reshape(-1)]
    return DecodedVideo(frames=_check_frames(frames, path, len(idx)), fps=fps, num_frames=num_frames)


# --------------------------------------------------------------------------- #
# PyAV
# --------------------------------------------------------------------------- #
def _packet_index(container, stream) -> tuple:
    """Presentation timestamps of all video frames (sorted) and of the key frames.

    Only demuxes (no decoding): cheap, and it makes frame ``i`` = ``i``-th smallest pts,
    the same numbering decord uses.
    """
    pts, key_pts = [], []
    for packet in container.demux(stream):
        if packet.pts is None or packet.size == 0:  # flush packet / no timestamp
            continue
        pts.append(packet.pts)
        if packet.is_keyframe:
            key_pts.append(packet.pts)
    pts.sort()
    key_pts.sort()
    return pts, key_pts


def _decode_pyav(path: str, indices: Indices, num_threads: int) -> DecodedVideo:
    import av

    try:
        container = av.open(path)
    except Exception as e:
        raise VideoDecodeError(path, f"PyAV cannot open the file ({_short(e)})") from None
    try:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["no streams"]
            raise VideoDecodeError(path, f"no video stream (streams: {', '.join(kinds)})")
        stream = container.streams.video[0]
        # One decoding thread per DataLoader worker (see _decode_decord).
        stream.thread_type = "SLICE" if num_threads == 1 else "AUTO"
        stream.codec_context.thread_count = num_threads
        fps = float(stream.average_rate or stream.guessed_rate or 0.0)
        try:
            pts, key_pts = _packet_index(container, stream)
        except Exception as e:
            raise VideoDecodeError(path, f"PyAV cannot read the stream ({_short(e)})") from None
        # Outside the decoder's try: a bug in an index function must not pass as a bad video.
        idx = _clamp_indices(indices, len(pts), fps, path)
        try:
            frames_by_index = _decode_pyav_at(container, stream, pts, key_pts, np.unique(idx))
        except Exception as e:
            raise VideoDecodeError(path, f"PyAV failed to decode ({_short(e)})") from None
    finally:
        container.close()
    missing = [int(i) for i in np.unique(idx) if int(i) not in frames_by_index]
    if missing:
        raise VideoDecodeError(path, f"frames {missing[:5]} could not be decoded (truncated or corrupt file)")
    shapes = {frames_by_index[int(i)].shape for i in idx}
    if len(shapes) > 1:
        # A mid-stream resolution change: clips must have one size, and np.stack would
        # fail with an error that does not name the file.
        raise VideoDecodeError(path, f"frame size changes inside the video ({sorted(shapes)})")
    frames = np.stack([frames_by_index[int(i)] for i in idx])
    return DecodedVideo(frames=_check_frames(frames, path, len(idx)), fps=fps, num_frames=len(pts))


def _decode_pyav_at(container, stream, pts: List[int], key_pts: List[int], wanted: np.ndarray) -> Dict[int, np.ndarray]:
    """Decode the frames ``wanted`` (sorted unique indices) -> {index: uint8 [H, W, 3]}.

    Seeks to the key frame before a wanted frame only when that skips work; otherwise
    keeps decoding forward, so the clips of one video share one pass. Frames the decoder
    never produces (corrupt data) are simply absent from the result.
    """
    pts_to_index = {p: i for i, p in enumerate(pts)}
    out: Dict[int, np.ndarray] = {}
    todo = [int(i) for i in wanted]
    pos = 0
    decoder = None
    last_pts: Optional[int] = None  # pts of the last frame the running decoder produced
    while pos < len(todo):
        target = pts[todo[pos]]
        stale = decoder is None or last_pts is None or target <= last_pts
        if stale or _key_between(key_pts, last_pts, target):
            key = key_pts[max(bisect.bisect_right(key_pts, target) - 1, 0)] if key_pts else pts[0]
            container.seek(int(key), stream=stream, backward=True, any_frame=False)
            decoder = container.decode(stream)
            last_pts = None
        exhausted = True
        for frame in decoder:
            if frame.pts is None:
                continue
            last_pts = frame.pts
            i = pts_to_index.get(frame.pts)
            if i is None:
                continue
            while pos < len(todo) and todo[pos] < i:
                pos += 1  # the decoder skipped this wanted frame: leave it missing
            if pos < len(todo) and todo[pos] == i:
                # Only wanted frames pay for the colour conversion.
                out[i] = frame.to_ndarray(format="rgb24")
                pos += 1
            if pos == len(todo) or _key_between(key_pts, last_pts, pts[todo[pos]]):
                exhausted = False
                break  # done, or a key frame lets us seek past frames we do not need
        if exhausted:
            break
    return out


def _key_between(key_pts: List[int], lo: int, hi: int) -> bool:
    """Is there a key frame with lo < pts <= hi?"""
    j = bisect.bisect_right(key_pts, lo)
    return j < len(key_pts) and key_pts[j] <= hi


# --------------------------------------------------------------------------- #
# Public API
# --------------------------------------------------------------------------- #
_DECODERS: Dict[str, Callable[[str, Indices, int], DecodedVideo]] = {
    "decord": _decode_decord,
    "pyav": _decode_pyav,
}


def decode_frames(path: str, indices: Indices, *, backend: str = "decord", num_threads: int = 1) -> DecodedVideo:
    """Open ``path`` once and decode the frames at ``indices`` (clamped to the video).

    ``indices`` may be a function ``(num_frames, fps) -> indices``, called once the
    stream is open, so length-dependent sampling needs no second open.

    Returns a :class:`DecodedVideo` with ``frames`` uint8 [len(indices), H, W, 3] (RGB).
    Raises :class:`VideoDecodeError` for any unusable file, ``ValueError`` for an unknown
    backend.
    """
    if backend not in _DECODERS:
        raise ValueError(f"DATA.DECODER must be one of {list(BACKENDS)}; got {backend!r}")
    _check_file(path)
    return _DECODERS[backend](path, indices, num_threads)


def probe_video(path: str, *, backend: str = "decord") -> DecodedVideo:
    """Decode only frame 0: checks a file is usable and returns its fps / frame count."""
    return decode_frames(path, [0], backend=backend)


def _check_frames(frames: np.ndarray, path: str, expected: int) -> np.ndarray:
    # Guard against "garbage" returns (wrong rank, empty pictures) before they reach a model.
    if frames.ndim != 4 or frames.shape[0] != expected or frames.shape[-1] != 3:
        raise VideoDecodeError(path, f"decoder returned an array of shape {tuple(frames.shape)}")
    if frames.shape[1] == 0 or frames.shape[2] == 0:
        raise VideoDecodeError(path, f"decoded frames are empty ({frames.shape[2]}x{frames.shape[1]})")
    return np.ascontiguousarray(frames)


def _short(e: BaseException, limit: int = 200) -> str:
    msg = str(e).strip().splitlines()
    text = msg[0] if msg else type(e).__name__
    return text[:limit]
