"""Drawing tokens from logits (temperature, top-k, top-p) and cutting texts at a stop string.

Shared by the text families.
"""

from __future__ import annotations

import torch


def sample_from_logits(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Return one token id per row of ``logits`` (B, V), drawn after temperature, top-k and top-p.

    ``temperature=0`` means greedy decoding (the arg-max). ``top_k`` keeps the k most
    likely tokens; ``top_p`` (nucleus sampling, Holtzman et al. 2020) keeps the smallest
    set of most likely tokens whose probability mass reaches p, and always the most
    likely token. Both apply after the temperature, top-k first.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must lie in (0, 1], got {top_p}")
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k > 0 and top_k < logits.size(-1):
        # Keep the k largest logits; ties at the k-th value are kept too.
        kth_largest = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        sorted_probs = torch.softmax(sorted_logits, dim=-1)
        # A token stays when the mass of the tokens ranked above it is still below p;
        # the top token has nothing above it, so it always stays.
        mass_above = sorted_probs.cumsum(dim=-1) - sorted_probs
        remove_sorted = mass_above >= top_p
        remove = torch.empty_like(remove_sorted).scatter_(-1, order, remove_sorted)
        logits = logits.masked_fill(remove, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


def truncate_at_stop(generated: str, stop: str | None) -> str:
    """Return ``generated`` cut right after the first occurrence of ``stop`` (whole if absent)."""
    if not stop:
        return generated
    end = generated.find(stop)
    return generated if end < 0 else generated[: end + len(stop)]


class StopTracker:
    """Tracks which rows of a batch being generated have produced the stop tokens.

    ``update(idx)`` after each new token (idx: (B, T)) returns True once every row has
    produced ``stop_ids`` somewhere after the prompt, so generation can end early.
    """

    def __init__(self, stop_ids: list[int] | None, idx: torch.Tensor):
        self.stop = torch.tensor(stop_ids, device=idx.device) if stop_ids else None
        self.prompt_length = idx.size(1)
        self.finished = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)

    def update(self, idx: torch.Tensor) -> bool:
        if self.stop is None or idx.size(1) - self.prompt_length < len(self.stop):
            return False
        self.finished |= (idx[:, -len(self.stop) :] == self.stop).all(dim=1)
        return bool(self.finished.all())
