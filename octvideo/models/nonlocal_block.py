"""Non-local blocks (Wang et al. 2018, embedded Gaussian) for plain and octave features.

Vanilla block, as the published I3D+NL (PySlowFast / pytorchvideo)::

    theta = Conv1x1(x)                     C -> C/2, at every position (N = T*H*W)
    phi, g = Conv1x1(maxpool_1x2x2(x))     C -> C/2, at N/4 positions
    y = softmax(theta^T phi / sqrt(C/2)) g
    x + BN(Conv1x1(y))                     C/2 -> C, final BN gamma initialised to 0

Octave block (our design, see :class:`OctNonLocal3d`): the attention runs on the low
octave's grid.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from octvideo.layers import OctTensor, is_octave, split_channels, upsample_to
from octvideo.layers.octave import spatial_pool2x


def _attention(theta: torch.Tensor, phi: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """theta (N, C', Pq), phi/g (N, C', Pk) -> (N, C', Pq) embedded-Gaussian attention."""
    inner = theta.shape[1]
    affinity = torch.einsum("ncq,nck->nqk", theta, phi) * (inner ** -0.5)
    affinity = affinity.softmax(dim=-1)
    return torch.einsum("nqk,nck->ncq", affinity, g)


class NonLocal3d(nn.Module):
    """Vanilla Non-local block on a plain (N, C, T, H, W) tensor."""

    def __init__(self, channels: int, inner_channels: int = 0):
        super().__init__()
        inner = inner_channels or channels // 2
        self.theta = nn.Conv3d(channels, inner, 1)
        self.phi = nn.Conv3d(channels, inner, 1)
        self.g = nn.Conv3d(channels, inner, 1)
        self.pool = nn.MaxPool3d((1, 2, 2), (1, 2, 2))
        self.out = nn.Conv3d(inner, channels, 1)
        self.bn = nn.BatchNorm3d(channels)
        self.bn.zero_init = True  # keeps the block an identity at init (and after inflation)
        nn.init.zeros_(self.bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, t, h, w = x.shape
        theta = self.theta(x).flatten(2)
        pooled = self.pool(x)
        y = _attention(theta, self.phi(pooled).flatten(2), self.g(pooled).flatten(2))
        y = y.view(n, -1, t, h, w)
        return x + self.bn(self.out(y))


class OctNonLocal3d(nn.Module):
    """Non-local block for an octave pair ``(high, low)``: attention on the low octave's grid.

    Why this design: the vanilla block already computes its keys and values on a 1x2x2
    max-pooled grid, i.e. at exactly the low octave's resolution, and what it adds back
    is a global, spatially smooth context -- low-frequency content by the paper's own
    argument (§3.1). So we build one full-width feature on that grid,
    ``z = concat(pool2x(high), low)`` (C channels, the same 2x2 average pool that
    OctConv uses to go from high to low), run the vanilla embedded-Gaussian block on it
    (queries, keys and values all at T x H/2 x W/2), and split the C-channel answer back
    into the two octaves: the low part is added to ``low``, the high part is nearest
    up-sampled and added to ``high``. Every channel of both octaves takes part in the
    attention (unlike running it on the high branch only), parameters are the vanilla
    block's (theta/phi/g/out: C <-> C/2), so a 2D/3D vanilla checkpoint maps onto it, and
    the queries and the output projection cost a quarter of the vanilla block's.
    With a zero-initialised final BN the block starts as the identity, as the vanilla one.
    """

    def __init__(self, channels: int, alpha: float, inner_channels: int = 0, channel_multiple: int = 1):
        super().__init__()
        self.high_channels, self.low_channels = split_channels(channels, alpha, multiple=channel_multiple)
        inner = inner_channels or channels // 2
        self.theta = nn.Conv3d(channels, inner, 1)
        self.phi = nn.Conv3d(channels, inner, 1)
        self.g = nn.Conv3d(channels, inner, 1)
        self.out = nn.Conv3d(inner, channels, 1)
        self.bn = nn.BatchNorm3d(channels)
        self.bn.zero_init = True
        nn.init.zeros_(self.bn.weight)

    def forward(self, x: OctTensor) -> OctTensor:
        if not is_octave(x):
            raise ValueError("OctNonLocal3d expects a (high, low) pair")
        high, low = x
        z = torch.cat([spatial_pool2x(high), low], dim=1)
        n, _, t, h, w = z.shape
        flat = lambda conv: conv(z).flatten(2)  # noqa: E731
        y = _attention(flat(self.theta), flat(self.phi), flat(self.g)).view(n, -1, t, h, w)
        p = self.bn(self.out(y))
        p_high, p_low = p.split([self.high_channels, self.low_channels], dim=1)
        return high + upsample_to(p_high, high.shape[-2:]), low + p_low


def make_nonlocal(channels: int, alpha: float, channel_multiple: int = 1) -> nn.Module:
    return NonLocal3d(channels) if alpha == 0 else OctNonLocal3d(channels, alpha, channel_multiple=channel_multiple)
