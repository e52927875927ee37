"""Checkpoint files: round trip, resume, last complete checkpoint, safe reading, clear errors."""
import os
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from octvideo import checkpoint as cu
from octvideo.checkpoint import CheckpointError
from octvideo.engine.optim import build_optimizer
from octvideo.engine.trainer import rng_state, set_rng_state
from octvideo.models import build_model


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


def test_run_checkpoint_round_trip_restores_weights_optimizer_and_metadata(small_cfg, tmp_path):
    cfg = _cfg(small_cfg)
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = build_optimizer(cfg, model)
    _steps(model, opt, 2, seed=1)
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    state = rng_state()
    expected_draws = (random.random(), np.random.rand(), torch.rand(1).item())
    path = cu.save_run_checkpoint(
        str(tmp_path), model, optimizer=opt, epoch=3, iteration=42, cfg=cfg, class_names=["a", "b"],
        extra={"rng_state": {0: state}},
    )
    assert os.path.basename(path) == "checkpoint_epoch_00003.pyth"
    assert cu.find_last_checkpoint(str(tmp_path)) == path

    torch.manual_seed(1)
    fresh = build_model(cfg)
    fresh_opt = build_optimizer(cfg, fresh)
    info = cu.load_checkpoint(path, fresh, optimizer=fresh_opt)
    assert _same_state(model, fresh)
    assert (info["epoch"], info["iteration"], info["class_names"], info["format"]) == (3, 42, ["a", "b"], "octvideo")
    assert info["model_info"]["alpha"] == cfg.OCT.ALPHA and "OCT:" in info["cfg"]
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


def test_failed_save_keeps_the_previous_checkpoint(small_cfg, tmp_path, monkeypatch):
    out = str(tmp_path)
    model = build_model(_cfg(small_cfg))
    first = cu.save_run_checkpoint(out, model, epoch=1)

    def dies_midway(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(OSError):
        cu.save_run_checkpoint(out, model, epoch=2)
    monkeypatch.undo()
    assert not os.path.exists(os.path.join(cu.checkpoint_dir(out), "checkpoint_epoch_00002.pyth"))
    assert cu.find_last_checkpoint(out) == first
    assert cu.load_checkpoint(first, build_model(_cfg(small_cfg)))["epoch"] == 1


def test_loading_into_another_model_names_the_file_and_the_config_keys(small_cfg, tmp_path):
    path = cu.save_checkpoint(str(tmp_path / "oct.pyth"), build_model(_cfg(small_cfg, alpha=0.25)))
    with pytest.raises(CheckpointError) as e:
        cu.load_checkpoint(path, build_model(_cfg(small_cfg, alpha=0.0)))
    assert path in str(e.value) and "OCT.ALPHA 0.25 in the checkpoint, 0.0 in the model" in str(e.value)
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
