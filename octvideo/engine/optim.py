"""SGD with per-parameter weight decay and the per-iteration learning-rate schedule."""
import math
from typing import List

import torch
import torch.nn as nn


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """SGD (momentum, optional Nesterov); no weight decay on batch-norm parameters and biases."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            is_norm = isinstance(module, nn.modules.batchnorm._NormBase) or isinstance(module, (nn.GroupNorm, nn.LayerNorm))
            (no_decay if is_norm or name == "bias" else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.SOLVER.WEIGHT_DECAY}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": cfg.SOLVER.BN_WEIGHT_DECAY})
    return torch.optim.SGD(
        groups, lr=cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM,
        nesterov=cfg.SOLVER.NESTEROV and cfg.SOLVER.MOMENTUM > 0,
    )


def lr_at(cfg, epoch: float) -> float:
    """Learning rate at a fractional epoch: linear warm-up, then cosine or steps."""
    s = cfg.SOLVER
    if s.LR_POLICY == "cosine":
        end = s.COSINE_END_LR * s.BASE_LR
        lr = end + (s.BASE_LR - end) * (1 + math.cos(math.pi * min(epoch, s.MAX_EPOCH) / s.MAX_EPOCH)) / 2
    elif s.LR_POLICY == "steps":
        if len(s.STEPS) != len(s.LRS) or not s.STEPS or s.STEPS[0] != 0:
            raise ValueError(f"SOLVER.STEPS {s.STEPS} and SOLVER.LRS {s.LRS} must have equal length and start at epoch 0")
        factor = [f for start, f in zip(s.STEPS, s.LRS) if epoch >= start][-1]
        lr = s.BASE_LR * factor
    else:
        raise ValueError(f"SOLVER.LR_POLICY must be 'cosine' or 'steps'; got {s.LR_POLICY!r}")
    if epoch < s.WARMUP_EPOCHS:
        target = lr_at_no_warmup(cfg, s.WARMUP_EPOCHS)
        lr = s.WARMUP_START_LR + (target - s.WARMUP_START_LR) * epoch / s.WARMUP_EPOCHS
    return lr


def lr_at_no_warmup(cfg, epoch: float) -> float:
    warm = cfg.SOLVER.WARMUP_EPOCHS
    cfg.defrost()
    cfg.SOLVER.WARMUP_EPOCHS = 0.0
    try:
        return lr_at(cfg, epoch)
    finally:
        cfg.SOLVER.WARMUP_EPOCHS = warm


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr
