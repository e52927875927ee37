"""Checkpoint files: contents, round trip, resume, atomic saves, errors naming the file, starting vs resuming."""
import os
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import octvideo
from octvideo import checkpoint as cu
from octvideo.checkpoint import CheckpointError
from octvideo.engine.optim import build_optimizer
from octvideo.engine.trainer import rng_state, set_rng_state
from octvideo.models import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cfg(small_cfg, **kw):
    cfg = small_cfg(**kw)
    cfg.MODEL.DROPOUT_RATE = 0.0
    cfg.SOLVER.BASE_LR = 0.05
    return cfg


def _steps(model, optimizer, n, seed):
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(n):
        x = torch.randn(2, 3, 4, 32, 32, generator=g)
        y = torch.randint(0, model.num_classes, (2,), generator=g)
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


def _same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_round_trip_restores_weights_outputs_optimizer_scaler_and_metadata(small_cfg, tmp_path):
    cfg = _cfg(small_cfg)
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = build_optimizer(cfg, model)
    _steps(model, opt, 2, seed=1)
    scaler = torch.amp.GradScaler("cpu", init_scale=512.0)
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    state = rng_state()
    expected_draws = (random.random(), np.random.rand(), torch.rand(1).item())
    path = cu.save_run_checkpoint(
        str(tmp_path), model, optimizer=opt, scaler=scaler, epoch=3, iteration=42, cfg=cfg,
        class_names=["a", "b"], extra={"rng_state": {0: state}},
    )
    assert os.path.basename(path) == "checkpoint_epoch_00003.pyth"
    assert cu.find_last_checkpoint(str(tmp_path)) == path

    raw = torch.load(path, weights_only=True)  # the file itself: one dict, plain types only
    assert raw["octvideo_version"] == octvideo.__version__
    assert {"model_state", "optimizer_state", "scaler_state", "epoch", "iteration", "cfg", "class_names"} <= set(raw)

    torch.manual_seed(1)
    fresh = build_model(cfg)
    fresh_opt = build_optimizer(cfg, fresh)
    fresh_scaler = torch.amp.GradScaler("cpu")
    info = cu.load_checkpoint(path, fresh, optimizer=fresh_opt, scaler=fresh_scaler)
    assert _same_state(model, fresh)
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), fresh.eval()(x))
    assert (info["epoch"], info["iteration"], info["class_names"], info["format"]) == (3, 42, ["a", "b"], "octvideo")
    assert info["octvideo_version"] == octvideo.__version__
    assert info["model_info"]["alpha"] == cfg.OCT.ALPHA and "OCT:" in info["cfg"]
    assert fresh_scaler.get_scale() == 512.0
    momentum = [opt.state[p]["momentum_buffer"] for p in model.parameters()]
    restored = [fresh_opt.state[p]["momentum_buffer"] for p in fresh.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(momentum, restored))
    set_rng_state(info["extra"]["rng_state"][0])  # numpy state was stored as lists: still usable
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected_draws


def test_resumed_training_matches_uninterrupted_training(small_cfg, tmp_path):
    cfg = _cfg(small_cfg, alpha=0.25)
    torch.manual_seed(0)
    straight = build_model(cfg)
    opt = build_optimizer(cfg, straight)
    _steps(straight, opt, 2, seed=1)
    _steps(straight, opt, 2, seed=2)

    torch.manual_seed(0)
    first = build_model(cfg)
    opt1 = build_optimizer(cfg, first)
    _steps(first, opt1, 2, seed=1)
    path = cu.save_run_checkpoint(str(tmp_path), first, optimizer=opt1, epoch=1, iteration=2)
    torch.manual_seed(7)  # a different initialisation, overwritten by the checkpoint
    resumed = build_model(cfg)
    opt2 = build_optimizer(cfg, resumed)
    cu.load_checkpoint(path, resumed, optimizer=opt2)
    _steps(resumed, opt2, 2, seed=2)
    assert _same_state(straight, resumed)


def test_last_checkpoint_is_the_newest_complete_file(small_cfg, tmp_path):
    out = str(tmp_path)
    assert cu.find_last_checkpoint(out) is None
    model = build_model(_cfg(small_cfg, alpha=0.0))
    cu.save_run_checkpoint(out, model, epoch=1)
    second = cu.save_run_checkpoint(out, model, epoch=2)
    folder = cu.checkpoint_dir(out)
    # An interrupted write leaves only a temporary file behind.
    with open(os.path.join(folder, "checkpoint_epoch_00003.pyth.tmp"), "wb") as f:
        f.write(b"partial")
    assert cu.find_last_checkpoint(out) == second
    os.remove(os.path.join(folder, "last_checkpoint"))
    assert cu.find_last_checkpoint(out) == second
    with open(os.path.join(folder, "last_checkpoint"), "w") as f:
        f.write("checkpoint_epoch_00009.pyth\n")  # names a file that was deleted
    assert cu.find_last_checkpoint(out) == second
    assert [os.path.basename(p) for p in cu.list_checkpoints(out)] == [
        "checkpoint_epoch_00001.pyth", "checkpoint_epoch_00002.pyth"]


def _half_of_a_real_save(real_save):
    """A torch.save that writes the first half of the real bytes, then fails (disk full, preemption)."""
    def save(obj, f, *args, **kwargs):
        import io

        buf = io.BytesIO()
        real_save(obj, buf)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise OSError("No space left on device")
    return save


def test_a_save_that_fails_midway_keeps_the_previous_checkpoint(small_cfg, tmp_path, monkeypatch):
    out = str(tmp_path)
    cfg = _cfg(small_cfg)
    model = build_model(cfg)
    first = cu.save_run_checkpoint(out, model, epoch=1)
    monkeypatch.setattr(torch, "save", _half_of_a_real_save(torch.save))
    with pytest.raises(OSError, match="No space left"):
        cu.save_run_checkpoint(out, model, epoch=2)
    with pytest.raises(OSError):  # the same for a file outside a run folder, over an existing one
        cu.save_checkpoint(first, model, epoch=9)
    monkeypatch.undo()
    folder = cu.checkpoint_dir(out)
    assert sorted(os.listdir(folder)) == ["checkpoint_epoch_00001.pyth", "last_checkpoint"]  # no temporary left
    assert open(os.path.join(folder, "last_checkpoint")).read().strip() == "checkpoint_epoch_00001.pyth"
    assert cu.find_last_checkpoint(out) == first
    assert cu.load_checkpoint(first, build_model(cfg))["epoch"] == 1


def test_a_process_killed_during_a_save_leaves_the_previous_checkpoint(small_cfg, tmp_path):
    """kill -9 in the middle of writing: no cleanup runs, half a file sits on disk."""
    out = str(tmp_path)
    cfg = _cfg(small_cfg)
    model = build_model(cfg)
    first = cu.save_run_checkpoint(out, model, epoch=1)
    script = textwrap.dedent(f"""
        import io, os, signal, sys, torch
        sys.path.insert(0, {ROOT!r})
        from octvideo import checkpoint as cu
        from octvideo.config import get_cfg
        from octvideo.models import build_model
        real_save = torch.save
        def dying_save(obj, f, *a, **k):
            buf = io.BytesIO(); real_save(obj, buf)
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2]); f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        torch.save = dying_save
        cfg = get_cfg(); cfg.MODEL.WIDTH, cfg.MODEL.DEPTH = 8, 26
        cu.save_run_checkpoint({out!r}, build_model(cfg), epoch=2)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    folder = cu.checkpoint_dir(out)
    leftover = os.path.join(folder, "checkpoint_epoch_00002.pyth.tmp")
    assert os.path.getsize(leftover) > 0  # the half-written file is there, under its temporary name
    assert not os.path.exists(os.path.join(folder, "checkpoint_epoch_00002.pyth"))
    assert open(os.path.join(folder, "last_checkpoint")).read().strip() == "checkpoint_epoch_00001.pyth"
    assert cu.find_last_checkpoint(out) == first
    assert cu.load_checkpoint(first, build_model(cfg))["epoch"] == 1


def test_a_mismatch_lists_missing_unexpected_and_reshaped_tensors_in_one_error(small_cfg, tmp_path):
    path = cu.save_checkpoint(str(tmp_path / "oct.pyth"), build_model(_cfg(small_cfg, alpha=0.25)))
    with pytest.raises(CheckpointError) as e:
        cu.load_checkpoint(path, build_model(_cfg(small_cfg, alpha=0.0)))
    msg = str(e.value)
    assert msg.startswith(path) and "OCT.ALPHA 0.25 in the checkpoint, 0.0 in the model" in msg
    # The alpha 0 model has plain BNs where the octave one has .h/.l branches, fewer channels in h2h.
    assert "missing keys (" in msg and "res2.blocks.0.bn1.weight" in msg
    assert "unexpected keys (" in msg and "res2.blocks.0.bn1.l.weight" in msg
    assert "shape mismatches (" in msg
    assert "res2.blocks.0.conv1.h2h.weight: checkpoint (6, 8, 3, 1, 1), model (8, 8, 3, 1, 1)" in msg
    with pytest.raises(CheckpointError, match="MODEL.NUM_CLASSES 7 in the checkpoint, 5 in the model"):
        cu.load_checkpoint(path, build_model(_cfg(small_cfg, alpha=0.25, num_classes=5)))


def test_unreadable_files_give_errors_naming_them(small_cfg, tmp_path):
    model = build_model(_cfg(small_cfg))
    missing = str(tmp_path / "nope.pyth")
    with pytest.raises(FileNotFoundError, match="nope.pyth"):
        cu.load_checkpoint(missing, model)
    text = tmp_path / "notes.pyth"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="notes.pyth: not a readable torch checkpoint"):
        cu.load_checkpoint(str(text), model)
    odd = str(tmp_path / "odd.pth")
    torch.save({"encoder.weight": torch.zeros(2)}, odd)
    with pytest.raises(CheckpointError, match=r"odd.pth: unknown checkpoint layout .*supported: octvideo"):
        cu.load_checkpoint(odd, model)
    no_state = str(tmp_path / "meta.pth")
    torch.save({"epoch": 3, "note": "x"}, no_state)
    with pytest.raises(CheckpointError, match="meta.pth: no state dict found"):
        cu.load_checkpoint(no_state, model)


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.02])
def test_truncated_checkpoints_give_an_error_naming_the_file(small_cfg, tmp_path, keep):
    model = build_model(_cfg(small_cfg))
    good = cu.save_checkpoint(str(tmp_path / "full.pyth"), model, epoch=4)
    data = open(good, "rb").read()
    cut = tmp_path / "cut.pyth"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match=r"cut.pyth: not a readable torch checkpoint"):
        cu.load_checkpoint(str(cut), model)


class _Payload:
    """Unpickling this would create a file: the signature of a malicious checkpoint."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_checkpoints_with_code_are_refused_without_running_it(tmp_path):
    marker = str(tmp_path / "pwned")
    path = str(tmp_path / "evil.pth")
    torch.save({"model_state": {"stem.conv.weight": torch.zeros(1)}, "x": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="evil.pth: refused to unpickle"):
        cu.read_checkpoint(path)
    assert not os.path.exists(marker)


def test_training_started_from_a_checkpoint_starts_at_epoch_0_with_a_fresh_optimizer(small_cfg, tmp_path):
    """TRAIN.CHECKPOINT_FILE_PATH takes weights only (PySlowFast's trap: it resumed the file's epoch)."""
    from octvideo.config import load_config
    from octvideo.data.synthetic import make_synthetic_dataset
    from octvideo.engine import train

    data = make_synthetic_dataset(str(tmp_path / "data"), num_classes=2, videos_per_class=3, seed=1,
                                  width=36, height=32, num_frames=12)
    opts = {
        "DATA.PATH_TO_DATA_DIR": data["out_dir"], "OUTPUT_DIR": str(tmp_path / "run"),
        "MODEL.WIDTH": 8, "MODEL.DEPTH": 26, "MODEL.NUM_CLASSES": 2, "OCT.ALPHA": 0.25, "MODEL.DROPOUT_RATE": 0.0,
        "DATA.NUM_FRAMES": 4, "DATA.SAMPLING_RATE": 2, "DATA.TRAIN_JITTER_SCALES": "[32, 36]",
        "DATA.TRAIN_CROP_SIZE": 32, "DATA.TEST_CROP_SIZE": 32, "DATA_LOADER.NUM_WORKERS": 0,
        "TRAIN.BATCH_SIZE": 4, "TRAIN.EVAL_PERIOD": 100, "TEST.ENABLE": False,
        "SOLVER.MAX_EPOCH": 1, "SOLVER.WARMUP_EPOCHS": 0.0, "SOLVER.BASE_LR": 0.01,
    }
    cfg = load_config(os.path.join(ROOT, "configs/demo/synthetic_oct_i3d.yaml"),
                      [str(x) for kv in opts.items() for x in kv])
    # A checkpoint from the middle of another run: epoch 50 of it, and a momentum so large that
    # one step with it would move every weight by about BASE_LR * 1e4.
    torch.manual_seed(0)
    start = build_model(cfg)
    opt = build_optimizer(cfg, start)
    _steps(start, opt, 1, seed=3)
    for p in start.parameters():
        opt.state[p]["momentum_buffer"].fill_(1e4)
    src = cu.save_checkpoint(str(tmp_path / "other_run.pyth"), start, optimizer=opt, epoch=50, iteration=5000)
    cfg.TRAIN.CHECKPOINT_FILE_PATH = src
    cfg.TRAIN.CHECKPOINT_INFLATE = True  # an already-3D file is taken as it is, inflation or not
    train(cfg)
    written = cu.list_checkpoints(cfg.OUTPUT_DIR)
    assert [os.path.basename(p) for p in written] == ["checkpoint_epoch_00001.pyth"]
    after = torch.load(written[0], weights_only=True)
    assert (after["epoch"], after["iteration"]) == (1, 1)  # one epoch of one batch, counted from 0
    before = start.state_dict()
    moved = max((after["model_state"][k].float() - before[k].float()).abs().max().item()
                for k, _ in start.named_parameters())
    assert 0 < moved < 1.0, moved  # one ordinary SGD step, not one with the file's momentum
