"""Kinetics annotation files: PySlowFast ``path label`` lists and the official CSVs.

Two styles are read from ``DATA.PATH_TO_DATA_DIR``:

* PySlowFast: ``{train,val,test}.csv``, one ``path label`` per line, no header; the
  label is an integer or a class name; ``DATA.PATH_PREFIX`` (or the annotation folder
  when it is empty) is prepended to relative paths.
* Official Kinetics: ``{train,validate,test}.csv`` with the header
  ``label,youtube_id,time_start,time_end,split[,is_cc]``; the video of a row is
  ``{youtube_id}_{time_start:06d}_{time_end:06d}.{mp4,mkv,webm}`` anywhere up to three
  folders below ``DATA.PATH_PREFIX`` (flat per-split folders or per-class sub-folders).
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

__all__ = [
    "Annotation",
    "SPLIT_FILES",
    "VIDEO_EXTENSIONS",
    "find_annotation_file",
    "read_annotations",
    "resolve_labels",
    "read_label_column",
    "class_names_from_labels",
    "write_classnames",
    "read_classnames",
]

# File names tried for each split, in order.
SPLIT_FILES: Dict[str, Tuple[str, ...]] = {
    "train": ("train.csv",),
    "val": ("val.csv", "validate.csv"),
    "test": ("test.csv",),
}
# Folder names a split's videos may live in (official layout).
SPLIT_DIRS: Dict[str, Tuple[str, ...]] = {
    "train": ("train",),
    "val": ("val", "validate", "valid", "validation"),
    "test": ("test",),
}
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov")
OFFICIAL_HEADER_START = ("label", "youtube_id")


@dataclass
class Annotation:
    """The rows of one split, with videos resolved to paths (None when not found)."""

    file: str
    style: str  # "slowfast" or "kinetics"
    paths: List[str] = field(default_factory=list)
    raw_labels: List[str] = field(default_factory=list)  # as written in the file
    found: List[bool] = field(default_factory=list)


def find_annotation_file(data_dir: str, split: str) -> str:
    """The annotation file of ``split`` in ``data_dir``; clear errors when absent."""
    if split not in SPLIT_FILES:
        raise ValueError(f"split must be one of {sorted(SPLIT_FILES)}; got {split!r}")
    if not data_dir:
        raise ValueError("DATA.PATH_TO_DATA_DIR is empty: set it to the folder holding the annotation CSVs")
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(
            f"DATA.PATH_TO_DATA_DIR {data_dir!r} is not a folder (looked for {', '.join(SPLIT_FILES[split])})"
        )
    for name in SPLIT_FILES[split]:
        path = os.path.join(data_dir, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"no annotation file for split {split!r} in {data_dir!r}: looked for {', '.join(SPLIT_FILES[split])}"
    )


def _is_official(first_line: str) -> bool:
    cols = [c.strip().lower() for c in first_line.split(",")]
    return "youtube_id" in cols and "time_start" in cols


def _read_lines(file: str) -> Tuple[str, List[str]]:
    """The text of an annotation file and its non-blank lines; an empty file is an error naming it."""
    with open(file, newline="", encoding="utf-8") as f:
        text = f.read()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise ValueError(f"annotation file {file!r} is empty")
    return text, lines


def read_annotations(file: str, *, split: str, video_root: str) -> Annotation:
    """Parse ``file`` (either style) and resolve every row to a video path under ``video_root``."""
    text, lines = _read_lines(file)
    if _is_official(lines[0]):
        return _read_official(file, text, split=split, video_root=video_root)
    return _read_slowfast(file, lines, video_root=video_root)


def _read_slowfast(file: str, lines: List[str], *, video_root: str, check_files: bool = True) -> Annotation:
    ann = Annotation(file=file, style="slowfast")
    for lineno, line in enumerate(lines, 1):
        parts = line.strip().rsplit(None, 1)
        if len(parts) != 2 and "," in line:  # "path,label" variant seen in the wild
            parts = line.strip().rsplit(",", 1)
        if len(parts) != 2:
            raise ValueError(f"{file}:{lineno}: expected 'path label', got {line.strip()!r}")
        rel, label = parts[0].strip(), parts[1].strip()
        path = rel if os.path.isabs(rel) else os.path.join(video_root, rel)
        ann.paths.append(path)
        ann.raw_labels.append(label)
        ann.found.append(os.path.isfile(path) if check_files else False)
    return ann


def _read_official(file: str, text: str, *, split: str, video_root: str) -> Annotation:
    rows = list(csv.DictReader(text.splitlines()))
    if not rows:
        raise ValueError(f"annotation file {file!r} has a header but no rows")
    need = {"youtube_id", "time_start", "time_end"}
    missing_cols = need - set(rows[0])
    if missing_cols:
        raise ValueError(f"{file}: missing columns {sorted(missing_cols)} in the header")
    index = _index_videos(video_root)
    split_dirs = SPLIT_DIRS[split]
    ann = Annotation(file=file, style="kinetics")
    for lineno, row in enumerate(rows, 2):
        try:
            stem = f"{row['youtube_id']}_{int(float(row['time_start'])):06d}_{int(float(row['time_end'])):06d}"
        except (TypeError, ValueError):
            raise ValueError(f"{file}:{lineno}: bad time_start/time_end in {row}") from None
        path = _pick(index.get(stem, []), split_dirs, root=video_root)
        # Unlabelled test sets (Kinetics-600 test.csv has no label column) get label "".
        ann.raw_labels.append((row.get("label") or "").strip())
        ann.paths.append(path or os.path.join(video_root, split_dirs[0], stem + ".mp4"))
        ann.found.append(path is not None)
    return ann


def _index_videos(root: str, max_depth: int = 3) -> Dict[str, List[str]]:
    """{file stem: [paths]} of the video files up to ``max_depth`` folders below ``root``.

    One directory walk instead of a stat per (row x extension x layout): Kinetics-400
    has 240k rows and the walk takes seconds.
    """
    index: Dict[str, List[str]] = {}
    if not os.path.isdir(root):
        return index
    stack = [(root, 0)]
    while stack:
        folder, depth = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for e in entries:
            if e.is_dir(follow_symlinks=True):
                if depth < max_depth:
                    stack.append((e.path, depth + 1))
            else:
                stem, ext = os.path.splitext(e.name)
                if ext.lower() in VIDEO_EXTENSIONS:
                    index.setdefault(stem, []).append(e.path)
    return index


def _pick(candidates: List[str], split_dirs: Sequence[str], *, root: str) -> Optional[str]:
    """Prefer a candidate inside a folder named like the split; then the first (sorted).

    Only the folders below ``root`` count: a root that happens to sit in ".../train/..."
    must not make every video look like a training video.
    """
    if not candidates:
        return None
    candidates = sorted(candidates)
    for c in candidates:
        parts = set(os.path.normpath(os.path.relpath(c, root)).split(os.sep)[:-1])
        if parts.intersection(split_dirs):
            return c
    return candidates[0]


def resolve_labels(raw: Sequence[str], *, class_names: Optional[List[str]], file: str) -> List[int]:
    """Map labels as written (integers or names) to class indices; -1 for unlabelled rows."""
    out = []
    lookup = {n: i for i, n in enumerate(class_names or [])}
    for row, label in enumerate(raw, 1):
        if label == "":
            out.append(-1)
        elif label.lstrip("-").isdigit():
            value = int(label)
            if value < 0 or (class_names is not None and value >= len(class_names)):
                n = len(class_names) if class_names is not None else "?"
                raise ValueError(f"{file}: row {row}: label {value} outside [0, {n})")
            out.append(value)
        elif label in lookup:
            out.append(lookup[label])
        else:
            raise ValueError(
                f"{file}: row {row}: class {label!r} is not among the {len(lookup)} training classes"
            )
    return out


def read_label_column(file: str) -> List[str]:
    """Only the labels of an annotation file (no video lookup): to name the classes."""
    _, lines = _read_lines(file)
    if _is_official(lines[0]):
        return [(row.get("label") or "").strip() for row in csv.DictReader(lines)]
    return _read_slowfast(file, lines, video_root="", check_files=False).raw_labels


def class_names_from_labels(raw: Iterable[str]) -> Optional[List[str]]:
    """Sorted unique class names, or None when the labels are integers."""
    labels = [lab for lab in raw if lab != ""]
    if labels and all(lab.lstrip("-").isdigit() for lab in labels):
        return None
    return sorted(set(labels))


def write_classnames(output_dir: str, names: Sequence[str]) -> str:
    """Write ``output_dir/classnames.json`` (a JSON list, index = class id); returns the path."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, "classnames.json")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(list(names), f, indent=1, ensure_ascii=False)
    os.replace(tmp, path)  # atomic: a reader never sees half a file
    return path


def read_classnames(path: str) -> List[str]:
    """Read a class-name list written by :func:`write_classnames` (a file or its folder)."""
    if os.path.isdir(path):
        path = os.path.join(path, "classnames.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"class names file not found: {path!r}")
    with open(path, encoding="utf-8") as f:
        try:
            names = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{path}: expected a JSON list of class-name strings")
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: duplicate class names")
    return names
