"""The VQ-VAE, its quantisers, and the prior over its codes: math, causality, one checkpoint."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys

import lightning as L
import pytest
import torch
from conftest import (
    IMAGE_SPEC,
    ROOT,
    SMOKE,
    TINY,
    checkpoint_of,
    one_batch_loader,
    run_script,
    tiny_family,
    train_run,
)
from hydra import compose, initialize_config_dir
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

from zoo import checkpoint_format as keys
from zoo.checkpoints import load_checkpoint, model_from_checkpoint
from zoo.errors import ConfigError, ZooError
from zoo.models import VQVAE, VQPrior
from zoo.models.vq_prior import two_stage_bits_per_dim
from zoo.models.vqvae import (
    FiniteScalarQuantizer,
    VectorQuantizer,
    codebook_usage,
    ema_codebook_update,
    nearest_code,
)
from zoo.outputs import save_tensor
from zoo.runner import build_model, sample


def fit(model, loader, steps: int, ckpt_path=None, **trainer_options) -> L.Trainer:
    """Return the trainer that fitted ``model`` for ``steps`` steps (resumed from ``ckpt_path``)."""
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer_options,
    )
    trainer.fit(model, loader, ckpt_path=ckpt_path, weights_only=True)
    return trainer


# Vector quantisation ------------------------------------------------------------------------


def test_nearest_code_agrees_with_a_brute_force_search():
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(200, 5, generator=generator)
    codebook = torch.randn(13, 5, generator=generator)
    brute = [min(range(13), key=lambda k: float(((v - codebook[k]) ** 2).sum())) for v in z]
    assert nearest_code(z, codebook).tolist() == brute


def test_the_quantised_grid_holds_codebook_vectors_and_passes_the_gradient_unchanged():
    quantizer = VectorQuantizer(codebook_size=6, dim=3, decay=0.99, restart_after=0).eval()
    z_e = torch.randn(2, 3, 4, 4, requires_grad=True)
    z_q, codes, commitment = quantizer(z_e)  # (2, 3, 4, 4), (2, 4, 4)
    # z_e + (z_q − z_e): the codebook vectors up to the rounding of that sum
    assert torch.allclose(z_q.detach(), quantizer.codebook[codes].permute(0, 3, 1, 2), atol=1e-6)
    assert torch.allclose(commitment, (z_e - z_q).pow(2).mean())
    weights = torch.randn_like(z_q)
    (z_q * weights).sum().backward()
    assert torch.equal(z_e.grad, weights)  # dz_q/dz_e is the identity (straight-through)


def test_the_ema_update_matches_a_hand_computed_case():
    # Two codes on a line, at 0 and 10, each as if chosen once; the batch chose code 0 for
    # 1 and 3, code 1 for 11. With γ = 0.5: N = [1.5, 1], m = [2, 10.5], e = m / N.
    cluster_size, embedding_sum = torch.ones(2), torch.tensor([[0.0], [10.0]])
    counts, sums = torch.tensor([2.0, 1.0]), torch.tensor([[4.0], [11.0]])
    size, total, codebook = ema_codebook_update(
        cluster_size, embedding_sum, counts, sums, decay=0.5, epsilon=0.0
    )
    assert size.tolist() == [1.5, 1.0] and total.tolist() == [[2.0], [10.5]]
    assert codebook.flatten().tolist() == pytest.approx([2 / 1.5, 10.5])
    # Laplace smoothing with ε = 0.1: N_i ← (N_i + ε) / (ΣN + Kε) · ΣN.
    _, _, smoothed = ema_codebook_update(
        cluster_size, embedding_sum, counts, sums, decay=0.5, epsilon=0.1
    )
    expected = [2 / (1.6 / 2.7 * 2.5), 10.5 / (1.1 / 2.7 * 2.5)]
    assert smoothed.flatten().tolist() == pytest.approx(expected)


def test_a_training_step_moves_the_codebook_by_the_ema_of_its_assigned_vectors():
    quantizer = VectorQuantizer(codebook_size=2, dim=1, decay=0.5, restart_after=0, epsilon=0.0)
    quantizer.codebook.copy_(torch.tensor([[0.0], [10.0]]))
    quantizer.embedding_sum.copy_(quantizer.codebook)
    z_e = torch.tensor([1.0, 3.0, 11.0]).view(1, 1, 1, 3)  # (B, D, h, w)
    quantizer.eval()(z_e)
    assert quantizer.codebook.flatten().tolist() == [0.0, 10.0]  # eval mode changes nothing
    _, codes, _ = quantizer.train()(z_e)
    assert codes.flatten().tolist() == [0, 0, 1]
    assert quantizer.codebook.flatten().tolist() == pytest.approx([2 / 1.5, 10.5])


def test_a_code_unused_for_n_steps_restarts_at_an_encoder_output_of_the_batch():
    quantizer = VectorQuantizer(codebook_size=3, dim=2, decay=0.9, restart_after=3).train()
    quantizer.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [100.0, 100.0]]))
    quantizer.embedding_sum.copy_(quantizer.codebook)
    quantizer.steps_unused.zero_()
    z_e = torch.tensor([[0.1, 0.0], [0.0, 0.1], [1.0, 0.9], [0.9, 1.0]]).t().reshape(1, 2, 2, 2)
    batch = set(map(tuple, z_e.permute(0, 2, 3, 1).reshape(-1, 2).tolist()))
    for step in range(2):
        quantizer(z_e)
        assert quantizer.steps_unused.tolist() == [0, 0, step + 1]
    assert quantizer.codebook[2].tolist() == pytest.approx([100.0, 100.0], rel=1e-3)
    quantizer(z_e)  # the third step without code 2: it restarts
    assert tuple(quantizer.codebook[2].tolist()) in batch
    assert quantizer.steps_unused.tolist() == [0, 0, 0]
    assert quantizer.cluster_size[2] == 1.0
    assert torch.equal(quantizer.embedding_sum[2], quantizer.codebook[2])


def test_the_first_training_batch_initialises_every_unchosen_code_from_the_batch():
    torch.manual_seed(0)
    quantizer = VectorQuantizer(codebook_size=16, dim=4, decay=0.99, restart_after=100).train()
    z_e = torch.randn(2, 4, 4, 4) + 50.0  # far from the N(0, 1) initial codebook
    _, codes, _ = quantizer(z_e)
    chosen = set(codes.flatten().tolist())
    vectors = z_e.permute(0, 2, 3, 1).reshape(-1, 4)
    for k in set(range(16)) - chosen:
        assert (vectors == quantizer.codebook[k]).all(dim=1).any()
    assert len({tuple(row) for row in quantizer.codebook.tolist()}) == 16  # distinct vectors


def test_codebook_usage_is_the_share_of_codes_used_and_the_perplexity_of_their_frequencies():
    usage, perplexity = codebook_usage(torch.tensor([5, 5, 0, 0]))
    assert usage.item() == 0.5 and perplexity.item() == pytest.approx(2.0)
    usage, perplexity = codebook_usage(torch.tensor([7, 0, 0, 0, 0]))
    assert usage.item() == pytest.approx(0.2) and perplexity.item() == pytest.approx(1.0)


# Finite scalar quantisation ------------------------------------------------------------------


def test_fsq_codes_and_indices_round_trip_over_every_code():
    quantizer = FiniteScalarQuantizer([8, 5, 3])
    indices = torch.arange(8 * 5 * 3)
    codes = quantizer.indices_to_codes(indices)  # (120, 3)
    assert torch.equal(quantizer.codes_to_indices(codes), indices)
    assert len({tuple(c) for c in codes.tolist()}) == 120  # every code distinct
    assert torch.equal(
        quantizer.lookup(indices.view(1, 10, 12)).permute(0, 2, 3, 1)[0, 0], codes[:12]
    )


def test_fsq_rounds_each_channel_to_exactly_its_number_of_levels_in_minus_one_to_one():
    quantizer = FiniteScalarQuantizer([8, 5, 4])
    z = torch.linspace(-20, 20, 4001)[:, None].expand(-1, 3)  # (4001, 3)
    quantised = quantizer.quantise(z)
    for channel, levels in enumerate([8, 5, 4]):
        values = quantised[:, channel].unique()
        assert len(values) == levels
        assert values.min() == -1.0 and values.max() <= 1.0


# The VQ-VAE ------------------------------------------------------------------------------------


@pytest.mark.parametrize("quantizer", ["vq", "fsq"])
def test_encode_gives_the_code_grid_and_decode_images_of_the_data_shape(quantizer):
    model = tiny_family("vqvae", quantizer=quantizer, fsq_levels=[3, 3])
    x = torch.rand(5, *IMAGE_SPEC["shape"]) * 2 - 1
    codes = model.encode(x)
    assert codes.shape == (5, 4, 4) and codes.dtype == torch.long  # 8×8 halved once
    assert codes.min() >= 0 and codes.max() < model.codebook_size
    assert model.codebook_size == (8 if quantizer == "vq" else 9)
    images = model.decode(codes)
    assert images.shape == (5, 1, 8, 8) and images.min() >= -1 and images.max() <= 1
    assert torch.equal(model.reconstruct(x), images)


def test_a_vqvae_learns_to_reconstruct_a_few_digits_and_uses_its_codebook():
    digits = load_digits()
    x = torch.tensor(digits.images[:16], dtype=torch.float32).unsqueeze(1) / 16 * 2 - 1
    loader = DataLoader(TensorDataset(x, torch.tensor(digits.target[:16])), batch_size=16)
    torch.manual_seed(0)
    optimizer = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 3e-3}
    model = VQVAE(
        IMAGE_SPEC,
        channels=[16],
        num_residual_blocks=1,
        codebook_size=16,
        embedding_dim=4,
        restart_unused_after=20,
        optimizer=optimizer,
    )
    before = (model.reconstruct(x) - x).pow(2).mean()
    fit(model.train(), loader, steps=150)
    after = (model.eval().reconstruct(x) - x).pow(2).mean()
    assert after < 0.3 * before
    assert len(model.encode(x).unique()) >= 12  # of 16 codes, on 16 digits of 16 positions


def test_a_vqvae_does_not_sample_and_says_to_train_a_prior():
    with pytest.raises(ZooError, match=r"train a prior over its codes.*vq_gpt_mnist5k"):
        tiny_family("vqvae").sample(2)


def test_the_codebook_is_in_the_checkpoint_and_a_resumed_run_continues_it_exactly(tmp_path):
    def model():  # restarts codes every step; a constant rate, the same whatever the run's length
        return tiny_family("vqvae", restart_unused_after=1, scheduler=None).train()

    straight = model()
    loader = one_batch_loader(straight)
    fit(straight, loader, steps=4)
    trainer = fit(model(), loader, steps=2)
    trainer.save_checkpoint(tmp_path / "two.ckpt")
    saved = torch.load(tmp_path / "two.ckpt", weights_only=True)[keys.STATE_DICT]
    buffers = {"codebook", "cluster_size", "embedding_sum", "steps_unused"}
    assert {f"quantizer.{name}" for name in buffers} <= set(saved)
    continued = model()
    torch.manual_seed(123)  # whatever the generator holds now, the checkpoint's state returns
    fit(continued, loader, steps=4, ckpt_path=tmp_path / "two.ckpt")
    for name, tensor in straight.state_dict().items():
        assert torch.equal(continued.state_dict()[name], tensor), name


# The prior over codes ------------------------------------------------------------------------


def test_the_prior_needs_a_vqvae_first_stage():
    with pytest.raises(ConfigError, match=r"model\.stage_one=outputs/vqvae_"):
        VQPrior(IMAGE_SPEC)
    with pytest.raises(ConfigError, match="builds on a vqvae checkpoint, got a vae one"):
        VQPrior(IMAGE_SPEC, stage_one={"family": "vae", "hyper_parameters": {}})
    other = {**IMAGE_SPEC, "shape": [1, 16, 16]}
    with pytest.raises(ConfigError, match=r"trained on images of shape \(1, 16, 16\)"):
        VQPrior(
            IMAGE_SPEC,
            stage_one={
                "family": "vqvae",
                "hyper_parameters": {
                    **TINY["vq_prior"]["stage_one"]["hyper_parameters"],
                    "spec": other,
                },
            },
        )


@pytest.mark.parametrize("backbone", ["gpt", "pixelcnn"])
def test_the_prior_is_causal_over_the_code_grid_in_raster_order(backbone):
    model = tiny_family("vq_prior", backbone=backbone)
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(0, model.codebook_size, (2, 4, 4), generator=generator)
    labels = torch.tensor([3, 7])
    logits = model(codes, labels)  # (2, 16, K)
    assert logits.shape == (2, 16, 8)
    for k in (0, 5, 10, 15):
        changed = codes.clone().view(2, 16)
        changed[:, k] = (changed[:, k] + 1) % model.codebook_size
        after = model(changed.view(2, 4, 4), labels)
        # The logits of codes 0 … k are those of p(c_i | c_<i): they do not see code k.
        assert torch.equal(after[:, : k + 1], logits[:, : k + 1]), k
        if k < 15:
            assert not torch.allclose(after[:, k + 1 :], logits[:, k + 1 :])
    other_class = model(codes, torch.tensor([4, 8]))
    assert not torch.allclose(other_class[:, 0], logits[:, 0])  # the class reaches code 0


def test_the_gpt_prior_draws_the_same_codes_with_and_without_its_cache():
    model = tiny_family("vq_prior")
    labels = torch.arange(6) % 10

    def draw(use_cache):
        generator = torch.Generator().manual_seed(0)
        return model.generate_codes(6, labels, generator=generator, use_cache=use_cache)

    assert torch.equal(draw(True), draw(False))


def test_prior_samples_are_decoded_codes_and_follow_the_sampling_options():
    model = tiny_family("vq_prior")
    generator = torch.Generator().manual_seed(0)
    images = model.sample(4, generator=generator, labels=3)
    assert images.shape == (4, 1, 8, 8) and images.min() >= -1 and images.max() <= 1
    greedy = model.generate_codes(2, torch.tensor([3, 3]), temperature=0)
    top_1 = model.generate_codes(
        2, torch.tensor([3, 3]), top_k=1, generator=torch.Generator().manual_seed(5)
    )
    assert torch.equal(greedy, top_1)
    assert torch.equal(model.sample(2, labels=3, temperature=0), model.stage_one.decode(greedy))
    with pytest.raises(ValueError, match="top_p must lie in"):
        model.sample(1, top_p=1.5)
    unconditional = tiny_family("vq_prior", conditional=False)
    assert unconditional.sample(2).shape == (2, 1, 8, 8)
    with pytest.raises(ConfigError, match="labels= needs a class-conditional model"):
        unconditional.sample(2, labels=3)


@pytest.mark.parametrize("backbone", ["gpt", "pixelcnn"])
def test_one_batch_of_training_moves_the_prior_and_leaves_the_first_stage_frozen(backbone):
    model = tiny_family("vq_prior", backbone=backbone).train()
    first_stage = {k: v.clone() for k, v in model.stage_one.state_dict().items()}
    prior = {k: v.clone() for k, v in model.prior.state_dict().items()}
    loader = one_batch_loader(model)
    codes, _ = next(iter(loader))
    assert codes.dtype == torch.long and codes.shape == (4, 4, 4)
    fit(model, loader, steps=1)
    assert not model.stage_one.training
    assert all(torch.equal(first_stage[k], v) for k, v in model.stage_one.state_dict().items())
    assert any(not torch.equal(prior[k], v) for k, v in model.prior.state_dict().items())


def test_the_two_stage_bound_adds_the_priors_cost_of_the_codes_per_dimension():
    # 49 codes at ln 2 nats each are 49 bits, spread over 784 values: 1/16 bit/dim more.
    assert two_stage_bits_per_dim(0.5, 0.6931471805599453, 49, 784) == pytest.approx(0.5625)


def test_a_two_stage_checkpoint_rebuilds_and_samples_alike_in_a_fresh_process(tmp_path):
    model = tiny_family("vq_prior")
    torch.manual_seed(1)
    first = tiny_family("vqvae", seed=1)
    model.stage_one.load_state_dict(first.state_dict())  # as train.py copies a first stage in
    path = save_tensor(checkpoint_of(model), tmp_path / "prior.ckpt")
    expected = model.sample(3, generator=torch.Generator().manual_seed(0), labels=[1, 2, 3])
    code = (
        "import sys, torch\n"
        "from zoo.checkpoints import model_from_checkpoint\n"
        "checkpoint = torch.load(sys.argv[1], weights_only=True)\n"
        "model = model_from_checkpoint(checkpoint)\n"
        "samples = model.sample(3, generator=torch.Generator().manual_seed(0), labels=[1, 2, 3])\n"
        "torch.save(samples, sys.argv[2])\n"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(path), str(tmp_path / "samples.pt")],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert torch.equal(torch.load(tmp_path / "samples.pt", weights_only=True), expected)
    rebuilt = model_from_checkpoint(load_checkpoint(path))
    assert torch.equal(rebuilt.stage_one.quantizer.codebook, first.quantizer.codebook)


# The presets and scripts ---------------------------------------------------------------------


def test_a_prior_preset_without_its_first_stage_names_the_override():
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=vq_gpt_digits"])
    with pytest.raises(ConfigError, match=r"pass its checkpoint, model\.stage_one=outputs/vqvae_"):
        build_model(cfg.model, IMAGE_SPEC)


def test_train_both_stages_then_sample_labelled_digits_from_the_second_checkpoint_alone(tmp_path):
    first = train_run(tmp_path / "vqvae", "experiment=vqvae_digits", *SMOKE)
    assert first["family"] == "vqvae" and 0 < first["test"]["test/codebook_usage"] <= 1
    assert (tmp_path / "vqvae" / "samples" / "reconstructions_epoch_000.png").is_file()
    assert not (tmp_path / "vqvae" / "samples" / "epoch_000.png").exists()  # it draws none
    stage_one = first["checkpoints"]["last"]
    second = train_run(
        tmp_path / "prior", "experiment=vq_gpt_digits", f"model.stage_one={stage_one}", *SMOKE
    )
    assert second["family"] == "vq_prior" and second["test"]["test/perplexity"] > 1
    checkpoint = load_checkpoint(second["checkpoints"]["last"])
    recorded = checkpoint[keys.HYPER_PARAMETERS]["stage_one"]
    with open(stage_one, "rb") as file:
        assert recorded["sha256"] == hashlib.sha256(file.read()).hexdigest()
    first_weights = load_checkpoint(stage_one)[keys.STATE_DICT]
    for name, tensor in first_weights.items():
        assert torch.equal(checkpoint[keys.STATE_DICT][f"stage_one.{name}"], tensor), name

    out = tmp_path / "samples"
    process = run_script(
        "sample.py",
        f"ckpt_path={second['checkpoints']['last']}",
        "num_samples=4",
        "labels=3",
        "top_k=5",
        "temperature=0.9",
        f"output_dir={out}",
    )
    assert "images_per_second" in process.stdout
    images = torch.load(out / "samples.pt", weights_only=True)
    assert images.shape == (4, 1, 8, 8) and images.min() >= -1 and images.max() <= 1
    assert (out / "samples.png").is_file()

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("sample", overrides=[f"ckpt_path={stage_one}", f"output_dir={out}/vq"])
    with pytest.raises(ZooError, match="does not generate them: train a prior"):
        sample(cfg)
    judge = save_tensor(checkpoint_of(tiny_family("cnn_classifier")), tmp_path / "judge.ckpt")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "sample",
            overrides=[
                f"ckpt_path={second['checkpoints']['last']}",
                f"output_dir={out}/evaluated",
                "num_samples=4",
                "evaluate=true",
                f"evaluation.classifier_ckpt={judge}",
                f"evaluation.cache_dir={tmp_path / 'cache'}",
                "evaluation.metrics=[labels]",
            ],
        )
    result = sample(cfg)
    # Tested on the codes of the whole test split: after one step, about ln 64 nats per code.
    assert result["test/loss"] == pytest.approx(math.log(64), rel=0.1)
    assert 1 <= result["test/classes"] <= 10  # the samples were judged
    assert json.loads((out / "evaluated" / "evaluation.json").read_text())["test/perplexity"] > 1
