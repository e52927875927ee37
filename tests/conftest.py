import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# Two cores: keep torch from oversubscribing when pytest runs.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def small_cfg():
    """A config for a reduced-width, reduced-depth model: same layout, tiny cost."""
    from octvideo.config import get_cfg

    def make(arch="i3d", alpha=0.25, width=8, depth=26, num_classes=7):
        cfg = get_cfg()
        cfg.MODEL.ARCH, cfg.OCT.ALPHA = arch, alpha
        cfg.MODEL.WIDTH, cfg.MODEL.DEPTH, cfg.MODEL.NUM_CLASSES = width, depth, num_classes
        return cfg

    return make
