"""The char-RNN, its tokenizer and the shared token sampler."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import TEXT, text_spec

from zoo.data.spec import DataSpec
from zoo.data.tokenizers import CharTokenizer, tokenizer_from_state
from zoo.metrics import bits_per_dim, perplexity
from zoo.models import CharRNN
from zoo.nn.decoding import sample_from_logits, truncate_at_stop


def test_char_tokenizer_round_trips_text_through_its_plain_state():
    tokenizer = CharTokenizer.from_text(TEXT)
    restored = tokenizer_from_state(tokenizer.state_dict())
    assert restored.decode(restored.encode(TEXT)) == TEXT
    assert tokenizer.encode("\n") == [0]  # sorted vocabulary: newline sorts first
    assert tokenizer.state_dict() == {"kind": "char", "chars": tokenizer.chars}


def test_char_tokenizer_names_characters_outside_its_vocabulary():
    tokenizer = CharTokenizer.from_text(TEXT)
    with pytest.raises(ValueError, match=r"\['Z'\]"):
        tokenizer.encode("Zounds")


def test_top_k_keeps_exactly_the_k_most_likely_tokens():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0, -1.0]]).repeat(2000, 1)
    draws = sample_from_logits(logits, top_k=2, generator=torch.Generator().manual_seed(0))
    assert set(draws.tolist()) == {1, 3}


@pytest.mark.parametrize(
    "top_p,kept_ranks",
    [
        (0.4, {0}),
        (0.75, {0, 1}),
        (0.9, {0, 1, 2}),
        (0.97, {0, 1, 2, 3}),
        (1.0, {0, 1, 2, 3}),
    ],
)
def test_top_p_keeps_the_smallest_set_of_likeliest_tokens_whose_mass_reaches_p(top_p, kept_ranks):
    # The tokens ranked 0..3 have probabilities 0.5, 0.3, 0.15, 0.05; the row mixes their order.
    probs = torch.tensor([0.15, 0.5, 0.05, 0.3])
    token_of_rank = [1, 3, 0, 2]
    logits = probs.log().repeat(4000, 1)
    draws = sample_from_logits(logits, top_p=top_p, generator=torch.Generator().manual_seed(0))
    assert set(draws.tolist()) == {token_of_rank[rank] for rank in kept_ranks}


def test_top_p_renormalises_the_kept_tokens_and_applies_after_top_k():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    g = torch.Generator().manual_seed(0)
    draws = sample_from_logits(probs.log().repeat(20000, 1), top_p=0.75, generator=g)
    assert draws.eq(0).float().mean() == pytest.approx(0.5 / 0.8, abs=0.02)
    # top-k leaves 0.5 and 0.3 (renormalised to 0.625 and 0.375); p=0.6 then keeps one.
    draws = sample_from_logits(probs.log().repeat(2000, 1), top_k=2, top_p=0.6, generator=g)
    assert set(draws.tolist()) == {0}


def test_top_p_outside_the_unit_interval_is_refused():
    with pytest.raises(ValueError, match="top_p must lie in"):
        sample_from_logits(torch.zeros(1, 3), top_p=0.0)


def test_truncate_at_stop_cuts_after_the_first_stop_string():
    assert truncate_at_stop("Good night.\n\nROMEO:\nAy.\n\n", "\n\n") == "Good night.\n\n"
    assert truncate_at_stop("no stop here", "\n\n") == "no stop here"
    assert truncate_at_stop("kept whole", None) == "kept whole"
    assert truncate_at_stop("kept whole", "") == "kept whole"


def test_temperature_zero_is_greedy_and_low_temperature_sharpens():
    logits = torch.tensor([[0.0, 1.0, 0.5]]).repeat(4000, 1)
    assert sample_from_logits(logits, temperature=0).tolist() == [1] * 4000
    g = torch.Generator().manual_seed(0)
    cold = sample_from_logits(logits, temperature=0.2, generator=g).eq(1).float().mean()
    hot = sample_from_logits(logits, temperature=5.0, generator=g).eq(1).float().mean()
    assert cold > 0.85 and 0.3 < hot < 0.45


def test_perplexity_and_bits_per_dim_match_closed_forms():
    assert perplexity(math.log(65)) == pytest.approx(65)
    assert bits_per_dim(64 * math.log(17), 64) == pytest.approx(math.log2(17))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_char_rnn_learns_a_sentence_and_samples_it_back(cell):
    torch.manual_seed(0)
    model = CharRNN(text_spec(), cell=cell, hidden_size=64, num_layers=1)
    ids = torch.tensor([model.tokenizer.encode(TEXT)])
    x, y = ids[:, :-1], ids[:, 1:]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        logits, _ = model(x)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1
    model.eval()
    text = model.sample(1, prompt="R", max_new_tokens=len(TEXT) - 1, temperature=0)[0]
    assert text == TEXT


def test_char_rnn_samples_are_reproducible_with_a_seeded_generator():
    model = CharRNN(text_spec(), hidden_size=32, num_layers=1).eval()
    first = model.sample(3, generator=torch.Generator().manual_seed(7), max_new_tokens=20)
    second = model.sample(3, generator=torch.Generator().manual_seed(7), max_new_tokens=20)
    assert first == second
    assert all(len(text) == 21 and text.startswith("\n") for text in first)


def test_char_rnn_samples_end_after_the_stop_string_and_take_top_p():
    model = CharRNN(text_spec(), hidden_size=32, num_layers=1).eval()
    options = {"prompt": "RO", "max_new_tokens": 60, "top_p": 0.95}
    full = model.sample(4, generator=torch.Generator().manual_seed(3), **options)
    stopped = model.sample(4, generator=torch.Generator().manual_seed(3), stop="o", **options)
    assert stopped == ["RO" + truncate_at_stop(text[2:], "o") for text in full]
    assert any(len(text) < len(full_text) for text, full_text in zip(stopped, full, strict=True))
    assert all(text[2:].count("o") <= 1 for text in stopped)


def test_char_rnn_refuses_image_data():
    spec = DataSpec(modality="image", shape=(1, 8, 8), num_levels=17).to_dict()
    with pytest.raises(ValueError, match="models text"):
        CharRNN(spec)
