"""The GPT family: causal attention, the KV cache, optimizer groups, the schedule, compile, runs."""

import io
import json
import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, SMOKE, TEXT, run_script, text_spec, train_run
from hydra import compose, initialize_config_dir

from zoo.checkpoints import load_checkpoint, model_from_checkpoint
from zoo.data import TextFileDataModule
from zoo.data.tokenizers import BPETokenizer, ByteTokenizer, CharTokenizer, tokenizer_from_state
from zoo.errors import ConfigError
from zoo.models import FAMILIES, GPT
from zoo.models.gpt import DEFAULT_OPTIMIZER
from zoo.nn.decoding import truncate_at_stop
from zoo.nn.schedules import warmup_cosine, warmup_cosine_factor


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """Run on one thread: these tiny models gain nothing from two, and on a busy machine
    threads that wait for each other cost more than the work (here and in the scripts)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(threads)


def tiny_gpt(position: str = "learned", block_size: int = 16, seed: int = 0, **options) -> GPT:
    """Return a 2-layer, 16-channel GPT in eval mode, its weights drawn from ``seed``."""
    torch.manual_seed(seed)
    options = {"n_layer": 2, "n_head": 2, "n_embd": 16, **options}
    return GPT(text_spec(), block_size=block_size, position=position, **options).eval()


def spread_weights(model: GPT) -> GPT:
    """Return ``model`` with large random weights: logits far apart, unlike the N(0, 0.02)
    start, so that rounding differences cannot flip an arg-max or a draw."""
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.5)
    return model


# Attention and positions -----------------------------------------------------------------


@pytest.mark.parametrize("position", ["learned", "rotary"])
def test_changing_token_t_leaves_the_logits_before_t_unchanged(position):
    model = tiny_gpt(position)
    idx = torch.randint(
        0, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0)
    )
    changed = idx.clone()
    changed[:, 9] = (idx[:, 9] + 1) % model.config.vocab_size
    logits, _ = model(idx)
    logits_changed, _ = model(changed)
    assert logits.shape == (2, 16, model.config.vocab_size)
    torch.testing.assert_close(logits_changed[:, :9], logits[:, :9], rtol=0, atol=1e-6)
    assert (logits_changed[:, 9:] - logits[:, 9:]).abs().amax(dim=-1).min() > 1e-4


def test_rotary_positions_have_no_position_table_and_learned_ones_do():
    assert tiny_gpt("rotary").transformer.wpe is None
    assert tiny_gpt("learned").transformer.wpe.weight.shape == (16, 16)
    with pytest.raises(ValueError, match="position must be one of"):
        tiny_gpt("sinusoidal")


def test_forward_refuses_more_tokens_than_block_size():
    with pytest.raises(ValueError, match="block_size=16"):
        tiny_gpt()(torch.zeros(1, 17, dtype=torch.long))


# Generation --------------------------------------------------------------------------------


@pytest.mark.parametrize("position", ["learned", "rotary"])
def test_cached_generation_equals_uncached_token_for_token_past_block_size(position):
    model = spread_weights(tiny_gpt(position, block_size=8))
    prompt = torch.tensor([[1, 5, 9], [2, 2, 7]])
    cached = model.generate(prompt, 20, temperature=0, use_cache=True)
    uncached = model.generate(prompt, 20, temperature=0, use_cache=False)
    assert cached.shape == (2, 23)  # well past the 8-token context
    assert cached.tolist() == uncached.tolist()
    # Sampled rather than greedy (greedy soon repeats one token): the same draws, too.
    cached = model.generate(prompt, 40, generator=torch.Generator().manual_seed(0))
    uncached = model.generate(
        prompt, 40, generator=torch.Generator().manual_seed(0), use_cache=False
    )
    assert cached.tolist() == uncached.tolist()
    assert len(set(cached[0, 3:].tolist())) > 10


@pytest.mark.parametrize("position", ["learned", "rotary"])
def test_reading_a_sequence_in_chunks_through_the_cache_gives_the_same_logits(position):
    model = tiny_gpt(position)
    idx = torch.randint(
        0, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1)
    )
    whole, _ = model(idx)
    first, cache = model(idx[:, :5])
    second, cache = model(idx[:, 5:11], cache)  # several new tokens after the cached ones
    third, cache = model(idx[:, 11:], cache)  # one new token
    torch.testing.assert_close(torch.cat([first, second, third], dim=1), whole)
    assert [keys.shape for keys, _ in cache] == [(2, 2, 12, 8)] * 2  # (B, nh, T, hs) per layer


def test_cache_runs_the_newest_token_only_until_the_window_slides():
    model = tiny_gpt(block_size=8)
    lengths = []
    model.transformer.register_forward_pre_hook(
        lambda module, args: lengths.append(args[0].size(1))
    )
    model.generate(torch.tensor([[1, 2, 3]]), 8, temperature=0, use_cache=True)
    # The prompt, then one token a step until 8 are cached; then the last 8 are recomputed.
    assert lengths == [3, 1, 1, 1, 1, 1, 8, 8]
    lengths.clear()
    model.generate(torch.tensor([[1, 2, 3]]), 8, temperature=0, use_cache=False)
    assert lengths == [3, 4, 5, 6, 7, 8, 8, 8]


def test_sample_returns_the_prompt_and_a_batch_of_reproducible_texts():
    model = tiny_gpt()
    first = model.sample(3, generator=torch.Generator().manual_seed(7), max_new_tokens=30)
    again = model.sample(3, generator=torch.Generator().manual_seed(7), max_new_tokens=30)
    assert first == again
    assert len(set(first)) == 3  # the rows of the batch are drawn independently
    assert all(len(text) == 31 and text.startswith("\n") for text in first)
    long_prompt = TEXT * 2  # longer than block_size: the model reads its last 16 characters
    assert model.sample(1, prompt=long_prompt, max_new_tokens=5)[0].startswith(long_prompt)


def test_sample_ends_each_text_after_the_stop_string_and_stops_early():
    model = tiny_gpt()
    options = {"prompt": "RO", "max_new_tokens": 200, "top_k": 20, "top_p": 0.9}
    full = model.sample(4, generator=torch.Generator().manual_seed(0), **options)
    stopped = model.sample(4, generator=torch.Generator().manual_seed(0), stop="e", **options)
    assert stopped == ["RO" + truncate_at_stop(text[2:], "e") for text in full]
    assert all(text.endswith("e") and text[2:].count("e") == 1 for text in stopped)
    # Generation ends once every row has produced the stop string.
    calls = []
    model.transformer.register_forward_pre_hook(lambda module, args: calls.append(1))
    model.sample(4, generator=torch.Generator().manual_seed(0), stop="e", **options)
    assert len(calls) == max(len(text) for text in stopped) - 2 < 200


def test_a_stop_string_outside_the_vocabulary_never_stops_generation():
    model = tiny_gpt()
    texts = model.sample(2, max_new_tokens=12, stop="Zounds")
    assert [len(text) for text in texts] == [13, 13]


# Weights and optimisation ---------------------------------------------------------------------


def test_token_embedding_and_head_share_one_weight():
    model = tiny_gpt()
    wte, head = model.transformer.wte.weight, model.transformer.lm_head.weight
    assert wte is head and wte.data_ptr() == head.data_ptr()
    assert sum(p is wte for p in model.parameters()) == 1
    rebuilt = tiny_gpt(seed=5)
    rebuilt.load_state_dict(model.state_dict())
    assert (
        rebuilt.transformer.wte.weight.data_ptr() == rebuilt.transformer.lm_head.weight.data_ptr()
    )


def test_parameter_groups_decay_every_matrix_and_embedding_and_no_bias_or_norm():
    model = tiny_gpt(bias=True)
    decay, no_decay = model.parameter_groups()
    assert "weight_decay" not in decay and no_decay["weight_decay"] == 0.0
    decayed = {id(p) for p in decay["params"]}
    not_decayed = {id(p) for p in no_decay["params"]}
    named = dict(model.named_parameters())
    assert decayed.isdisjoint(not_decayed)
    assert decayed | not_decayed == {id(p) for p in named.values()}
    assert len(decay["params"]) + len(no_decay["params"]) == len(named)
    for name, parameter in named.items():
        is_vector = name.endswith(".bias") or ".ln_" in name
        assert (id(parameter) in not_decayed) == is_vector == (parameter.dim() < 2), name
    assert id(named["transformer.wte.weight"]) in decayed  # embeddings decay, as in nanoGPT
    assert id(named["transformer.wpe.weight"]) in decayed


def test_configured_adamw_takes_its_settings_from_config_and_is_fused_where_torch_can():
    schedule = {"_target_": "zoo.nn.schedules.warmup_cosine", "_partial_": True}
    model = tiny_gpt(scheduler={**schedule, "warmup_steps": 10, "total_steps": 100})
    configured = model.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]
    assert isinstance(optimizer, torch.optim.AdamW)
    assert [group["weight_decay"] for group in optimizer.param_groups] == [0.1, 0.0]
    assert optimizer.defaults["fused"] is True  # torch has a fused AdamW for the CPU too
    assert optimizer.defaults["betas"] == (0.9, 0.99)
    assert scheduler["interval"] == "step"
    assert scheduler["scheduler"].get_last_lr() == [1e-3 / 11, 1e-3 / 11]
    unfused = tiny_gpt(
        optimizer={**DEFAULT_OPTIMIZER, "fused": False},
        scheduler={**schedule, "warmup_steps": 10, "total_steps": 100},
    )
    assert unfused.configure_optimizers()["optimizer"].defaults["fused"] is False
    with pytest.raises(ConfigError, match="model.optimizer.fused must be true, false or null"):
        tiny_gpt(optimizer={**DEFAULT_OPTIMIZER, "fused": "abc"}).configure_optimizers()


def test_warmup_cosine_schedule_matches_its_closed_form():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1e-3)
    scheduler = warmup_cosine(optimizer, warmup_steps=100, total_steps=2000, min_lr_ratio=0.1)
    lrs = []
    for _ in range(2501):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(1e-3 / 101)  # step 0 already learns, a little
    assert lrs[99] == pytest.approx(1e-3 * 100 / 101)  # the last warm-up step
    assert lrs[100] == pytest.approx(1e-3)  # the peak, where the cosine starts
    assert lrs[1050] == pytest.approx(1e-4 + 0.5 * (1e-3 - 1e-4))  # half-way down the cosine
    assert lrs[575] == pytest.approx(1e-4 + 0.5 * (1 + math.cos(math.pi / 4)) * 9e-4)
    assert lrs[2000] == pytest.approx(1e-4) and lrs[2500] == pytest.approx(1e-4)
    assert warmup_cosine_factor(1050, 100, 2000, 0.1) == pytest.approx(0.55)


def test_warmup_cosine_refuses_a_warmup_as_long_as_the_run():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="warmup_steps < total_steps"):
        warmup_cosine(optimizer, warmup_steps=100, total_steps=100)


# Tokenizers ------------------------------------------------------------------------------------


def test_byte_tokenizer_round_trips_any_text_through_its_plain_state():
    text = "Ça va? — naïve 日本語 🎭\n"
    tokenizer = tokenizer_from_state(ByteTokenizer().state_dict())
    ids = tokenizer.encode(text)
    assert ids == list(text.encode("utf-8")) and len(ids) == 34 > len(text) == 21
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode(ids[:-2]) == "Ça va? — naïve 日本語 \ufffd"  # a cut 🎭 is replaced
    assert (tokenizer.vocab_size, tokenizer.state_dict()) == (256, {"kind": "byte"})


def test_byte_text_data_trains_a_gpt_over_256_bytes(tmp_path):
    corpus = "Ça va? — naïve 日本語\n" * 20
    (tmp_path / "corpus.txt").write_text(corpus, encoding="utf-8")
    data = TextFileDataModule(
        path=str(tmp_path / "corpus.txt"), tokens_dir=str(tmp_path), block_size=8, tokenizer="byte"
    )
    spec = data.spec
    assert (spec.vocab_size, spec.tokenizer) == (256, {"kind": "byte"})
    data.setup("fit")
    x, y = data.val_dataset[0]
    assert torch.equal(x[1:], y[:-1]) and int(x.max()) < 256
    model = GPT(spec.to_dict(), n_layer=1, n_head=2, n_embd=16, block_size=8).eval()
    texts = model.sample(2, prompt="Ça", max_new_tokens=10)
    assert all(isinstance(text, str) and text.startswith("Ça") for text in texts)
    with pytest.raises(ValueError, match="data.tokenizer must be one of char, byte, bpe"):
        TextFileDataModule(path=str(tmp_path / "corpus.txt"), tokenizer="word")


def train_bpe(texts, vocab_size: int = 300) -> BPETokenizer:
    return BPETokenizer.train(texts, vocab_size)


def test_bpe_tokenizer_round_trips_any_utf8_including_characters_it_never_saw():
    tokenizer = train_bpe([TEXT] * 50)
    assert 256 < tokenizer.vocab_size <= 300  # the 256 bytes, then merges of the text's pairs
    assert len(tokenizer.encode(TEXT)) < len(TEXT) / 2  # the merges compress the text it saw
    unseen = "Ça va? — naïve 日本語 🎭\x00\ufeff\r\n\t end"
    rebuilt = tokenizer_from_state(tokenizer.state_dict())  # {"kind": "bpe", "json": "…"}
    assert set(tokenizer.state_dict()) == {"kind", "json"}
    for text in (TEXT, unseen, ""):
        ids = rebuilt.encode(text)
        assert ids == tokenizer.encode(text) and all(0 <= i < tokenizer.vocab_size for i in ids)
        assert rebuilt.decode(ids) == text
        assert rebuilt.encode_array(text).tolist() == ids
    cut = rebuilt.encode("🎭")[:-1]  # a character cut inside its bytes decodes to U+FFFD
    assert "\ufffd" in rebuilt.decode(cut)
    with pytest.raises(ValueError, match="data.vocab_size must be at least 256"):
        train_bpe([TEXT], vocab_size=100)


@pytest.mark.parametrize("kind", ["char", "byte", "bpe"])
def test_every_tokenizer_counts_the_characters_its_ids_hold(kind):
    text = "Ça va? — naïve 日本語 🎭\n" * 3
    tokenizer = {
        "char": CharTokenizer.from_text(text),
        "byte": ByteTokenizer(),
        "bpe": train_bpe([text] * 20),
    }[kind]
    counts = tokenizer.char_counts()
    assert len(counts) == tokenizer.vocab_size
    assert sum(counts[i] for i in tokenizer.encode(text)) == len(text)


def validation_metrics(
    tmp_path, tokenizer: str
) -> tuple[dict[str, float], GPT, TextFileDataModule]:
    """Return the validation metrics of an untrained tiny GPT on a UTF-8 corpus."""
    (tmp_path / "corpus.txt").write_text("Ça va? — naïve 日本語 🎭\n" * 40, encoding="utf-8")
    data = TextFileDataModule(
        path=str(tmp_path / "corpus.txt"),
        tokens_dir=str(tmp_path / tokenizer),
        tokenizer=tokenizer,
        vocab_size=300 if tokenizer == "bpe" else None,
        block_size=8,
        batch_size=4,
        val_windows=10,  # batches of 4, 4 and 2: the epoch's figure must weigh them
    )
    torch.manual_seed(0)
    model = GPT(data.spec.to_dict(), n_layer=1, n_head=2, n_embd=16, block_size=8)
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    (metrics,) = trainer.validate(model, datamodule=data, verbose=False)
    return metrics, model, data


@pytest.mark.parametrize("tokenizer", ["char", "byte", "bpe"])
def test_validation_reports_nats_per_token_and_bits_per_character(tmp_path, tokenizer):
    metrics, model, data = validation_metrics(tmp_path, tokenizer)
    assert set(metrics) == {"val/loss", "val/perplexity", "val/bits_per_char"}
    nats, tokens, characters = 0.0, 0, 0
    with torch.no_grad():
        for x, y in data.val_dataloader():
            logits, _ = model(x)
            nats += float(F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum"))
            tokens += y.numel()
            if tokenizer == "char":
                characters += y.numel()
            elif tokenizer == "byte":  # the UTF-8 bytes that start a character
                characters += sum(1 for b in y.flatten().tolist() if b & 0xC0 != 0x80)
            else:  # as the test above checks them against len(text)
                characters += sum(data.tokenizer.char_counts()[i] for i in y.flatten().tolist())
    assert metrics["val/loss"] == pytest.approx(nats / tokens, rel=1e-5)
    assert metrics["val/bits_per_char"] == pytest.approx(nats / characters / math.log(2), rel=1e-5)
    if tokenizer == "char":
        assert metrics["val/bits_per_char"] == pytest.approx(metrics["val/loss"] / math.log(2))


# Checkpoints and torch.compile ---------------------------------------------------------------


def test_compiled_gpt_saves_the_plain_state_dict_and_loads_uncompiled():
    compiled = tiny_gpt(compile=True, n_layer=1)
    plain = tiny_gpt(compile=False, n_layer=1, seed=3)
    assert list(compiled.state_dict()) == list(plain.state_dict())
    assert not any("_orig_mod" in key for key in compiled.state_dict())
    buffer = io.BytesIO()
    torch.save({"state_dict": compiled.state_dict(), "hparams": dict(compiled.hparams)}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    assert saved["hparams"]["compile"] is True
    uncompiled = GPT(**{**saved["hparams"], "compile": False}).eval()
    uncompiled.load_state_dict(saved["state_dict"])  # strict: every key matches
    for name, tensor in compiled.state_dict().items():
        assert torch.equal(uncompiled.state_dict()[name], tensor), name


@pytest.mark.slow  # compiling takes 10-30 s on two CPU cores
def test_compiled_gpt_computes_what_the_uncompiled_one_does():
    compiled = tiny_gpt(compile=True, n_layer=1)  # one layer: the smallest graph to compile
    uncompiled = tiny_gpt(compile=False, n_layer=1, seed=3)
    uncompiled.load_state_dict(compiled.state_dict())
    idx = torch.tensor([[1, 2, 3, 4, 5, 6]])
    try:
        logits, _ = compiled(idx)
    except torch._dynamo.exc.BackendCompilerFailed as error:  # e.g. no C++ compiler here
        pytest.skip(f"torch.compile cannot compile on this machine: {error}")
    torch.testing.assert_close(logits, uncompiled(idx)[0], rtol=1e-4, atol=1e-5)


# Training through Lightning and the entry scripts ---------------------------------------------


class LossRecorder(L.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def test_lightning_training_lowers_the_loss_on_a_tiny_corpus(tmp_path):
    (tmp_path / "corpus.txt").write_text(TEXT * 30, encoding="utf-8")
    data = TextFileDataModule(
        path=str(tmp_path / "corpus.txt"),
        tokens_dir=str(tmp_path),
        block_size=16,
        batch_size=8,
        samples_per_epoch=80,
    )
    scheduler = {
        "_target_": "zoo.nn.schedules.warmup_cosine",
        "_partial_": True,
        "warmup_steps": 5,
        "total_steps": 30,
        "min_lr_ratio": 0.1,
    }
    optimizer = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-2}
    torch.manual_seed(0)
    model = GPT(
        data.spec.to_dict(),
        n_layer=1,
        n_head=2,
        n_embd=32,
        block_size=16,
        optimizer=optimizer,
        scheduler=scheduler,
    )
    recorder = LossRecorder()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=30,
        max_epochs=-1,
        gradient_clip_val=1.0,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder],
    )
    trainer.fit(model, datamodule=data)
    losses = recorder.losses
    assert len(losses) == 30 and all(math.isfinite(loss) for loss in losses)
    assert losses[0] == pytest.approx(math.log(data.spec.vocab_size), abs=0.3)  # near uniform
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5
    # The schedule advanced once per step: 30 steps end on the cosine's floor, lr/10.
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-3)


@pytest.mark.slow  # the real train.py and sample.py, each in its own process
def test_gpt_preset_trains_and_sample_script_continues_a_prompt(tmp_path):
    run_dir = tmp_path / "run"
    results = train_run(
        run_dir,
        "experiment=gpt_shakespeare_cpu",
        *SMOKE,
        "model.n_layer=1",
        "model.n_head=2",
        "model.n_embd=32",
        "callbacks.sample_writer.options.max_new_tokens=20",
    )
    assert results["family"] == "gpt" and results["global_step"] == 1
    assert math.isfinite(results["val"]["val/loss"]) and "val/perplexity" in results["val"]
    assert (run_dir / "samples" / "epoch_000.txt").read_text().count("===== sample") == 4
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert checkpoint["zoo"]["family"] == "gpt" and FAMILIES["gpt"] is GPT
    model = model_from_checkpoint(checkpoint)
    assert (model.config.n_layer, model.config.n_embd, model.config.block_size) == (1, 32, 64)

    run_script(
        "sample.py",
        f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
        "num_samples=3",
        "prompt=ROMEO:",
        "max_new_tokens=40",
        "temperature=0.8",
        "top_k=20",
        "top_p=0.95",
        "stop=e",
        f"output_dir={tmp_path / 'samples'}",
    )
    texts = (tmp_path / "samples" / "samples.txt").read_text().split("===== sample ")[1:]
    assert len(texts) == 3
    for text in texts:
        generated = text.split("\n", 1)[1].removeprefix("ROMEO:")
        assert text.split("\n", 1)[1].startswith("ROMEO:")
        assert generated.count("e") <= 1 and (
            generated.rstrip("\n").endswith("e") or "e" not in generated
        )
    assert json.loads((run_dir / "results.json").read_text())["name"] == "gpt_shakespeare_cpu"


@pytest.mark.slow  # the real train.py and sample.py, each in its own process
def test_bpe_preset_trains_and_sample_script_rebuilds_the_tokenizer_from_the_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    results = train_run(
        run_dir,
        "experiment=gpt_shakespeare_bpe",
        *SMOKE,
        "model.n_layer=1",
        "model.n_head=2",
        "model.n_embd=32",
        "callbacks.sample_writer.options.max_new_tokens=20",
    )
    assert {"val/loss", "val/perplexity", "val/bits_per_char"} <= set(results["val"])
    checkpoint_path = run_dir / "checkpoints" / "last.ckpt"
    spec = torch.load(checkpoint_path, weights_only=True)["hyper_parameters"]["spec"]
    assert spec["tokenizer"]["kind"] == "bpe" and isinstance(spec["tokenizer"]["json"], str)
    assert spec["vocab_size"] == 1024

    prompt = "ROMEO: 日本"  # characters the plays never hold: byte-level BPE encodes them
    run_script(
        "sample.py",
        f"ckpt_path={checkpoint_path}",
        "num_samples=2",
        f"prompt='{prompt}'",  # quoted: Hydra's grammar takes other characters only so
        "max_new_tokens=20",
        f"output_dir={tmp_path / 'samples'}",
    )
    written = (tmp_path / "samples" / "samples.txt").read_text(encoding="utf-8")
    texts = [part.split("\n", 1)[1].rstrip("\n") for part in written.split("===== sample ")[1:]]
    # The process that sampled rebuilt the tokenizer from the checkpoint alone: it drew
    # what this process draws with the same seed.
    model = model_from_checkpoint(load_checkpoint(checkpoint_path))
    expected = model.sample(
        2, prompt=prompt, max_new_tokens=20, generator=torch.Generator().manual_seed(0)
    )
    assert texts == [text.rstrip("\n") for text in expected]
    assert all(text.startswith(prompt) and len(text) > len(prompt) for text in texts)


# Presets ----------------------------------------------------------------------------------------


def compose_experiment(name: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=[f"experiment={name}"])


def test_cpu_preset_is_nanogpts_baby_shakespeare_recipe():
    cfg = compose_experiment("gpt_shakespeare_cpu")
    data, model, trainer = cfg.data, cfg.model, cfg.trainer
    assert (data._target_, data.tokenizer) == ("zoo.data.ShakespeareDataModule", "char")
    assert (data.block_size, data.batch_size, model.block_size) == (64, 12, 64)
    sizes = (model.n_layer, model.n_head, model.n_embd, model.dropout, model.bias)
    assert sizes == (4, 4, 128, 0.0, False)
    assert (model.position, model.compile) == ("learned", False)
    optimizer = model.optimizer
    assert (optimizer._target_, optimizer.lr, list(optimizer.betas)) == (
        "torch.optim.AdamW",
        1e-3,
        [0.9, 0.99],
    )
    assert optimizer.weight_decay == 0.1
    schedule = model.scheduler
    assert (schedule._target_, model.scheduler_interval) == (
        "zoo.nn.schedules.warmup_cosine",
        "step",
    )
    # total_steps null: the cosine ends with the run, at trainer.max_steps = 2,000
    assert (schedule.warmup_steps, schedule.total_steps, schedule.min_lr_ratio) == (100, None, 0.1)
    assert (trainer.max_steps, trainer.max_epochs, trainer.gradient_clip_val) == (2000, -1, 1.0)
    assert trainer.precision == "bf16-mixed"  # the one change: nanoGPT's CPU runs are float32
    # Validation every 250 iterations (one "epoch") on 20 batches of 12 windows.
    assert data.samples_per_epoch // data.batch_size == 250
    assert data.val_windows // data.batch_size == 20
    assert cfg.monitor == "val/loss"


def test_gpu_preset_is_nanogpts_shakespeare_char_recipe():
    cfg = compose_experiment("gpt_shakespeare")
    data, model, trainer = cfg.data, cfg.model, cfg.trainer
    assert (data.block_size, data.batch_size) == (256, 64)
    sizes = (model.n_layer, model.n_head, model.n_embd, model.dropout, model.compile)
    assert sizes == (6, 6, 384, 0.2, True)
    assert (model.optimizer.lr, list(model.optimizer.betas)) == (1e-3, [0.9, 0.99])
    assert (model.scheduler.warmup_steps, model.scheduler.total_steps) == (100, None)
    assert (trainer.max_steps, trainer.max_epochs, trainer.precision) == (5000, -1, "bf16-mixed")
    assert data.samples_per_epoch // data.batch_size == 250
    assert data.val_windows // data.batch_size == 200


def test_bpe_preset_is_the_cpu_recipe_over_a_learned_vocabulary():
    bpe, char = compose_experiment("gpt_shakespeare_bpe"), compose_experiment("gpt_shakespeare_cpu")
    assert (bpe.data.tokenizer, bpe.data.vocab_size) == ("bpe", 1024)
    for group in ("model", "trainer"):
        assert bpe[group] == char[group]
    assert {k: v for k, v in bpe.data.items() if k not in ("tokenizer", "vocab_size")} == {
        k: v for k, v in char.data.items() if k not in ("tokenizer", "vocab_size")
    }
