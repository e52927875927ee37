"""The data benchmark: its decode-per-view loader does the same work as the decode-once
test item (one decode per view instead of one per video), and its report is complete.
Nothing here is timed."""
import collections
import json
import os

import pytest
import torch

import octvideo.data.benchmark as benchmark
from octvideo.data import ClipConfig, KineticsDataset
from octvideo.data.synthetic import make_synthetic_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("bench"))
    return root, make_synthetic_dataset(root, num_classes=2, videos_per_class=4, seed=3, num_frames=24)


def test_per_view_loader_gives_the_views_of_the_decode_once_item_one_decode_each(synthetic, monkeypatch):
    _, info = synthetic
    paths = info["paths"]["test"]
    clip = ClipConfig(decoder="pyav", num_frames=4, sampling_rate=2, jitter_scales=(48, 56), train_crop_size=48,
                      test_crop_size=48, num_ensemble_views=5, num_spatial_crops=3)
    dataset = KineticsDataset(paths=paths, labels=[0, 1], class_names=["a", "b"], split="test", clip=clip)
    calls = collections.Counter()
    real = benchmark.decode_frames

    def counting(path, indices, **kw):
        calls[path] += 1
        return real(path, indices, **kw)

    monkeypatch.setattr(benchmark, "decode_frames", counting)
    batches = list(benchmark.build_per_view_loader(dataset, num_workers=0))
    assert len(batches) == 2  # one batch per video, its 15 views in order
    for video, batch in enumerate(batches):
        assert batch["indices"].tolist() == [video] * 15 and batch["views"].tolist() == list(range(15))
        assert batch["frames"].dtype == torch.uint8
        torch.testing.assert_close(batch["frames"], dataset.load_view_frames(paths[video]), rtol=0, atol=0)
    assert calls == collections.Counter({p: 15 for p in paths})


def test_benchmark_reports_every_loader_for_each_decoder_and_worker_count(synthetic, capsys):
    root, info = synthetic
    code = benchmark.main([
        "--data-dir", root, "--cfg", os.path.join(ROOT, "configs", "demo", "synthetic_oct_i3d.yaml"),
        "--workers", "0", "--decoders", "pyav", "--min-train-clips", "1", "--json",
        "TEST.NUM_ENSEMBLE_VIEWS", "2", "TEST.NUM_SPATIAL_CROPS", "1",
    ])
    assert code == 0
    out = capsys.readouterr()
    report = json.loads(out.out)  # stdout is pure JSON; progress went to stderr
    assert "[data benchmark]" in out.err
    rows = {r["loader"]: r for r in report["results"]}
    assert set(rows) == {"train", "test", "test_per_view"}
    assert rows["train"]["items"] == 4  # one epoch: 4 training videos in batches of 4
    assert rows["test"]["items"] == rows["test_per_view"]["items"] == info["counts"]["test"]
    assert rows["test_per_view"]["speedup_of_decode_once"] == pytest.approx(
        rows["test"]["rate"] / rows["test_per_view"]["rate"])
    assert report["videos"]["width"] == 80 and report["videos"]["codec"] == "h264"
    assert report["config"]["TEST.NUM_ENSEMBLE_VIEWS"] == 2
    table = benchmark.format_table(report["results"])
    assert table.splitlines()[2].startswith("| pyav | 0 |")
