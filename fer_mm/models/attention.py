"""Pre-norm transformer blocks over token sequences, self- or cross-attention.

Written out (linear projections, a softmax over scaled dot products) rather than taken from
``nn.MultiheadAttention``, whose fast path in evaluation mode is a fused kernel: the same
arithmetic in training, inference and the ONNX export.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class AttentionBlock(nn.Module):
    """``x + attention(norm(x), norm(context))``, then ``x + MLP(norm(x))``.

    With ``context`` None it is self-attention (a temporal transformer's layer); with a second
    sequence it is cross-attention (one modality's tokens querying the other's).

    Args:
        dim: token width (of ``x`` and ``context``).
        heads: attention heads; ``dim`` must divide by it.
        mlp_ratio: the MLP's hidden width over ``dim``.
        dropout: on the attention weights and in the MLP.
        cross: whether it attends to another sequence (which then has its own layer norm).
    """

    def __init__(self, dim: int, heads: int = 4, mlp_ratio: float = 2.0, dropout: float = 0.1, cross: bool = False):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} does not divide into {heads} heads")
        self.heads = heads
        self.norm_q, self.norm_mlp = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim) if cross else None
        self.q, self.kv, self.out = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(dropout)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim),
                                 nn.Dropout(dropout))

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``x`` ``[B, N, dim]`` attends to ``context`` ``[B, M, dim]`` (itself when None)."""
        q_in = self.norm_q(x)
        if (context is None) != (self.norm_kv is None):
            raise ValueError("a cross-attention block takes a context, a self-attention block none")
        kv_in = q_in if context is None else self.norm_kv(context)
        b, n, d = x.shape
        h = self.heads
        q = self.q(q_in).reshape(b, n, h, d // h).transpose(1, 2)
        k, v = self.kv(kv_in).reshape(b, -1, 2, h, d // h).permute(2, 0, 3, 1, 4)
        weights = self.attn_drop((q @ k.transpose(-2, -1) / math.sqrt(d // h)).softmax(-1))
        x = x + self.out((weights @ v).transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm_mlp(x))


def positions(n: int, dim: int, device: torch.device) -> Tensor:
    """Sinusoidal positions ``[n, dim]`` (Vaswani et al. 2017): any sequence length, no parameters."""
    pos = torch.arange(n, dtype=torch.float32, device=device)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10_000.0) / dim))
    table = torch.zeros(n, dim, device=device)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return table
