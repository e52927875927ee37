"""Optimizer parameter groups, learning-rate schedule, non-finite loss, metrics."""
import logging
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from octvideo.config import get_cfg
from octvideo.engine.metrics import confusion_matrix, mean_class_accuracy, topk_correct
from octvideo.engine.optim import build_optimizer, lr_at
from octvideo.engine.trainer import NonFiniteLossError, make_scaler, train_one_epoch
from octvideo.models import build_model


def test_no_weight_decay_on_batchnorm_and_biases(small_cfg):
    cfg = small_cfg("i3d_nl", 0.25)
    model = build_model(cfg)
    opt = build_optimizer(cfg, model)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == cfg.SOLVER.WEIGHT_DECAY and no_decay["weight_decay"] == 0.0
    bn_and_bias = {id(p) for n, p in model.named_parameters() if n.endswith(".bias") or ".bn" in n or n.startswith("stem.bn")}
    assert {id(p) for p in no_decay["params"]} == bn_and_bias
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert opt.defaults["nesterov"] is True


def test_cosine_with_warmup():
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_EPOCH, cfg.SOLVER.WARMUP_EPOCHS, cfg.SOLVER.WARMUP_START_LR = 0.4, 10, 2.0, 0.04
    cosine = lambda e: 0.4 * (1 + math.cos(math.pi * e / 10)) / 2  # noqa: E731
    assert lr_at(cfg, 0.0) == pytest.approx(0.04)
    assert lr_at(cfg, 1.0) == pytest.approx(0.04 + (cosine(2.0) - 0.04) / 2)
    assert lr_at(cfg, 2.0) == pytest.approx(cosine(2.0))
    assert lr_at(cfg, 5.0) == pytest.approx(0.2)
    assert lr_at(cfg, 10.0) == pytest.approx(0.0, abs=1e-12)


def test_steps_schedule():
    cfg = get_cfg()
    cfg.SOLVER.LR_POLICY, cfg.SOLVER.BASE_LR = "steps", 0.01
    cfg.SOLVER.STEPS, cfg.SOLVER.LRS, cfg.SOLVER.WARMUP_EPOCHS = [0, 40, 67], [1.0, 0.1, 0.01], 0.0
    assert [lr_at(cfg, e) for e in (0, 39.9, 40, 66.9, 67, 79)] == pytest.approx([0.01, 0.01, 0.001, 0.001, 1e-4, 1e-4])
    cfg.SOLVER.LRS = [1.0]
    with pytest.raises(ValueError, match="SOLVER.STEPS"):
        lr_at(cfg, 1)


def test_non_finite_loss_stops_naming_the_iteration(small_cfg):
    cfg = small_cfg("c2d", 0.0)
    model = build_model(cfg)
    batches = [{"inputs": torch.randn(2, 3, 2, 32, 32), "labels": torch.tensor([0, 1]), "indices": torch.tensor([0, 1])} for _ in range(3)]
    batches[2]["inputs"][0, 0, 0, 0, 0] = float("nan")
    opt = build_optimizer(cfg, model)
    with pytest.raises(NonFiniteLossError, match="iteration 3"):
        train_one_epoch(model, batches, opt, make_scaler(cfg, torch.device("cpu")), cfg, 0, torch.device("cpu"), logging.getLogger("t"))


def test_metrics():
    scores = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 1, 0])
    assert topk_correct(scores, labels, (1, 2, 5)) == {1: 1, 2: 2, 5: 3}
    cm = confusion_matrix(np.array([1, 0, 2, 0]), np.array([1, 2, 0, 0]), 3)
    assert cm.tolist() == [[1, 0, 1], [0, 1, 0], [1, 0, 0]]
    assert mean_class_accuracy(cm) == pytest.approx((0.5 + 1.0 + 0.0) / 3)


@pytest.mark.parametrize("seed", [0, 2])
def test_bf16_autocast_on_cpu_trains(small_cfg, seed):
    """TRAIN.MIXED_PRECISION bf16 runs the convolutions in bfloat16 on the CPU and still learns.

    8-frame clips, as the published models: with 2-4 frames PyTorch's CPU bf16 Conv3d weight
    gradient is wrong for temporal kernels larger than the clip (see autocast_context).
    """
    from octvideo.engine.trainer import autocast_context

    cfg = small_cfg("i3d", 0.25)
    cfg.TRAIN.MIXED_PRECISION, cfg.MODEL.DROPOUT_RATE = "bf16", 0.0
    cfg.SOLVER.BASE_LR, cfg.SOLVER.WARMUP_EPOCHS, cfg.SOLVER.MAX_EPOCH = 0.05, 0.0, 100
    torch.manual_seed(seed)  # the initialisation, independent of the tests run before
    model = build_model(cfg)
    cpu = torch.device("cpu")
    with autocast_context(cfg, cpu):
        assert model.stem.conv(torch.randn(1, 3, 8, 16, 16)).dtype == torch.bfloat16
    g = torch.Generator().manual_seed(0)
    batch = {"inputs": torch.randn(4, 3, 8, 24, 24, generator=g), "labels": torch.tensor([0, 1, 2, 3]),
             "indices": torch.arange(4)}
    opt = build_optimizer(cfg, model)
    losses = [train_one_epoch(model, [batch], opt, make_scaler(cfg, cpu), cfg, e, cpu, logging.getLogger("t"))["loss"]
              for e in range(8)]
    # 8 steps on one batch: the loss oscillates for the first few (BN in training mode, LR 0.05)
    # and then collapses; seeds 0-5, bf16 and fp32 alike, end below 0.05 from ~2.0.
    assert all(math.isfinite(v) for v in losses) and losses[-1] < 0.25 * losses[0]


def test_multi_view_scores_shrink_the_view_batch_on_out_of_memory(small_cfg):
    """The 30 views go through the model in chunks; a chunk that does not fit is halved and retried,
    and the averaged softmax is the same as with everything at once."""
    from octvideo.engine.evaluator import video_scores

    cfg = small_cfg("i3d", 0.25)
    model = build_model(cfg).eval()
    calls = []

    class SmallMemory(nn.Module):
        def forward(self, x):
            calls.append(x.shape[0])
            if x.shape[0] > 4:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return model(x)

    # The test loader's uint8 pixels (B, V, T, 3, H, W); the model sees (x / 255 - mean) / std as (C, T, H, W).
    frames = torch.randint(0, 256, (2, 6, 4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mean = torch.tensor(cfg.DATA.MEAN).view(3, 1, 1, 1)
    std = torch.tensor(cfg.DATA.STD).view(3, 1, 1, 1)
    views = (frames.flatten(0, 1).transpose(1, 2).float() / 255 - mean) / std
    cpu = torch.device("cpu")
    with torch.no_grad():
        expected = model(views).softmax(1).reshape(2, 6, -1).mean(1)
    got = video_scores(SmallMemory(), frames, 0, cfg, cpu)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert calls[:3] == [12, 6, 3] and sum(c for c in calls if c <= 4) == 12
    assert got.sum(1).sub(1).abs().max() < 1e-5
    with pytest.raises(ValueError, match=r"uint8 views.*torch.float32"):
        video_scores(model, views.view(2, 6, 3, 4, 32, 32), 0, cfg, cpu)  # float views: a clear error


def test_unlabelled_test_videos_are_predicted_but_not_scored():
    """Kinetics-600's test.csv has no labels (-1): such videos get predictions, metrics skip them."""
    from octvideo.engine.evaluator import summarise

    names = ["a", "b", "c"]
    part = {"indices": [0, 1, 2, 3], "labels": [0, 1, -1, 2], "failed": [{"index": 4, "path": "e.mp4", "error": "x"}],
            "scores": [np.array(s) for s in ([0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8], [0.1, 0.2, 0.7])]}
    r = summarise([part], names, ["a.mp4", "b.mp4", "c.mp4", "d.mp4", "e.mp4"])
    assert r["num_videos"] == 4 and r["num_scored"] == 3 and r["num_failed"] == 1
    assert r["top1"] == pytest.approx(200 / 3) and r["top5"] == 100.0
    assert r["confusion_matrix"].sum() == 3
    assert r["predictions"][2]["label"] is None and r["predictions"][2]["top5"][0][0] == "c"
