"""DDP under gloo: 2 processes x batch B give the same parameters as 1 process x batch 2B.

Batch norm: per-process batch statistics over B clips differ from statistics over 2B clips, so
the two runs are only mathematically equal with BN layers using their running statistics
(eval-mode BN, as when fine-tuning with frozen BN). Dropout is 0 for the same reason (each
process draws its own masks). Everything else -- the loss average, gradient all-reduce,
weight decay, momentum, the per-iteration learning rate -- is the real training step.
"""
import logging
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from octvideo.config import get_cfg
from octvideo.engine import distributed as du
from octvideo.engine.optim import build_optimizer
from octvideo.engine.trainer import make_scaler, train_one_epoch
from octvideo.models import build_model

N_CLIPS, B = 16, 2


class Clips(Dataset):
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(N_CLIPS, 3, 4, 32, 32, generator=g)
        self.y = torch.randint(0, 5, (N_CLIPS,), generator=g)

    def __len__(self):
        return N_CLIPS

    def __getitem__(self, i):
        return {"inputs": self.x[i], "labels": self.y[i], "indices": i}


def make_cfg():
    cfg = get_cfg()
    cfg.MODEL.ARCH, cfg.OCT.ALPHA, cfg.MODEL.WIDTH, cfg.MODEL.DEPTH = "i3d", 0.25, 8, 26
    cfg.MODEL.NUM_CLASSES, cfg.MODEL.DROPOUT_RATE = 5, 0.0
    cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_EPOCH, cfg.SOLVER.WARMUP_EPOCHS = 0.002, 2, 0.5
    cfg.SOLVER.WARMUP_START_LR = 0.0005
    cfg.LOG_PERIOD = 1000
    return cfg


def run(rank, world, init_file, out_file, per_process_batch):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    cfg = make_cfg()
    model = build_model(cfg)  # same init on every process (same seed); DDP also broadcasts it
    ddp = nn.parallel.DistributedDataParallel(model)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    optimizer = build_optimizer(cfg, model)
    sampler = DistributedSampler(Clips(), num_replicas=world, rank=rank, shuffle=True, seed=3, drop_last=True)
    loader = DataLoader(Clips(), batch_size=per_process_batch, sampler=sampler, drop_last=True)
    logger = logging.getLogger("ddp-test")
    for epoch in range(2):
        sampler.set_epoch(epoch)
        ddp.train()
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        _patched_train_epoch(ddp, loader, optimizer, cfg, epoch, logger)
    if rank == 0:
        torch.save(model.state_dict(), out_file)
    dist.destroy_process_group()


def _patched_train_epoch(ddp, loader, optimizer, cfg, epoch, logger):
    # train_one_epoch calls model.train(); keep BN frozen by re-freezing in a forward pre-hook.
    def freeze(module, args):
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()

    handle = ddp.module.register_forward_pre_hook(freeze)
    try:
        train_one_epoch(ddp, loader, optimizer, make_scaler(cfg, torch.device("cpu")), cfg, epoch, torch.device("cpu"), logger)
    finally:
        handle.remove()


def test_two_gloo_processes_equal_one_process_with_double_batch(tmp_path):
    results = {}
    for world, batch in ((2, B), (1, 2 * B)):
        out = tmp_path / f"w{world}.pt"
        init = tmp_path / f"init{world}"
        mp.spawn(run, args=(world, str(init), str(out), batch), nprocs=world, join=True)
        results[world] = torch.load(out)
    one, two = results[1], results[2]
    assert one.keys() == two.keys()
    init = build_model(make_cfg()).state_dict()
    moved = 0
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-6, msg=k)
        moved += int(not torch.equal(one[k], init[k])) if one[k].is_floating_point() else 0
    assert moved > 10  # training really changed the weights


def test_shutdown_leaves_a_process_group_the_caller_created(tmp_path, monkeypatch):
    """A script that sets up its own process group before calling octvideo's train/test keeps it:
    octvideo only destroys a group it joined itself."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        assert du.init_from_env("cpu") == torch.device("cpu")
        du.shutdown()
        assert dist.is_initialized()
        assert du.all_reduce_sum(torch.ones(1)).item() == 1.0  # still usable
    finally:
        dist.destroy_process_group()
    du.shutdown()  # no group at all: nothing to do, no error
    assert not dist.is_initialized()
