"""Scaled dot-product attention that stays fast under bfloat16 autocast on the CPU."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def scaled_dot_product_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **options
) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` of q (B, nh, T, hs), k and v (B, nh, S, hs).

    Returns (B, nh, T, hs) in q's dtype; ``options`` (``attn_mask``, ``dropout_p``,
    ``is_causal``) pass through. Under bfloat16 autocast on the CPU the attention itself is
    computed in float32 with autocast off: PyTorch's CPU flash-attention kernel is 4–6× slower
    in bfloat16 than in float32 for the small heads zoo uses (forward and backward of
    (128, 6, 49, 32): 65 ms against 12 ms; bench/RESULTS.md, "bfloat16 on the CPU"), while
    the matrix products around it gain from bfloat16. Elsewhere it is SDPA unchanged.
    """
    if q.device.type == "cpu" and q.dtype == torch.bfloat16 and torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), **options)
        return y.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, **options)
