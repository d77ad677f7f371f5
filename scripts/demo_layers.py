"""Forward + backward through every drop layer on one random batch, with a short table.

For each method: how many (sample, channel) maps it changed, the range of the per-map factors,
and its forward + backward time next to the identity's. `make demo` runs this until the
training demo exists.
"""

from __future__ import annotations

import time

import torch

from selectscale.drop import build_drop

SETTINGS = [  # the paper's typical values (Table 1 captions; Selectout: Figure 3-style)
    ("none", {}),
    ("dropout", dict(retain_rate=0.9)),
    ("spatial_dropout", dict(retain_rate=0.9)),
    ("spatial_scale", dict(retain_rate=0.4)),
    ("selectout", dict(top_rate=0.2, retain_rate=0.9)),
    ("selectscale", dict(top_rate=0.2, retain_rate=0.1)),
]


def describe(name: str, kwargs: dict, x: torch.Tensor) -> str:
    layer = build_drop(name, **kwargs).train()
    torch.manual_seed(0)
    x = x.detach().requires_grad_()
    start = time.perf_counter()
    y = layer(x)
    y.square().sum().backward()
    milliseconds = (time.perf_counter() - start) * 1e3
    assert x.grad is not None and torch.isfinite(x.grad).all()
    ratio = (y / x).detach()
    per_map = ratio.flatten(2).mean(-1)
    changed = (ratio.flatten(2) != 1).any(-1).float().mean().item()
    zeroed = (y.detach().flatten(2) == 0).all(-1).float().mean().item()
    args = ", ".join(f"{k}={v}" for k, v in kwargs.items()) or "-"
    return (f"| {name:15s} | {args:30s} | {100 * changed:6.1f}% | {100 * zeroed:5.1f}% | "
            f"[{per_map.min().item():.3f}, {per_map.max().item():.3f}]   | {milliseconds:10.1f} |")


def main() -> None:
    torch.manual_seed(0)
    x = torch.rand(32, 64, 16, 16) + 0.1  # positive, so y / x recovers each unit's factor
    print(f"Drop layers on a random {tuple(x.shape)} batch, training mode, torch {torch.__version__}\n")
    print("| method          | arguments                      | changed | zeroed | map factor range | fwd+bwd ms |")
    print("|-----------------|--------------------------------|---------|--------|------------------|------------|")
    for name, kwargs in SETTINGS:
        print(describe(name, kwargs, x))
    print("\n'changed': (sample, channel) maps with any unit multiplied by a factor other than 1;")
    print("'zeroed': maps set entirely to zero; factor range: of each map's mean factor.")


if __name__ == "__main__":
    main()
