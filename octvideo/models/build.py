"""``build_model(cfg)``: the one entry point from a config to a network."""
import torch.nn as nn

from .arch import get_arch
from .resnet import ResNet


def build_model(cfg) -> nn.Module:
    """Build the network described by ``MODEL.*`` and ``OCT.ALPHA`` (see configs/ and defaults.py)."""
    arch = get_arch(cfg.MODEL.ARCH)
    model = ResNet(
        arch,
        depth=cfg.MODEL.DEPTH,
        alpha=float(cfg.OCT.ALPHA),
        width=cfg.MODEL.WIDTH,
        num_classes=cfg.MODEL.NUM_CLASSES,
        dropout_rate=cfg.MODEL.DROPOUT_RATE,
        in_channels=cfg.DATA.INPUT_CHANNEL_NUM,
    )
    return model
