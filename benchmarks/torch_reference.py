"""The same network trained in PyTorch (batches, Adam, autograd): a reference for the trainer."""

from __future__ import annotations

import time

import numpy as np


def time_to_full(
    seed: int, max_steps: int = 5000, batch: int = 32, check_every: int = 10
) -> tuple[float, int, bool]:
    """Seconds and updates until all 16,384 pairs a, b < 128 add exactly."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    hidden, bits = 16, 8
    w_i = torch.nn.Parameter(torch.empty(hidden, 2, dtype=torch.float64).uniform_(-1, 1))
    w_h = torch.nn.Parameter(torch.empty(hidden, hidden, dtype=torch.float64).uniform_(-1, 1))
    w_o = torch.nn.Parameter(torch.empty(1, hidden, dtype=torch.float64).uniform_(-1, 1))
    optimizer = torch.optim.Adam([w_i, w_h, w_o], lr=0.1)
    shifts = torch.arange(bits)

    def tensors(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.stack([(a[None] >> shifts[:, None]) & 1, (b[None] >> shifts[:, None]) & 1], -1)
        y = ((a + b)[None] >> shifts[:, None]) & 1
        return x.double(), y.double()

    def forward(x: torch.Tensor) -> torch.Tensor:
        h = torch.zeros(x.shape[1], hidden, dtype=torch.float64)
        out = []
        for t in range(bits):
            h = torch.sigmoid(h @ w_h.T + x[t] @ w_i.T)
            out.append(torch.sigmoid(h @ w_o.T)[:, 0])
        return torch.stack(out)

    grid = torch.arange(128)
    all_x, all_y = tensors(grid.repeat_interleave(128), grid.repeat(128))
    started = time.perf_counter()
    for step in range(1, max_steps + 1):
        a = torch.from_numpy(rng.integers(0, 128, batch))
        b = torch.from_numpy(rng.integers(0, 128, batch))
        x, y = tensors(a, b)
        loss = 0.5 * ((forward(x) - y) ** 2).sum() / batch
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % check_every == 0:
            with torch.no_grad():
                exact = ((forward(all_x) > 0.5).double() == all_y).all(dim=0).double().mean()
            if exact.item() == 1.0:
                return time.perf_counter() - started, step, True
    return time.perf_counter() - started, max_steps, False
