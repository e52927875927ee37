"""Kinetics annotations: PySlowFast and official CSV styles, class indices, missing videos.

Videos here are empty placeholder files: building a dataset only resolves and counts
paths, it never decodes (decoding is covered by tests/test_data_decoding.py).
"""
import json
import os

import pytest

from octvideo.config import get_cfg
from octvideo.data import build_dataset, read_classnames, write_classnames


def _touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "wb").close()
    return path


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def _cfg(data_dir, out_dir, prefix="", num_classes=400):
    cfg = get_cfg()
    cfg.DATA.PATH_TO_DATA_DIR = str(data_dir)
    cfg.DATA.PATH_PREFIX = str(prefix)
    cfg.DATA.DECODER = "pyav"
    cfg.OUTPUT_DIR = str(out_dir)
    cfg.MODEL.NUM_CLASSES = num_classes
    return cfg


# --------------------------------------------------------------------------- #
# PySlowFast style: "path label"
# --------------------------------------------------------------------------- #
def test_slowfast_style_with_class_names_and_path_prefix(tmp_path, capsys):
    ann, videos, out = tmp_path / "ann", tmp_path / "videos", tmp_path / "out"
    train_rows = [("z/walking_1.mp4", "walking"), ("a b/dancing 1.mp4", "dancing"), ("z/walking_2.mp4", "walking"),
                  ("c/cooking.mp4", "cooking")]
    for rel, _ in train_rows:
        _touch(str(videos / rel))
    _write(str(ann / "train.csv"), "".join(f"{rel} {label}\n" for rel, label in train_rows))
    # val lists the classes in another order and not all of them: indices still follow train.
    _touch(str(videos / "v/walk.mp4"))
    _touch(str(videos / "v/cook.mp4"))
    _write(str(ann / "val.csv"), "v/walk.mp4 walking\nv/cook.mp4 cooking\n")

    cfg = _cfg(ann, out, prefix=videos)
    train = build_dataset(cfg, "train")
    assert train.class_names == ["cooking", "dancing", "walking"]
    assert train.labels == [2, 1, 2, 0]
    # DATA.PATH_PREFIX is prepended; a path with spaces keeps them (the label is the last field).
    assert train.paths == [os.path.join(str(videos), rel) for rel, _ in train_rows]
    assert read_classnames(str(out / "classnames.json")) == ["cooking", "dancing", "walking"]
    val = build_dataset(cfg, "val")
    assert val.labels == [2, 0]
    assert val.class_names == train.class_names
    printed = capsys.readouterr().out
    assert "train: 4 videos found, 0 missing" in printed and "val: 2 videos found, 0 missing" in printed


def test_slowfast_style_with_integer_labels_relative_to_data_dir(tmp_path):
    ann = tmp_path / "ann"
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        _touch(str(ann / "vids" / name))
    _write(str(ann / "train.csv"), "vids/a.mp4 3\nvids/b.mp4 0\nvids/c.mp4 9\n")
    ds = build_dataset(_cfg(ann, tmp_path / "out", num_classes=10), "train")
    assert ds.labels == [3, 0, 9]
    assert ds.paths[0] == os.path.join(str(ann), "vids", "a.mp4")  # empty PATH_PREFIX: the annotation folder
    assert ds.class_names == [str(i) for i in range(10)]


def test_integer_label_out_of_range_is_an_error_naming_the_row(tmp_path):
    ann = tmp_path / "ann"
    _touch(str(ann / "a.mp4"))
    _touch(str(ann / "b.mp4"))
    _write(str(ann / "train.csv"), "a.mp4 1\nb.mp4 400\n")
    with pytest.raises(ValueError, match=r"train\.csv: row 2: label 400 outside \[0, 400\)"):
        build_dataset(_cfg(ann, tmp_path / "out"), "train")


def test_class_not_in_training_annotations_is_an_error(tmp_path):
    ann = tmp_path / "ann"
    _touch(str(ann / "a.mp4"))
    _write(str(ann / "train.csv"), "a.mp4 walking\n")
    _write(str(ann / "val.csv"), "a.mp4 flying\n")
    with pytest.raises(ValueError, match="'flying' is not among the 1 training classes"):
        build_dataset(_cfg(ann, tmp_path / "out"), "val")


def test_missing_annotation_file_and_no_video_found_are_clear_errors(tmp_path):
    ann = tmp_path / "ann"
    _write(str(ann / "train.csv"), "nowhere/a.mp4 walking\n")
    with pytest.raises(FileNotFoundError, match="no annotation file for split 'test'.*test.csv"):
        build_dataset(_cfg(ann, tmp_path / "out"), "test")
    with pytest.raises(FileNotFoundError, match="none of the 1 videos.*DATA.PATH_PREFIX"):
        build_dataset(_cfg(ann, tmp_path / "out"), "train")


def test_more_classes_than_model_outputs_is_an_error(tmp_path):
    ann = tmp_path / "ann"
    rows = []
    for c in ("a", "b", "c"):
        _touch(str(ann / f"{c}.mp4"))
        rows.append(f"{c}.mp4 {c}\n")
    _write(str(ann / "train.csv"), "".join(rows))
    with pytest.raises(ValueError, match="3 classes .* MODEL.NUM_CLASSES is 2"):
        build_dataset(_cfg(ann, tmp_path / "out", num_classes=2), "train")


# --------------------------------------------------------------------------- #
# Official Kinetics CSVs
# --------------------------------------------------------------------------- #
OFFICIAL_ROWS = [
    # label, youtube_id, time_start, time_end, extension on disk (None: taken down)
    ("riding a bike", "---QUuC4vJs", 3, 13, ".mp4"),
    ("abseiling", "--33Lscn6sk", 4, 14, ".mkv"),
    ("riding a bike", "-0yoBgwzHMg", 120, 130, ".webm"),
    ("abseiling", "-1fNO7cbR4c", 0, 10, None),
    ("zumba", "-2Bdq4Dj4p0", 17, 27, ".mp4"),
    ("zumba", "-3Ks0Lh_rQc", 7, 17, None),
]


def _official_dataset(root, *, layout, with_is_cc=True):
    """Official CSVs in root/ann and videos under root/videos/<split>[/<class>]/<stem><ext>."""
    header = "label,youtube_id,time_start,time_end,split" + (",is_cc" if with_is_cc else "")
    lines = [header]
    found, missing = [], []
    for label, yid, t0, t1, ext in OFFICIAL_ROWS:
        lines.append(f'"{label}",{yid},{t0},{t1},train' + (",0" if with_is_cc else ""))
        stem = f"{yid}_{t0:06d}_{t1:06d}"
        if ext is None:
            missing.append(stem)
            continue
        folder = os.path.join(root, "videos", "train")
        if layout == "per_class":
            folder = os.path.join(folder, label)
        found.append(_touch(os.path.join(folder, stem + ext)))
    _write(os.path.join(root, "ann", "train.csv"), "\n".join(lines) + "\n")
    return found, missing


@pytest.mark.parametrize("layout", ["flat", "per_class"])
def test_official_csv_finds_videos_in_both_layouts_and_lists_missing_ones(tmp_path, capsys, layout):
    found, missing = _official_dataset(str(tmp_path), layout=layout, with_is_cc=layout == "flat")
    out = tmp_path / "out"
    ds = build_dataset(_cfg(tmp_path / "ann", out, prefix=tmp_path / "videos"), "train")
    assert ds.paths == found  # .mp4, .mkv and .webm, in annotation order
    assert ds.class_names == ["abseiling", "riding a bike", "zumba"]  # sorted; names with spaces kept
    assert ds.labels == [1, 0, 1, 2]
    assert ds.num_missing == 2
    assert "train: 4 videos found, 2 missing" in capsys.readouterr().out
    listed = (out / "missing_train.txt").read_text().splitlines()
    assert [os.path.basename(p).split(".")[0] for p in listed] == missing
    assert json.loads((out / "classnames.json").read_text()) == ["abseiling", "riding a bike", "zumba"]


def test_official_validate_csv_is_the_val_split_and_prefers_the_split_folder(tmp_path):
    root = str(tmp_path)
    _official_dataset(root, layout="per_class")
    stem = "--33Lscn6sk_000004_000014"
    # The same clip under train/ and validate/ (re-downloads do this): val takes validate/.
    val_copy = _touch(os.path.join(root, "videos", "validate", "abseiling", stem + ".mp4"))
    _write(os.path.join(root, "ann", "validate.csv"),
           "label,youtube_id,time_start,time_end,split\nabseiling,--33Lscn6sk,4,14,validate\n")
    ds = build_dataset(_cfg(tmp_path / "ann", tmp_path / "out", prefix=tmp_path / "videos"), "val")
    assert ds.paths == [val_copy]
    assert ds.labels == [0]


def test_unlabelled_official_test_csv_gives_label_minus_one(tmp_path):
    # Kinetics-600's test.csv has no label column.
    root = str(tmp_path)
    _official_dataset(root, layout="flat")
    _touch(os.path.join(root, "videos", "test", "abcdefghijk_000010_000020.mp4"))
    _write(os.path.join(root, "ann", "test.csv"), "youtube_id,time_start,time_end,split\nabcdefghijk,10,20,test\n")
    ds = build_dataset(_cfg(tmp_path / "ann", tmp_path / "out", prefix=tmp_path / "videos"), "test")
    assert ds.labels == [-1]
    assert ds.class_names == ["abseiling", "riding a bike", "zumba"]


def test_classnames_file_round_trip_and_bad_file(tmp_path):
    path = write_classnames(str(tmp_path / "run"), ["b", "a", "c d"])
    assert path == str(tmp_path / "run" / "classnames.json")
    assert read_classnames(path) == ["b", "a", "c d"]  # order is the class index: kept as written
    assert read_classnames(str(tmp_path / "run")) == ["b", "a", "c d"]  # the folder works too
    _write(str(tmp_path / "dup.json"), '["a", "a"]')
    with pytest.raises(ValueError, match="duplicate class names"):
        read_classnames(str(tmp_path / "dup.json"))
