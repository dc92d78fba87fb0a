"""Drawing tokens from logits: temperature and top-k, shared by the text families."""

from __future__ import annotations

import torch


def sample_from_logits(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Return one token id per row of ``logits`` (B, V), drawn after temperature and top-k.

    ``temperature=0`` means greedy decoding (the arg-max).
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None and top_k > 0 and top_k < logits.size(-1):
        # Keep the k largest logits; ties at the k-th value are kept too.
        kth_largest = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    probs = torch.softmax(logits.float(), dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)
