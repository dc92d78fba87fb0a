"""The char-RNN, its tokenizer and the shared token sampler."""

import math

import pytest
import torch
import torch.nn.functional as F

from zoo.data.spec import DataSpec
from zoo.data.tokenizers import CharTokenizer, tokenizer_from_state
from zoo.metrics import bits_per_dim, perplexity
from zoo.models import CharRNN
from zoo.nn.sampling import sample_from_logits

TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?\n\n"


def text_spec(text: str = TEXT) -> dict:
    tokenizer = CharTokenizer.from_text(text)
    return DataSpec(
        modality="text", vocab_size=tokenizer.vocab_size, tokenizer=tokenizer.state_dict()
    ).to_dict()


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


def test_char_rnn_refuses_image_data():
    spec = DataSpec(modality="image", shape=(1, 8, 8), num_levels=17).to_dict()
    with pytest.raises(ValueError, match="models text"):
        CharRNN(spec)
