"""The content ("text") encoder's transformer: relative-position multi-head attention (VITS style).

Names follow RVC's `attentions.py`: `attn_layers`, `norm_layers_1`, `ffn_layers`, `norm_layers_2`,
`conv_q/k/v/o`, `emb_rel_k/v`, `conv_1/2`.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .modules import LayerNorm


class MultiHeadAttention(nn.Module):
    """Self-attention with learned relative-position keys/values within ±`window_size` frames.

    score(i, j) = q_i·k_j/√d + (q_i/√d)·Ek[j−i+w] for |j−i| ≤ w; out_i = Σ_j p_ij (v_j + Ev[j−i+w]·[|j−i| ≤ w]).
    The relative tables are shared across heads (`heads_share=True` in VITS).
    forward(x [B, C, T], c [B, C, T], attn_mask [B, 1, T, T]) -> [B, C_out, T]
    """

    def __init__(self, channels: int, out_channels: int, n_heads: int, p_dropout: float = 0.0, window_size: int = 10):
        super().__init__()
        if channels % n_heads:
            raise ValueError(f"channels ({channels}) must be divisible by n_heads ({n_heads})")
        self.n_heads = n_heads
        self.k_channels = channels // n_heads
        self.window_size = window_size
        self.conv_q = nn.Conv1d(channels, channels, 1)
        self.conv_k = nn.Conv1d(channels, channels, 1)
        self.conv_v = nn.Conv1d(channels, channels, 1)
        self.conv_o = nn.Conv1d(channels, out_channels, 1)
        self.drop = nn.Dropout(p_dropout)
        rel_stddev = self.k_channels**-0.5
        self.emb_rel_k = nn.Parameter(torch.randn(1, 2 * window_size + 1, self.k_channels) * rel_stddev)
        self.emb_rel_v = nn.Parameter(torch.randn(1, 2 * window_size + 1, self.k_channels) * rel_stddev)
        for conv in (self.conv_q, self.conv_k, self.conv_v):
            nn.init.xavier_uniform_(conv.weight)

    def forward(self, x: torch.Tensor, c: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self.conv_q(x), self.conv_k(c), self.conv_v(c)
        b, d, t = q.shape
        # [B, C, T] -> [B, heads, T, k_channels]
        q, k, v = (y.view(b, self.n_heads, self.k_channels, -1).transpose(2, 3) for y in (q, k, v))
        q = q / math.sqrt(self.k_channels)
        scores = torch.matmul(q, k.transpose(-2, -1))

        w = self.window_size
        positions = torch.arange(t, device=x.device)
        offsets = positions.unsqueeze(0) - positions.unsqueeze(1)
        in_window = (offsets.abs() <= w).to(q.dtype)  # [T, T], offsets[i, j] = j - i
        rel_index = (offsets.clamp(-w, w) + w).expand(b, self.n_heads, t, t)
        rel_logits = torch.matmul(q, self.emb_rel_k[0].transpose(0, 1))  # [B, h, T, 2w+1]
        scores = scores + torch.gather(rel_logits, 3, rel_index) * in_window

        if attn_mask is not None:
            scores = scores.masked_fill(attn_mask == 0, -1e4)  # RVC uses -1e4, not -inf
        p_attn = self.drop(F.softmax(scores, dim=-1))
        output = torch.matmul(p_attn, v)
        # Attention mass per relative offset r (p_rel[i, r] = p_attn[i, i + r - w], 0 where that column does not
        # exist), then the relative value table. A [T, 2w+1] gather: the same values as RVC's [T, T] scatter-add
        # (one term per slot), cheaper, and exportable to ONNX in fp16.
        columns = positions.unsqueeze(1) + torch.arange(-w, w + 1, device=x.device).unsqueeze(0)  # [T, 2w+1]
        # positions[-1] (= T - 1), not the Python int t, keeps the bound symbolic when traced for ONNX
        exists = (columns >= 0) & (columns <= positions[-1])
        columns = torch.where(exists, columns, torch.zeros_like(columns)).expand(b, self.n_heads, t, 2 * w + 1)
        p_rel = torch.gather(p_attn, 3, columns) * exists.to(p_attn.dtype)
        output = output + torch.matmul(p_rel, self.emb_rel_v[0])
        output = output.transpose(2, 3).contiguous().view(b, d, t)
        return self.conv_o(output)


class FFN(nn.Module):
    """Position-wise conv feed-forward with 'same' padding and ReLU. forward(x [B,C,T], x_mask [B,1,T])."""

    def __init__(self, in_channels: int, out_channels: int, filter_channels: int, kernel_size: int, p_dropout: float):
        super().__init__()
        self.pad = ((kernel_size - 1) // 2, kernel_size // 2)
        self.conv_1 = nn.Conv1d(in_channels, filter_channels, kernel_size)
        self.conv_2 = nn.Conv1d(filter_channels, out_channels, kernel_size)
        self.drop = nn.Dropout(p_dropout)

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor) -> torch.Tensor:
        x = self.conv_1(F.pad(x * x_mask, self.pad))
        x = self.drop(torch.relu(x))
        x = self.conv_2(F.pad(x * x_mask, self.pad))
        return x * x_mask


class Encoder(nn.Module):
    """Post-norm transformer encoder. forward(x [B, H, T], x_mask [B, 1, T]) -> [B, H, T]."""

    def __init__(
        self, hidden_channels: int, filter_channels: int, n_heads: int, n_layers: int, kernel_size: int = 1,
        p_dropout: float = 0.0, window_size: int = 10,
    ) -> None:
        super().__init__()
        self.drop = nn.Dropout(p_dropout)
        self.attn_layers = nn.ModuleList()
        self.norm_layers_1 = nn.ModuleList()
        self.ffn_layers = nn.ModuleList()
        self.norm_layers_2 = nn.ModuleList()
        for _ in range(n_layers):
            self.attn_layers.append(
                MultiHeadAttention(hidden_channels, hidden_channels, n_heads, p_dropout, window_size)
            )
            self.norm_layers_1.append(LayerNorm(hidden_channels))
            self.ffn_layers.append(FFN(hidden_channels, hidden_channels, filter_channels, kernel_size, p_dropout))
            self.norm_layers_2.append(LayerNorm(hidden_channels))

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor) -> torch.Tensor:
        attn_mask = x_mask.unsqueeze(2) * x_mask.unsqueeze(-1)
        x = x * x_mask
        for attn, norm1, ffn, norm2 in zip(self.attn_layers, self.norm_layers_1, self.ffn_layers, self.norm_layers_2):
            x = norm1(x + self.drop(attn(x, x, attn_mask)))
            x = norm2(x + self.drop(ffn(x, x_mask)))
        return x * x_mask
