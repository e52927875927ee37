"""Data-loading throughput: training clips/s, test videos/s, decode-once vs decode-per-view.

    python -m octvideo.data.benchmark [--data-dir DIR | --width W --height H --num-frames F]
        [--workers N[,N...]] [--decoders decord,pyav] [--cfg FILE] [--json] [KEY VALUE ...]
    python tools/benchmark.py data [same arguments]

For each decoder and worker count it measures, on the same videos:

* train         the training loader (random clip, scale jitter, crop, flip): clips/s;
* test          the test loader, each video decoded ONCE into all its
                TEST.NUM_ENSEMBLE_VIEWS x TEST.NUM_SPATIAL_CROPS views: videos/s;
* test_per_view a PySlowFast-style test loader, one item and one decode per view
                (:class:`DecodePerViewDataset`), batched one video's views at a time: videos/s;

and the ratio test / test_per_view. Each rate is the median of ``--repeat`` runs of
steady-state throughput: with W workers, timed from the arrival of the W-th batch to the
last, those first W batches not counted, so DataLoader worker start-up is left out (its
time is in the JSON as ``warmup_s``).

Without ``--data-dir`` a synthetic dataset is generated in a temporary folder
(``--width/--height/--num-frames/--fps``; the default 340x256, 300 frames at 30 fps is a
Kinetics-like 10 s clip). Unless overridden, the config is the Kinetics default (8
frames, SAMPLING_RATE 8, crops 224 / 256, 10 x 3 views) with TRAIN.BATCH_SIZE 4 and
TEST.BATCH_SIZE 1, so that every worker has work on small datasets.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from typing import Dict, Iterable, List, Optional

import torch
from torch.utils.data import DataLoader, Dataset

from .decoder import available_backends, decode_frames
from .kinetics import KineticsDataset, build_dataset
from .loader import build_loader, set_epoch
from .sampling import clip_indices, clip_starts_uniform, frame_step
from .transforms import resize_short_side, spatial_crop_offsets, to_tensor_frames

__all__ = ["DecodePerViewDataset", "build_per_view_loader", "run_benchmark", "format_table", "main"]

# Overrides applied before the user's KEY VALUE pairs (see the module docstring).
BENCHMARK_DEFAULTS = ["TRAIN.BATCH_SIZE", 4, "TEST.BATCH_SIZE", 1, "DATA_LOADER.PIN_MEMORY", False]


class DecodePerViewDataset(Dataset):
    """The test set the PySlowFast way: one item per (video, clip, crop), each decoding its clip.

    Item ``i`` is view ``i % V`` of video ``i // V`` (V = clips x crops, clip-major as in
    :meth:`KineticsDataset.load_view_frames`), and its uint8 ``frames`` [T, 3, S, S] equal
    that view of ``load_view_frames``: same sampling, resize and crop, handed on as uint8
    like the decode-once loader's, but a decoder call per view instead of one per video.
    Only for comparing throughput.
    """

    def __init__(self, dataset: KineticsDataset):
        self.dataset = dataset
        self.clip = dataset.clip
        self.num_views = self.clip.num_views

    def __len__(self) -> int:
        return len(self.dataset) * self.num_views

    def __getitem__(self, i: int) -> Dict:
        c = self.clip
        video, view = divmod(int(i), self.num_views)
        clip_index, crop_index = divmod(view, c.num_spatial_crops)
        path = self.dataset.paths[video]

        def indices(num_video_frames: int, fps: float) -> List[int]:
            step = frame_step(sampling_rate=c.sampling_rate, video_fps=fps, target_fps=c.target_fps)
            starts = clip_starts_uniform(
                num_video_frames=num_video_frames, num_frames=c.num_frames, step=step, num_clips=c.num_ensemble_views
            )
            return clip_indices(start=starts[clip_index], num_frames=c.num_frames, step=step)

        decoded = decode_frames(path, indices, backend=c.decoder, num_threads=c.decoder_threads)
        frames = resize_short_side(to_tensor_frames(decoded.frames), size=c.test_crop_size)
        s = c.test_crop_size
        top, left = spatial_crop_offsets(
            height=frames.shape[-2], width=frames.shape[-1], size=s, num_crops=c.num_spatial_crops
        )[crop_index]
        view_frames = frames[..., top : top + s, left : left + s]
        return {
            "frames": view_frames.contiguous(),
            "labels": self.dataset.labels[video],
            "indices": video,
            "views": view,
        }


def build_per_view_loader(dataset: KineticsDataset, *, num_workers: int) -> DataLoader:
    """Batches of one video's V views, in order, from :class:`DecodePerViewDataset`."""
    per_view = DecodePerViewDataset(dataset)
    return DataLoader(per_view, batch_size=per_view.num_views, shuffle=False, num_workers=num_workers)


# --------------------------------------------------------------------------- #
# Measuring
# --------------------------------------------------------------------------- #
def _progress(iterable: Iterable, *, total: int, label: str, stream=sys.stderr, every_s: float = 10.0):
    """A tqdm bar on a terminal; otherwise a line every ``every_s`` seconds."""
    if stream.isatty():
        from tqdm import tqdm

        yield from tqdm(iterable, total=total, desc=label, file=stream, leave=False)
        return
    last = time.perf_counter()
    for i, item in enumerate(iterable, 1):
        yield item
        if time.perf_counter() - last >= every_s:
            last = time.perf_counter()
            print(f"  {label}: {i}/{total} batches", file=stream, flush=True)


def _timed(loader: DataLoader, *, label: str, count, epoch: int = 0) -> Dict:
    """Iterate ``loader`` once, counting items with ``count(batch)``.

    The rate is steady-state throughput. With W workers (W >= 1; 1 for the main process)
    the clock starts when the W-th batch arrives and those W batches are not counted: by
    then every worker has started and delivered one batch, so worker start-up (paid every
    epoch, dominant on tiny videos) is left out, and the workers' next batches, begun in
    parallel, are all timed in full. The time to that point is ``warmup_s``. A loader with
    W batches or fewer falls back to counting everything from the first request.
    """
    set_epoch(loader, epoch)
    warm = max(1, loader.num_workers)
    total = len(loader)
    items = warm_items = 0
    start = time.perf_counter()
    warm_at = None
    for b, batch in enumerate(_progress(iter(loader), total=total, label=label), 1):
        items += count(batch)
        if b == warm:
            warm_at, warm_items = time.perf_counter(), items
    end = time.perf_counter()
    if warm_at is not None and items > warm_items and end > warm_at:
        timed_items, seconds = items - warm_items, end - warm_at
    else:
        timed_items, seconds = items, end - start
    return {"items": items, "timed_items": timed_items, "seconds": seconds,
            "warmup_s": (warm_at or end) - start, "rate": timed_items / seconds if seconds > 0 else float("nan")}


def _train_clips(cfg, *, min_clips: int, label: str) -> Dict:
    dataset = build_dataset(cfg, "train")
    loader = build_loader(cfg, "train", dataset)
    if len(loader) == 0:
        raise ValueError(f"{len(dataset)} training videos make no batch of TRAIN.BATCH_SIZE {cfg.TRAIN.BATCH_SIZE}")
    runs = [_timed(loader, label=label, count=lambda b: len(b["labels"]), epoch=0)]
    epoch = 1
    while sum(r["items"] for r in runs) < min_clips:  # small datasets: more epochs
        runs.append(_timed(loader, label=label, count=lambda b: len(b["labels"]), epoch=epoch))
        epoch += 1
    out = {k: sum(r[k] for r in runs) for k in ("items", "timed_items", "seconds", "warmup_s")}
    out["rate"] = out["timed_items"] / out["seconds"]
    return out


def _limit(dataset: KineticsDataset, max_videos: Optional[int]) -> KineticsDataset:
    if max_videos is None or max_videos >= len(dataset):
        return dataset
    return KineticsDataset(
        paths=dataset.paths[:max_videos],
        labels=dataset.labels[:max_videos],
        class_names=dataset.class_names,
        split="test",
        clip=dataset.clip,
    )


def _median_run(measure, repeat: int) -> Dict:
    """Run ``measure()`` ``repeat`` times; the run with the median rate, plus every rate."""
    runs = sorted((measure() for _ in range(repeat)), key=lambda r: r["rate"])
    best = dict(runs[len(runs) // 2])
    best["all_rates"] = [round(r["rate"], 4) for r in runs]
    return best


def run_benchmark(
    cfg,
    *,
    decoders: List[str],
    workers: List[int],
    min_train_clips: int = 32,
    max_test_videos: Optional[int] = None,
    repeat: int = 1,
    log=print,
) -> List[Dict]:
    """All measurements for ``cfg``'s dataset: a list of result rows (see :func:`format_table`).

    Each rate is the median of ``repeat`` runs (a shared machine's load changes between runs).
    """
    rows: List[Dict] = []
    for decoder in decoders:
        for num_workers in workers:
            run = cfg.clone()
            run.merge_from_list(["DATA.DECODER", decoder, "DATA_LOADER.NUM_WORKERS", num_workers])
            tag = f"{decoder}, {num_workers} worker(s)"

            log(f"[data benchmark] train loader, {tag} ...")
            r = _median_run(lambda: _train_clips(run, min_clips=min_train_clips, label=f"train {tag}"), repeat)
            rows.append(dict(loader="train", decoder=decoder, workers=num_workers, unit="clips/s", **r))
            log(f"  {r['timed_items']} clips in {r['seconds']:.1f}s: {r['rate']:.2f} clips/s (runs: {r['all_rates']})")

            test_set = _limit(build_dataset(run, "test"), max_test_videos)
            views = test_set.clip.num_views
            log(f"[data benchmark] test loader, decode once, {len(test_set)} videos x {views} views, {tag} ...")
            r = _median_run(lambda: _timed(build_loader(run, "test", test_set), label=f"test {tag}",
                                           count=lambda b: len(b["indices"]) + len(b["failed"])), repeat)
            rows.append(dict(loader="test", decoder=decoder, workers=num_workers, unit="videos/s", **r))
            log(f"  {r['timed_items']} videos in {r['seconds']:.1f}s: {r['rate']:.3f} videos/s "
                f"(runs: {r['all_rates']})")

            log(f"[data benchmark] test loader, decode per view, same videos, {tag} ...")
            r = _median_run(lambda: _timed(build_per_view_loader(test_set, num_workers=num_workers),
                                           label=f"per-view {tag}", count=lambda b: len(b["indices"]) / views), repeat)
            r["items"], r["timed_items"] = int(round(r["items"])), int(round(r["timed_items"]))
            once = rows[-1]["rate"]
            r["speedup_of_decode_once"] = once / r["rate"]
            rows.append(dict(loader="test_per_view", decoder=decoder, workers=num_workers, unit="videos/s", **r))
            log(f"  {r['timed_items']} videos in {r['seconds']:.1f}s: {r['rate']:.3f} videos/s "
                f"(runs: {r['all_rates']}); "
                f"decode once is {r['speedup_of_decode_once']:.1f}x faster")
    return rows


def format_table(rows: List[Dict]) -> str:
    """A Markdown table: one line per (decoder, workers)."""
    lines = [
        "| decoder | workers | train clips/s | test videos/s (decode once) | test videos/s (decode per view) | ratio |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    keys = []
    for r in rows:
        if (r["decoder"], r["workers"]) not in keys:
            keys.append((r["decoder"], r["workers"]))
    for decoder, workers in keys:
        got = {r["loader"]: r for r in rows if r["decoder"] == decoder and r["workers"] == workers}
        lines.append(
            f"| {decoder} | {workers} | {got['train']['rate']:.2f} | {got['test']['rate']:.3f} | "
            f"{got['test_per_view']['rate']:.3f} | {got['test_per_view']['speedup_of_decode_once']:.1f}x |"
        )
    return "\n".join(lines)


def machine_info() -> Dict:
    """What the numbers depend on: CPUs available, load when starting, library versions."""
    import av

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_1min_at_start": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "av": av.__version__,
    }
    if "decord" in available_backends():
        import decord

        info["decord"] = decord.__version__
    return info


def _describe_videos(paths: List[str]) -> Dict:
    import av

    with av.open(paths[0]) as c:
        s = c.streams.video[0]
        return {"width": s.width, "height": s.height, "fps": float(s.average_rate), "frames": s.frames,
                "codec": s.codec_context.name,
                "mean_file_bytes": int(sum(os.path.getsize(p) for p in paths) / len(paths))}


# --------------------------------------------------------------------------- #
# Command line
# --------------------------------------------------------------------------- #
def _int_list(text: str) -> List[int]:
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, e.g. 0,2; got {text!r}") from None
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"worker counts must be >= 0; got {text!r}")
    return values


def main(argv=None) -> int:
    from octvideo.config import load_config

    from .synthetic import make_synthetic_dataset

    p = argparse.ArgumentParser(prog="benchmark data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", help="dataset in PySlowFast layout ({train,test}.csv); default: generate one")
    p.add_argument("--cfg", dest="cfg_file", help="YAML config (default: the Kinetics defaults)")
    p.add_argument("--workers", type=_int_list, default=[2], help="DATA_LOADER.NUM_WORKERS value(s), e.g. 0,2")
    p.add_argument("--decoders", type=lambda s: s.split(","), default=None,
                   help="comma-separated; default: every installed one of decord,pyav")
    p.add_argument("--min-train-clips", type=int, default=32, help="training clips to load per measurement (at least)")
    p.add_argument("--max-test-videos", type=int, default=None, help="test videos per measurement (default: all)")
    p.add_argument("--repeat", type=int, default=1, help="runs per measurement; the median is reported")
    g = p.add_argument_group("generated dataset (without --data-dir)")
    g.add_argument("--width", type=int, default=340)
    g.add_argument("--height", type=int, default=256)
    g.add_argument("--num-frames", type=int, default=300, help="frames per video (300 at 30 fps: 10 s, like Kinetics)")
    g.add_argument("--fps", type=int, default=30)
    g.add_argument("--noise", type=float, default=3.0, help="background noise std; 3 gives ~1.4 MB per 10 s at 340x256")
    g.add_argument("--videos-per-class", type=int, default=10, help="4 classes; 70%% train, 20%% test")
    g.add_argument("--keep", metavar="DIR", help="generate into DIR and keep it (reuse with --data-dir DIR)")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout (progress on stderr)")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides")
    args = p.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr if args.json else sys.stdout, flush=True)

    machine = machine_info()  # before the work: the load average says what else was running
    decoders = args.decoders or available_backends()
    missing = [d for d in decoders if d not in available_backends()]
    if missing:
        p.error(f"decoder(s) {missing} not installed; installed: {available_backends()}")
    temp = None
    data_dir = args.data_dir
    if data_dir is None:
        if args.keep:
            data_dir = args.keep
        else:
            temp = tempfile.TemporaryDirectory(prefix="octvideo-data-benchmark-")
            data_dir = temp.name
        log(f"[data benchmark] generating {4 * args.videos_per_class} synthetic videos "
            f"({args.width}x{args.height}, {args.num_frames} frames at {args.fps} fps) in {data_dir} ...")
        info = make_synthetic_dataset(data_dir, num_classes=4, videos_per_class=args.videos_per_class, seed=0,
                                      width=args.width, height=args.height, num_frames=args.num_frames, fps=args.fps,
                                      noise=args.noise, progress=not args.json)
        log(f"  done in {info['seconds']:.1f}s")
    # With --json, stdout carries only the JSON: the datasets' own prints go to stderr too.
    quiet = contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext()
    try:
        with quiet, tempfile.TemporaryDirectory(prefix="octvideo-data-benchmark-out-") as out_dir:
            cfg = load_config(args.cfg_file, BENCHMARK_DEFAULTS + ["DATA.PATH_TO_DATA_DIR", data_dir,
                                                                   "OUTPUT_DIR", out_dir] + list(args.opts))
            test_paths = build_dataset(cfg, "test").paths
            videos = _describe_videos(test_paths)
            log(f"[data benchmark] videos: {videos}")
            rows = run_benchmark(cfg, decoders=decoders, workers=args.workers, min_train_clips=args.min_train_clips,
                                 max_test_videos=args.max_test_videos, repeat=args.repeat, log=log)
    finally:
        if temp is not None:
            temp.cleanup()
    result = {
        "command": "python -m octvideo.data.benchmark " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine,
        "videos": videos,
        "config": {
            "DATA.NUM_FRAMES": cfg.DATA.NUM_FRAMES, "DATA.SAMPLING_RATE": cfg.DATA.SAMPLING_RATE,
            "DATA.TRAIN_JITTER_SCALES": list(cfg.DATA.TRAIN_JITTER_SCALES),
            "DATA.TRAIN_CROP_SIZE": cfg.DATA.TRAIN_CROP_SIZE,
            "DATA.TEST_CROP_SIZE": cfg.DATA.TEST_CROP_SIZE, "TEST.NUM_ENSEMBLE_VIEWS": cfg.TEST.NUM_ENSEMBLE_VIEWS,
            "TEST.NUM_SPATIAL_CROPS": cfg.TEST.NUM_SPATIAL_CROPS, "TRAIN.BATCH_SIZE": cfg.TRAIN.BATCH_SIZE,
            "DATA_LOADER.DECODER_THREADS": cfg.DATA_LOADER.DECODER_THREADS,
        },
        "results": rows,
    }
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print()
        print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
