"""The weight network f_theta and the batch normalisation of its outputs (spec section 1.2-1.3)."""
from __future__ import annotations

import torch
from torch import nn


class WeightNet(nn.Module):
    """MLP 1 -> hidden -> 1 with ReLU; output bias starts at 0.1 as in the authors' code."""

    def __init__(self, hidden: int = 100, detach_mean: bool = False):
        super().__init__()
        # Normalising by an attached batch mean lets the meta-gradient see that only relative
        # weights matter; the authors' code detaches it (--weight-norm).
        self.detach_mean = detach_mean
        self.net = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        nn.init.constant_(self.net[2].bias, 0.1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.unsqueeze(-1)).squeeze(-1)


def zscore(losses: torch.Tensor) -> torch.Tensor:
    """Batch z-score of detached losses; 0 for a batch of one."""
    l = losses.detach()
    if l.numel() < 2:
        return torch.zeros_like(l)
    return (l - l.mean()) / l.std().clamp_min(1e-6)


def normalise(s: torch.Tensor, w_min: float, w_max: float, detach_mean: bool = False) -> torch.Tensor:
    """w = clip(s / mean_B(s), w_min, w_max)."""
    mean = s.mean()
    return (s / (mean.detach() if detach_mean else mean)).clamp(w_min, w_max)


def sample_weights(wnet: WeightNet, z: torch.Tensor, w_min: float = 0.1, w_max: float = 8.0):
    """w_i = clip(sigmoid(f(z_i)) / mean_B sigmoid(f(z)), w_min, w_max)."""
    return normalise(torch.sigmoid(wnet(z)), w_min, w_max, getattr(wnet, "detach_mean", False))


@torch.no_grad()
def weight_curve(wnet: WeightNet, lo: float = -3.0, hi: float = 3.0, n: int = 61) -> dict:
    """The learned curve sigmoid(f(z)) on a grid, for the output directory and plots."""
    z = torch.linspace(lo, hi, n, device=next(wnet.parameters()).device)
    return {"z": z.tolist(), "sigmoid_f": torch.sigmoid(wnet(z)).tolist()}
