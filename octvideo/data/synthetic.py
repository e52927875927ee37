"""A small synthetic action dataset: shapes whose class is their MOTION.

Every video shows one shape (disc, square or triangle; random size and colour) over a
random noisy background. The shape moves with constant velocity and wraps around the
frame edges, so its position is uniform in every frame whatever the class: a single
frame cannot tell the class, only the motion between frames can.

Classes (the first ``num_classes`` of; speed 2 px / frame, "fast" 4 px / frame)::

    up, down, sideways, still, up_fast, down_fast, sideways_fast, diagonal_up, diagonal_down

"sideways" and "diagonal" shapes move left OR right (drawn per video), so every class is
its own mirror image: the horizontal flip of training does not change the label.

Layout written under ``out_dir``::

    videos/{train,val,test}/<class>/<youtube_id>_000000_<end:06d>.mp4   (H.264, yuv420p)
    {train,val,test}.csv             PySlowFast style: "videos/<split>/<class>/<file> <class>"
    kinetics/{train,validate,test}.csv   official style (header label,youtube_id,...)
    classnames.json

Use it with DATA.PATH_TO_DATA_DIR out_dir (PySlowFast style), or
DATA.PATH_TO_DATA_DIR out_dir/kinetics DATA.PATH_PREFIX out_dir/videos (official style).
"""
from __future__ import annotations

import json
import os
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

__all__ = ["make_synthetic_dataset", "write_video", "write_unusable_videos", "class_motions", "RECOMMENDED_CFG"]

# name -> (dx, dy) in units of the speed; "sideways"/"diagonal" classes move left OR
# right at random, so every class is its own mirror image and DATA.RANDOM_FLIP may stay on.
_MOTIONS = {
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
    "sideways": (1.0, 0.0),
    "still": (0.0, 0.0),
    "up_fast": (0.0, -2.0),
    "down_fast": (0.0, 2.0),
    "sideways_fast": (2.0, 0.0),
    "diagonal_up": (0.7071, -0.7071),
    "diagonal_down": (0.7071, 0.7071),
}
MAX_CLASSES = len(_MOTIONS)

# DATA.* / TEST.* values that fit the default videos (80x64 px, 48 frames at 30 fps).
RECOMMENDED_CFG = {
    "DATA.NUM_FRAMES": 8,
    "DATA.SAMPLING_RATE": 2,
    "DATA.TARGET_FPS": 30,
    "DATA.TRAIN_JITTER_SCALES": [64, 80],
    "DATA.TRAIN_CROP_SIZE": 56,
    "DATA.TEST_CROP_SIZE": 64,
    "TEST.NUM_ENSEMBLE_VIEWS": 10,
    "TEST.NUM_SPATIAL_CROPS": 3,
}


def class_motions(num_classes: int, *, speed: float = 2.0) -> List[Tuple[str, Tuple[float, float]]]:
    """[(class name, (dx, dy) in px/frame)] for the first ``num_classes`` classes.

    A positive dx means "left or right, drawn per video" (mirror-symmetric classes).
    """
    if not 2 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must be in [2, {MAX_CLASSES}]; got {num_classes}")
    return [(name, (dx * speed, dy * speed)) for name, (dx, dy) in list(_MOTIONS.items())[:num_classes]]


def _shape_mask(kind: str, size: int) -> np.ndarray:
    """bool [size, size] mask of a disc, square or triangle."""
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    c = size / 2.0
    if kind == "disc":
        return (xx - c) ** 2 + (yy - c) ** 2 <= c * c
    if kind == "square":
        return np.ones((size, size), dtype=bool)
    return np.abs(xx - c) <= yy / 2.0  # triangle, apex at the top


def render_frames(
    *,
    rng: np.random.Generator,
    velocity: Tuple[float, float],
    width: int,
    height: int,
    num_frames: int,
    noise: float = 12.0,
) -> np.ndarray:
    """uint8 [num_frames, height, width, 3]: one shape moving by ``velocity`` px/frame, wrapped.

    ``noise``: std (grey levels) of Gaussian background noise drawn afresh for every frame:
    the moving shape must be told apart from changing texture, and the files get a bit
    rate closer to real videos (it matters for decoding benchmarks).
    """
    # A bright shape (a quarter to half the short side) on a dark background: the sign of the
    # temporal intensity change at the shape's edges then tells the direction of motion. With
    # arbitrary colours (dark-on-bright as often as bright-on-dark) and small shapes, a
    # depth-26 width-16 I3D stayed at chance on a few hundred videos; this way it learns the
    # task in a few epochs (what `make demo` needs). Colours still vary per video.
    short = min(width, height)
    size = int(rng.integers(max(4, short // 4), max(5, short // 2)))
    mask = _shape_mask(str(rng.choice(["disc", "square", "triangle"])), size)
    bg = rng.integers(0, 90, size=3)
    fg = rng.integers(170, 256, size=3)
    x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
    # Horizontal direction drawn per video: left and right belong to the same class.
    velocity = (velocity[0] * (1.0 if rng.random() < 0.5 else -1.0), velocity[1])
    ys, xs = np.nonzero(mask)
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for t in range(num_frames):
        frame = np.clip(bg[None, None, :] + rng.normal(0.0, noise, size=(height, width, 1)), 0, 255)
        x = int(round(x0 + velocity[0] * t))
        y = int(round(y0 + velocity[1] * t))
        frame[(ys + y) % height, (xs + x) % width] = fg
        frames[t] = frame.astype(np.uint8)
    return frames


def write_video(
    path: str,
    frames: np.ndarray,
    *,
    fps: int = 30,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    gop: Optional[int] = None,
    options: Optional[Dict[str, str]] = None,
) -> str:
    """Encode uint8 frames [N, H, W, 3] (RGB) or [N, H, W] (grey) to ``path`` with PyAV."""
    import av

    if frames.ndim == 3:
        frames = frames[..., None]
    n, h, w, c = frames.shape
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with av.open(path, mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        # One thread: x264's output depends on its thread count, which defaults to the core count.
        stream.codec_context.thread_count = 1
        if gop is not None:
            stream.codec_context.gop_size = gop
        # mbtree=0: x264's macroblock-tree rate control gave different bitstreams from run
        # to run on the same frames (one thread; not with its assembly disabled), and the
        # same seed must give the same videos.
        opts = {"preset": "veryfast", "crf": "23", "x264-params": "mbtree=0"} if codec == "libx264" else {}
        opts.update(options or {})
        stream.options = opts
        fmt = "gray" if c == 1 else "rgb24"
        for t in range(n):
            img = frames[t, :, :, 0] if c == 1 else frames[t]
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format=fmt)
            frame.pts = t
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def _write_tone(container, *, codec: str = "aac", rate: int = 16000) -> None:
    """Add an audio stream with 1 s of a 440 Hz tone to an open PyAV output container."""
    import av

    stream = container.add_stream(codec, rate=rate)
    t = np.arange(rate) / rate
    samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
    frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
    frame.sample_rate = rate
    for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


def write_unusable_videos(out_dir: str) -> Dict[str, str]:
    """Write one file of each kind no decoder can use; returns {kind: path}.

    Kinds: zero_byte, missing (the path only), truncated (an mp4 cut in half: its index
    was at the end), garbage (random bytes), audio_only, zero_frames (a Matroska file whose
    video track has no frames). For checking that a pipeline replaces or reports them.
    """
    import av

    os.makedirs(out_dir, exist_ok=True)
    kinds = ("zero_byte", "missing", "truncated", "garbage", "audio_only")
    paths = {k: os.path.join(out_dir, k + ".mp4") for k in kinds}
    open(paths["zero_byte"], "wb").close()
    if os.path.exists(paths["missing"]):
        os.remove(paths["missing"])
    frames = render_frames(rng=np.random.default_rng(0), velocity=(2.0, 0.0), width=64, height=48, num_frames=30)
    whole = os.path.join(out_dir, "_whole.mp4")
    write_video(whole, frames)
    with open(whole, "rb") as f:
        data = f.read()
    os.remove(whole)
    with open(paths["truncated"], "wb") as f:
        f.write(data[: len(data) // 2])
    with open(paths["garbage"], "wb") as f:
        f.write(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with av.open(paths["audio_only"], "w") as container:
        _write_tone(container)
    # mp4 drops a video track without frames; Matroska keeps it.
    paths["zero_frames"] = os.path.join(out_dir, "zero_frames.mkv")
    with av.open(paths["zero_frames"], "w") as container:
        video = container.add_stream("libx264", rate=30)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        _write_tone(container)
    return paths


def _youtube_id(rng: np.random.Generator) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return "".join(alphabet[i] for i in rng.integers(0, len(alphabet), size=11))


def _split_counts(videos_per_class: int, fractions: Tuple[float, float, float]) -> Dict[str, int]:
    n_val = max(1, int(round(videos_per_class * fractions[1])))
    n_test = max(1, int(round(videos_per_class * fractions[2])))
    n_train = videos_per_class - n_val - n_test
    if n_train < 1:
        raise ValueError(f"videos_per_class {videos_per_class} is too small for train/val/test splits (need >= 3)")
    return {"train": n_train, "val": n_val, "test": n_test}


def make_synthetic_dataset(
    out_dir: str,
    num_classes: int = 4,
    videos_per_class: int = 50,
    seed: int = 0,
    *,
    width: int = 80,
    height: int = 64,
    num_frames: int = 48,
    fps: int = 30,
    speed: float = 2.0,
    noise: float = 12.0,
    split_fractions: Tuple[float, float, float] = (0.7, 0.1, 0.2),
    progress: bool = False,
) -> Dict:
    """Write the dataset to ``out_dir`` (see the module docstring); deterministic for ``seed``.

    Returns {"out_dir", "video_root", "kinetics_dir", "class_names", "counts" {split: n},
    "num_videos", "paths" {split: [paths]}, "seconds"}.
    """
    if width % 2 or height % 2:
        raise ValueError(f"width and height must be even for yuv420p H.264; got {width}x{height}")
    if num_frames < 2:
        raise ValueError(f"num_frames must be >= 2 (motion needs two frames); got {num_frames}")
    t0 = time.time()
    motions = class_motions(num_classes, speed=speed)
    class_names = sorted(name for name, _ in motions)  # index = sorted name, as the loader does
    counts = _split_counts(videos_per_class, split_fractions)
    duration = int(np.ceil(num_frames / fps))
    rng = np.random.default_rng(seed)
    rows: Dict[str, List[Tuple[str, str, str]]] = {s: [] for s in counts}  # (rel path, class, youtube id)
    jobs = []
    for name, velocity in motions:
        for split, n in counts.items():
            for _ in range(n):
                yid = _youtube_id(rng)
                rel = f"videos/{split}/{name}/{yid}_{0:06d}_{duration:06d}.mp4"
                jobs.append((rel, name, yid, velocity, int(rng.integers(0, 2**31 - 1)), split))
    for rel, name, yid, velocity, vseed, split in _progress(jobs, progress):
        frames = render_frames(
            rng=np.random.default_rng(vseed),
            velocity=velocity,
            width=width,
            height=height,
            num_frames=num_frames,
            noise=noise,
        )
        write_video(os.path.join(out_dir, rel), frames, fps=fps)
        rows[split].append((rel, name, yid))
    _write_annotations(out_dir, rows, duration=duration)
    with open(os.path.join(out_dir, "classnames.json"), "w", encoding="utf-8") as f:
        json.dump(class_names, f, indent=1)
    return {
        "out_dir": out_dir,
        "video_root": os.path.join(out_dir, "videos"),
        "kinetics_dir": os.path.join(out_dir, "kinetics"),
        "class_names": class_names,
        "counts": {s: len(r) for s, r in rows.items()},
        "num_videos": len(jobs),
        "paths": {s: [os.path.join(out_dir, r[0]) for r in rs] for s, rs in rows.items()},
        "seconds": time.time() - t0,
    }


def _progress(jobs: List, enabled: bool):
    """A tqdm bar on a terminal, a line every ~10% otherwise (logs, CI), nothing if disabled."""
    import sys

    if not enabled:
        yield from jobs
        return
    if sys.stderr.isatty():
        from tqdm import tqdm

        yield from tqdm(jobs, desc="synthetic videos", unit="video")
        return
    every = max(1, len(jobs) // 10)
    for i, job in enumerate(jobs, 1):
        yield job
        if i % every == 0 or i == len(jobs):
            print(f"synthetic videos: {i}/{len(jobs)}", flush=True)


def _write_annotations(out_dir: str, rows: Dict[str, List[Tuple[str, str, str]]], *, duration: int) -> None:
    official = {"train": "train.csv", "val": "validate.csv", "test": "test.csv"}
    os.makedirs(os.path.join(out_dir, "kinetics"), exist_ok=True)
    for split, items in rows.items():
        with open(os.path.join(out_dir, f"{split}.csv"), "w", encoding="utf-8") as f:
            f.writelines(f"{rel} {name}\n" for rel, name, _ in items)
        with open(os.path.join(out_dir, "kinetics", official[split]), "w", encoding="utf-8") as f:
            f.write("label,youtube_id,time_start,time_end,split,is_cc\n")
            split_name = "validate" if split == "val" else split
            f.writelines(f"{name},{yid},0,{duration},{split_name},0\n" for _, name, yid in items)
