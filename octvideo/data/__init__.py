"""Video data: Kinetics annotations, decord / PyAV decoding, sampling, loaders, synthetic data.

Public API::

    build_dataset(cfg, split) -> KineticsDataset        # split: "train" | "val" | "test"
    build_loader(cfg, split, dataset=None) -> DataLoader
    set_epoch(loader, epoch) -> None
    write_classnames(output_dir, names) -> str           # path of classnames.json
    read_classnames(path) -> list[str]
    decode_frames(path, indices, backend="decord") -> DecodedVideo
    synthetic.make_synthetic_dataset(out_dir, num_classes=4, ...) -> dict
"""
from .annotations import read_classnames, write_classnames
from .decoder import DecodedVideo, VideoDecodeError, available_backends, decode_frames
from .kinetics import ClipConfig, KineticsDataset, build_dataset
from .loader import EpochSampler, TestCollate, build_loader, collate_clips, per_process_batch_size, set_epoch

__all__ = [
    "build_dataset",
    "build_loader",
    "set_epoch",
    "write_classnames",
    "read_classnames",
    "decode_frames",
    "available_backends",
    "DecodedVideo",
    "VideoDecodeError",
    "KineticsDataset",
    "ClipConfig",
    "EpochSampler",
    "TestCollate",
    "collate_clips",
    "per_process_batch_size",
]
