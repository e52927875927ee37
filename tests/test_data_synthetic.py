"""The synthetic motion dataset: real H.264 files, class = motion, both annotation styles,
deterministic for a seed, and its command-line tool."""
import json
import os
import subprocess
import sys

import av
import numpy as np
import pytest

from octvideo.config import get_cfg
from octvideo.data import build_dataset, decode_frames
from octvideo.data.synthetic import make_synthetic_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synthetic"))
    info = make_synthetic_dataset(root, num_classes=5, videos_per_class=3, seed=7, num_frames=16)
    return root, info


def _decoded(paths):
    return [decode_frames(p, list(range(16)), backend="pyav").frames for p in paths]


def test_videos_are_h264_mp4_files(dataset):
    _, info = dataset
    for path in info["paths"]["train"][:3]:
        with av.open(path) as c:
            assert "mp4" in c.format.name
            stream = c.streams.video[0]
            assert stream.codec_context.name == "h264"
            assert (stream.width, stream.height) == (80, 64)
            assert sum(1 for _ in c.decode(stream)) == 16


def _motion(frames, max_shift=5):
    """The (dx, dy) in px/frame that best maps each frame onto the next (the median)."""
    grey = frames.astype(np.float32).mean(axis=-1)
    shifts = range(-max_shift, max_shift + 1)
    found = []
    for t in range(0, len(grey) - 1, 2):
        errors = {(dx, dy): np.abs(np.roll(grey[t], (dy, dx), axis=(0, 1)) - grey[t + 1]).mean()
                  for dx in shifts for dy in shifts}
        found.append(min(errors, key=errors.get))
    return tuple(np.median(np.array(found), axis=0))


def test_the_class_is_the_motion_not_the_picture(dataset):
    root, info = dataset
    expected = {"up": (0, -2), "down": (0, 2), "still": (0, 0), "up_fast": (0, -4)}
    seen_lr = set()
    for path in info["paths"]["train"]:
        name = os.path.basename(os.path.dirname(path))
        dx, dy = _motion(_decoded([path])[0])
        if name == "sideways":  # left or right, drawn per video (flip-invariant class)
            assert (abs(dx), dy) == (2, 0), path
            seen_lr.add(np.sign(dx))
        else:
            assert (dx, dy) == expected[name], path
    # Same picture statistics in every class: where the shape starts is random.
    first = {}
    for path in info["paths"]["train"]:
        first.setdefault(os.path.basename(os.path.dirname(path)), []).append(_decoded([path])[0][0])
    assert all(len({f.tobytes() for f in frames}) == len(frames) for frames in first.values())


def test_both_annotation_styles_describe_the_same_videos(dataset, tmp_path):
    root, info = dataset
    assert json.load(open(os.path.join(root, "classnames.json"))) == info["class_names"] == sorted(info["class_names"])
    for split in ("train", "val", "test"):
        cfg = get_cfg()
        cfg.merge_from_list(["DATA.PATH_TO_DATA_DIR", root, "OUTPUT_DIR", str(tmp_path / "a"), "DATA.DECODER", "pyav"])
        slowfast = build_dataset(cfg, split)
        cfg.merge_from_list(["DATA.PATH_TO_DATA_DIR", os.path.join(root, "kinetics"),
                             "DATA.PATH_PREFIX", os.path.join(root, "videos"), "OUTPUT_DIR", str(tmp_path / "b")])
        official = build_dataset(cfg, split)
        assert slowfast.num_missing == official.num_missing == 0
        assert slowfast.paths == official.paths == info["paths"][split]
        assert slowfast.labels == official.labels
        # The label is the class folder of the video.
        assert [slowfast.class_names[y] for y in slowfast.labels] == [
            os.path.basename(os.path.dirname(p)) for p in slowfast.paths
        ]
    assert info["counts"] == {"train": 5, "val": 5, "test": 5}


def test_same_seed_same_videos_other_seed_other_videos(tmp_path):
    a = make_synthetic_dataset(str(tmp_path / "a"), num_classes=2, videos_per_class=3, seed=1, num_frames=16)
    b = make_synthetic_dataset(str(tmp_path / "b"), num_classes=2, videos_per_class=3, seed=1, num_frames=16)
    c = make_synthetic_dataset(str(tmp_path / "c"), num_classes=2, videos_per_class=3, seed=2, num_frames=16)
    for name in ("train.csv", "val.csv", "test.csv", os.path.join("kinetics", "train.csv")):
        assert open(tmp_path / "a" / name).read() == open(tmp_path / "b" / name).read()
        assert open(tmp_path / "a" / name).read() != open(tmp_path / "c" / name).read()
    rel = lambda info, root: [os.path.relpath(p, root) for p in info["paths"]["train"]]  # noqa: E731
    assert rel(a, tmp_path / "a") == rel(b, tmp_path / "b")
    for fa, fb, fc in zip(_decoded(a["paths"]["train"]), _decoded(b["paths"]["train"]), _decoded(c["paths"]["train"])):
        np.testing.assert_array_equal(fa, fb)
        assert not np.array_equal(fa, fc)


def test_command_line_tool_writes_the_dataset(tmp_path):
    tool = os.path.join(ROOT, "tools", "make_synthetic_dataset.py")
    out = tmp_path / "syn"
    run = subprocess.run([sys.executable, tool, str(out), "--num-classes", "3", "--videos-per-class", "4",
                          "--seed", "5", "--num-frames", "12"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "12 videos" in run.stdout
    assert json.load(open(out / "classnames.json")) == ["down", "sideways", "up"]
    for name in ("train.csv", "val.csv", "test.csv", "kinetics/train.csv", "kinetics/validate.csv",
                 "kinetics/test.csv"):
        assert (out / name).is_file(), name
    rows = open(out / "train.csv").read().splitlines()
    assert len(rows) == 3 * 2  # 4 per class: 2 train, 1 val, 1 test
    assert all((out / row.split()[0]).is_file() for row in rows)


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"num_classes must be in \[2, 9\]; got 12"):
        make_synthetic_dataset(str(tmp_path), num_classes=12)
    with pytest.raises(ValueError, match="even for yuv420p H.264; got 81x64"):
        make_synthetic_dataset(str(tmp_path), width=81)
    with pytest.raises(ValueError, match="videos_per_class 2 is too small"):
        make_synthetic_dataset(str(tmp_path), videos_per_class=2)
