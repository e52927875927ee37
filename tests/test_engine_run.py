"""The main job end to end on a tiny synthetic dataset: train_net -> test_net -> predict,
the run folder a user gets, auto-resume after kill -9, and the errors a user meets first.

One small dataset (3 motion classes, 36 x 32 px videos) and a width-8, depth-26 Oct-I3D keep
each run to seconds on 2 CPU cores; the properties do not depend on the model size.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from octvideo.config import ConfigError, load_config
from octvideo.data.synthetic import make_synthetic_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CFG = os.path.join(ROOT, "configs", "demo", "synthetic_oct_i3d.yaml")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("synthetic"))
    return make_synthetic_dataset(out, num_classes=3, videos_per_class=6, seed=1, width=36, height=32, num_frames=24)


def run_opts(dataset, output_dir, **over):
    """KEY VALUE overrides of the demo config for a run that takes seconds."""
    opts = {
        "DATA.PATH_TO_DATA_DIR": dataset["out_dir"],
        "OUTPUT_DIR": str(output_dir),
        "MODEL.WIDTH": 8, "MODEL.DEPTH": 26, "MODEL.NUM_CLASSES": 3, "OCT.ALPHA": 0.25,
        "DATA.NUM_FRAMES": 4, "DATA.SAMPLING_RATE": 2,
        "DATA.TRAIN_JITTER_SCALES": "[32, 36]", "DATA.TRAIN_CROP_SIZE": 32, "DATA.TEST_CROP_SIZE": 32,
        "DATA_LOADER.NUM_WORKERS": 0,
        "TRAIN.BATCH_SIZE": 4, "TRAIN.EVAL_PERIOD": 1, "TEST.BATCH_SIZE": 2,
        "TEST.NUM_ENSEMBLE_VIEWS": 2, "TEST.NUM_SPATIAL_CROPS": 3,
        "SOLVER.MAX_EPOCH": 2, "SOLVER.WARMUP_EPOCHS": 0.5, "LOG_PERIOD": 2,
    }
    opts.update(over)
    return [str(x) for kv in opts.items() for x in kv]


def tool(name):
    """Import a tools/ script as a module (they are thin: main(argv))."""
    import importlib.util

    sys.path.insert(0, os.path.join(ROOT, "tools"))
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "tools", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    tool("train_net").main(["--cfg", DEMO_CFG] + run_opts(dataset, out))
    return out


def test_train_net_writes_the_run_folder(trained, dataset):
    out = str(trained)
    for name in ("config.yaml", "log.txt", "metrics.jsonl", "classnames.json", "test_results.json",
                 "test_predictions.json"):
        assert os.path.isfile(os.path.join(out, name)), name
    for name in ("loss.png", "lr.png", "accuracy.png", "confusion_matrix.png"):
        path = os.path.join(out, "plots", name)
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", name
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(out, "tensorboard")))
    assert json.load(open(os.path.join(out, "classnames.json"))) == dataset["class_names"]

    records = [json.loads(ln) for ln in open(os.path.join(out, "metrics.jsonl"))]
    train = [r for r in records if r["kind"] == "train"]
    val = [r for r in records if r["kind"] == "val"]
    # Batch 4 with drop_last, 2 epochs.
    assert train[-1]["iteration"] == 2 * (dataset["counts"]["train"] // 4) and [r["epoch"] for r in val] == [1, 2]
    assert all(0 <= r["top1"] <= 100 and 0 <= r["top5"] <= 100 for r in val)
    # Warm-up from 0.01 over half an epoch, then cosine: the lr rises, then falls.
    lrs = [r["lr"] for r in train]
    assert lrs[0] < max(lrs) and lrs[-1] < max(lrs)

    # The resolved config is a loadable config that rebuilds the same run.
    cfg = load_config(os.path.join(out, "config.yaml"))
    assert cfg.MODEL.WIDTH == 8 and cfg.OUTPUT_DIR == out

    ckpts = sorted(os.listdir(os.path.join(out, "checkpoints")))
    assert "last_checkpoint" in ckpts and sum(c.endswith(".pyth") for c in ckpts) == 2


def test_test_results_are_the_30_view_protocol(trained, dataset):
    res = json.load(open(os.path.join(str(trained), "test_results.json")))
    assert res["num_videos"] == dataset["counts"]["test"] and res["num_failed"] == 0
    assert res["views"] == 6 and res["num_ensemble_views"] == 2 and res["num_spatial_crops"] == 3
    for key in ("top1", "top5", "mean_class_accuracy"):
        assert 0.0 <= res[key] <= 100.0
    assert res["top5"] == 100.0  # 3 classes: the true class is always among the top 5
    preds = json.load(open(os.path.join(str(trained), "test_predictions.json")))
    assert len(preds) == res["num_videos"]
    for p in preds:
        probs = [q for _, q in p["top5"]]
        assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1.0) < 1e-4  # 3 classes: all of them
        assert p["label"] in dataset["class_names"]
    top1 = 100.0 * sum(p["top5"][0][0] == p["label"] for p in preds) / len(preds)
    assert top1 == pytest.approx(res["top1"])


def test_test_net_reproduces_the_in_training_test(trained, dataset, tmp_path, capsys):
    first = json.load(open(os.path.join(str(trained), "test_results.json")))
    ckpt = os.path.join(str(trained), "checkpoints", "checkpoint_epoch_00002.pyth")
    opts = run_opts(dataset, tmp_path) + ["TEST.CHECKPOINT_FILE_PATH", ckpt]
    tool("test_net").main(["--cfg", DEMO_CFG] + opts)
    again = json.load(open(os.path.join(str(tmp_path), "test_results.json")))
    assert again["checkpoint"] == ckpt
    for key in ("top1", "top5", "mean_class_accuracy", "num_videos"):
        assert again[key] == pytest.approx(first[key])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["top1"] == pytest.approx(first["top1"])


def test_predict_prints_class_names_from_the_checkpoint(trained, dataset, tmp_path, capsys):
    ckpt = os.path.join(str(trained), "checkpoints", "checkpoint_epoch_00002.pyth")
    video = dataset["paths"]["test"][0]
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all")
    cfg_opts = run_opts(dataset, tmp_path)
    rc = tool("predict").main(["--cfg", DEMO_CFG, "--checkpoint", ckpt, "--json", video, str(bad), "--opts"] + cfg_opts)
    results = json.loads(capsys.readouterr().out)
    assert rc == 1  # one video failed
    good, failed = results
    assert good["video"] == video and good["views"] == 6
    assert [n for n, _ in good["top5"]] and all(n in dataset["class_names"] for n, _ in good["top5"])
    assert "error" in failed and failed["video"] == str(bad)
    # Same numbers as the test split's predictions for that video.
    preds = {p["path"]: p for p in json.load(open(os.path.join(str(trained), "test_predictions.json")))}
    assert [n for n, _ in good["top5"]] == [n for n, _ in preds[video]["top5"]]


def _final_state(out):
    ckpt = torch.load(os.path.join(out, "checkpoints", "checkpoint_epoch_00003.pyth"), map_location="cpu",
                      weights_only=False)
    return ckpt["model_state"]


def test_killed_run_resumes_to_the_same_parameters(dataset, tmp_path):
    """kill -9 in the middle of epoch 2, rerun the same command: same final parameters."""
    script = os.path.join(ROOT, "tools", "train_net.py")
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def command(out):
        opts = run_opts(dataset, out, **{"SOLVER.MAX_EPOCH": 3, "TEST.ENABLE": False, "TRAIN.EVAL_PERIOD": 10,
                                         "MODEL.DROPOUT_RATE": 0.3})
        return [sys.executable, script, "--cfg", DEMO_CFG] + opts

    straight = str(tmp_path / "straight")
    subprocess.run(command(straight), env=env, check=True, capture_output=True, timeout=300)

    killed = str(tmp_path / "killed")
    proc = subprocess.Popen(command(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pointer = os.path.join(killed, "checkpoints", "last_checkpoint")
    deadline = time.time() + 240
    while not os.path.exists(pointer) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert os.path.exists(pointer), "the run never wrote its first checkpoint"
    assert not os.path.exists(os.path.join(killed, "checkpoints", "checkpoint_epoch_00003.pyth"))

    resumed = subprocess.run(command(killed), env=env, check=True, capture_output=True, text=True, timeout=300)
    assert "resumed from" in resumed.stdout + resumed.stderr

    a, b = _final_state(straight), _final_state(killed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_missing_data_dir_is_named(dataset, tmp_path):
    from octvideo.engine import train

    cfg = load_config(DEMO_CFG, run_opts(dataset, tmp_path, **{"DATA.PATH_TO_DATA_DIR": str(tmp_path / "nowhere")}))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        train(cfg)


def test_empty_annotation_file_is_named(tmp_path):
    from octvideo.engine import train

    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("")
    cfg = load_config(DEMO_CFG, ["DATA.PATH_TO_DATA_DIR", str(data), "OUTPUT_DIR", str(tmp_path / "out")])
    with pytest.raises(ValueError, match="train.csv"):
        train(cfg)


def test_checkpoint_that_does_not_fit_is_refused(trained, dataset, tmp_path):
    from octvideo.engine import run_test

    ckpt = os.path.join(str(trained), "checkpoints", "checkpoint_epoch_00002.pyth")
    cfg = load_config(DEMO_CFG, run_opts(dataset, tmp_path, **{"MODEL.WIDTH": 16, "TEST.CHECKPOINT_FILE_PATH": ckpt}))
    with pytest.raises(Exception, match="shape"):
        run_test(cfg)


def test_batch_size_must_divide_across_processes(monkeypatch):
    from octvideo.data import loader

    cfg = load_config(DEMO_CFG, ["TRAIN.BATCH_SIZE", "6"])
    monkeypatch.setattr(loader, "_world", lambda: (4, 0, True))
    with pytest.raises(ValueError, match="TRAIN.BATCH_SIZE 6"):
        loader.per_process_batch_size(cfg, "train")


def test_unknown_key_on_the_command_line_is_named(dataset, tmp_path):
    with pytest.raises(ConfigError, match="SOLVER.LEARNING_RATE"):
        tool("train_net").main(["--cfg", DEMO_CFG, "SOLVER.LEARNING_RATE", "0.1"])


def test_torchrun_two_gloo_processes_end_to_end(dataset, tmp_path):
    """`torchrun --nproc_per_node 2 tools/train_net.py ...` on the CPU: DDP over gloo, the test
    predictions of both processes gathered (every test video scored once), files written by rank 0."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           os.path.join(ROOT, "tools", "train_net.py"), "--cfg", DEMO_CFG] + run_opts(
               dataset, out, **{"SOLVER.MAX_EPOCH": 1, "TEST.NUM_ENSEMBLE_VIEWS": 1, "TEST.NUM_SPATIAL_CROPS": 1})
    # TMPDIR: torchrun leaves a torchelastic_* folder behind; keep it in the test's own directory.
    env = dict(os.environ, OMP_NUM_THREADS="1", TMPDIR=str(tmp_path))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "x2 process(es)" in done.stdout
    # The summary line is printed by rank 0 only, once for the run.
    summaries = [json.loads(ln) for ln in done.stdout.splitlines() if ln.startswith('{"top1"')]
    assert len(summaries) == 1, done.stdout[-2000:]
    res = json.load(open(out / "test_results.json"))
    preds = json.load(open(out / "test_predictions.json"))
    # 3 test videos over 2 processes: the sampler pads one rank with a repeat; it is counted once.
    assert res["num_videos"] == dataset["counts"]["test"] == len({p["path"] for p in preds}) == len(preds)
    # Batch 4 over 2 processes x 2 clips: the same iterations per epoch as one process.
    train = [json.loads(ln) for ln in open(out / "metrics.jsonl") if '"train"' in ln]
    assert train[-1]["iteration"] == dataset["counts"]["train"] // 4
    # One writer: each log line once (two writers appending would duplicate them).
    log = open(out / "log.txt").read()
    assert log.count("epoch 1/1: loss") == 1


def test_training_starts_from_an_inflated_2d_checkpoint(dataset, tmp_path):
    """TRAIN.CHECKPOINT_FILE_PATH + TRAIN.CHECKPOINT_INFLATE: the run starts at epoch 0 from the 2D
    weights inflated into time (with LR 0 they are still exactly there after one epoch)."""
    from octvideo.checkpoint import save_checkpoint
    from octvideo.engine import train
    from octvideo.models import build_model

    cfg2d = load_config(os.path.join(ROOT, "configs", "imagenet", "oct_resnet50.yaml"),
                        ["MODEL.WIDTH", "8", "MODEL.DEPTH", "26", "OCT.ALPHA", "0.25", "MODEL.NUM_CLASSES", "3"])
    net2d = build_model(cfg2d)
    src = str(tmp_path / "oct_resnet26_2d.pyth")
    save_checkpoint(src, net2d, epoch=90, cfg=cfg2d)

    out = tmp_path / "finetune"
    cfg = load_config(DEMO_CFG, run_opts(dataset, out, **{
        "TRAIN.CHECKPOINT_FILE_PATH": src, "TRAIN.CHECKPOINT_INFLATE": True, "TRAIN.CHECKPOINT_INFLATE_METHOD": "center",
        "SOLVER.BASE_LR": 0.0, "SOLVER.WARMUP_START_LR": 0.0, "SOLVER.MAX_EPOCH": 1, "TEST.ENABLE": False}))
    train(cfg)
    ckpt = torch.load(out / "checkpoints" / "checkpoint_epoch_00001.pyth", map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 1  # the 2D file's epoch 90 is not carried over
    w3d = ckpt["model_state"]["res2.blocks.0.conv1.h2h.weight"]  # I3D: 3x1x1 kernel in res2
    w2d = net2d.state_dict()["res2.blocks.0.conv1.h2h.weight"]
    assert w3d.shape[2] == 3
    assert torch.equal(w3d[:, :, 1], w2d) and not w3d[:, :, 0].any() and not w3d[:, :, 2].any()
    assert torch.equal(ckpt["model_state"]["head.proj.weight"], net2d.state_dict()["head.proj.weight"])


def test_resuming_a_run_of_another_config_is_refused_and_extending_one_is_not(trained, dataset, tmp_path):
    """Auto-resume takes the newest checkpoint in OUTPUT_DIR: one written under another learning
    rate (an old experiment in the same folder) is refused with the differing keys named, before
    anything is written; a larger SOLVER.MAX_EPOCH continues the run."""
    import shutil

    out = tmp_path / "run"
    shutil.copytree(trained, out)
    before = sorted(os.listdir(out / "checkpoints"))
    with pytest.raises(ValueError, match=r"another config \(SOLVER\.BASE_LR: 0\.02 in the checkpoint, 0\.5 now"):
        tool("train_net").main(["--cfg", DEMO_CFG] + run_opts(dataset, out, **{"SOLVER.BASE_LR": 0.5}))
    assert sorted(os.listdir(out / "checkpoints")) == before

    tool("train_net").main(["--cfg", DEMO_CFG] + run_opts(dataset, out, **{"SOLVER.MAX_EPOCH": 3, "TEST.ENABLE": False}))
    log = (out / "log.txt").read_text()
    assert "resumed from" in log and "SOLVER.MAX_EPOCH changed: 2 -> 3" in log
    assert "checkpoint_epoch_00003.pyth" in os.listdir(out / "checkpoints")


def test_demo_clears_its_run_folder_when_it_belongs_to_another_config(trained, dataset, tmp_path, capsys):
    import shutil

    out = tmp_path / "demo_run"
    shutil.copytree(trained, out)
    demo = tool("demo")
    same = load_config(DEMO_CFG, run_opts(dataset, out))
    demo._reset_stale_run(same, new_data=False)  # its own run: kept, to be resumed
    assert (out / "checkpoints").is_dir()
    other = load_config(DEMO_CFG, run_opts(dataset, out, **{"OCT.ALPHA": 0.5}))
    demo._reset_stale_run(other, new_data=False)
    assert not out.exists() and "another config" in capsys.readouterr().out
