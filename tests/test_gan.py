"""The GAN: losses and penalties against closed forms, spectral norm, the n_critic schedule,
exact resume, divergence stops, every loss trains, and sample.py end to end."""

import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import SMOKE, run_script, train_run
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from zoo.callbacks import EMA
from zoo.checkpoints import load_checkpoint
from zoo.data import DigitsDataModule
from zoo.data.spec import DataSpec
from zoo.errors import ConfigError, TrainingDivergedError
from zoo.models import GAN
from zoo.models.gan import slerp, truncated_normal
from zoo.models.gan.networks import (
    Discriminator,
    Generator,
    diff_augment,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
    num_stages,
    r1_penalty,
)

DIGITS_SPEC = DataSpec(modality="image", shape=(1, 8, 8), num_levels=17, num_classes=10).to_dict()


# Losses and penalties against their closed forms


def test_non_saturating_losses_match_the_log_sigmoid_forms():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    sigmoid = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    expected_d = (
        -sum(math.log(sigmoid(r)) for r in (2.0, -1.0)) / 2
        - sum(math.log(1 - sigmoid(f)) for f in (0.5, -3.0)) / 2
    )
    expected_g = -sum(math.log(sigmoid(f)) for f in (0.5, -3.0)) / 2
    assert discriminator_loss("non_saturating", real, fake).item() == pytest.approx(expected_d)
    assert generator_loss("non_saturating", fake).item() == pytest.approx(expected_g)


def test_hinge_losses_match_their_definition():
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-2.0, 0.0, 1.5])
    # D: mean max(0, 1 − r) = (0 + 0.5 + 2)/3; mean max(0, 1 + f) = (0 + 1 + 2.5)/3
    assert discriminator_loss("hinge", real, fake).item() == pytest.approx(2.5 / 3 + 3.5 / 3)
    assert generator_loss("hinge", fake).item() == pytest.approx(-(-2.0 + 0.0 + 1.5) / 3)


def test_wasserstein_losses_are_the_critic_gap():
    real, fake = torch.tensor([3.0, 1.0]), torch.tensor([-1.0, 0.0])
    assert discriminator_loss("wgan_gp", real, fake).item() == pytest.approx(-0.5 - 2.0)
    assert generator_loss("wgan_gp", fake).item() == pytest.approx(0.5)


def test_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="loss must be one of"):
        discriminator_loss("least_squares", torch.zeros(1), torch.zeros(1))


def test_gradient_penalty_of_a_linear_critic_is_its_weight_norm_minus_one_squared():
    w = torch.tensor([3.0, 0.0, 4.0, 0.0]).view(1, 1, 2, 2)  # ‖w‖ = 5 everywhere
    critic = lambda x, labels: (x * w).flatten(1).sum(1)  # noqa: E731
    real, fake = torch.randn(6, 1, 2, 2), torch.randn(6, 1, 2, 2)
    assert gradient_penalty(critic, real, fake).item() == pytest.approx((5.0 - 1.0) ** 2)


def test_gradient_penalty_of_a_quadratic_critic_matches_the_hand_computed_gradient():
    # D(x) = Σx², ∇D = 2x̂; with real = fake every interpolate is that image
    critic = lambda x, labels: x.pow(2).flatten(1).sum(1)  # noqa: E731
    images = torch.tensor([[[[0.3, 0.4]]], [[[1.0, 0.0]]]])  # norms 0.5 and 1
    expected = ((2 * 0.5 - 1) ** 2 + (2 * 1.0 - 1) ** 2) / 2
    assert gradient_penalty(critic, images, images).item() == pytest.approx(expected)
    # and it is differentiable (the critic's weights get its gradient)
    scale = torch.tensor(1.0, requires_grad=True)
    penalty = gradient_penalty(lambda x, _: scale * x.pow(2).flatten(1).sum(1), images, images)
    penalty.backward()
    assert scale.grad is not None and scale.grad.abs() > 0


def test_r1_penalty_is_the_squared_gradient_norm_on_real_images():
    real = torch.tensor([[[[1.0, 2.0]]], [[[0.0, 3.0]]]], requires_grad=True)
    logits = real.pow(2).flatten(1).sum(1)  # ∇ = 2x: ‖·‖² = 4·(1+4) and 4·9
    assert r1_penalty(logits, real).item() == pytest.approx((20 + 36) / 2)


# Networks


@pytest.mark.parametrize(
    "shape,stages", [((1, 8, 8), 1), ((1, 28, 28), 2), ((3, 32, 32), 3), ((3, 64, 64), 4)]
)
@pytest.mark.parametrize("architecture", ["dcgan", "resnet"])
def test_networks_are_sized_from_the_image_shape(shape, stages, architecture):
    assert num_stages(*shape[1:]) == stages
    g = Generator(shape, latent_dim=8, width=8, architecture=architecture, num_classes=10)
    d = Discriminator(shape, width=8, architecture=architecture, num_classes=10)
    labels = torch.tensor([1, 2])
    images = g(torch.randn(2, 8), labels)
    assert images.shape == (2, *shape) and images.abs().max() <= 1
    assert d(images, labels).shape == (2,)


def test_spectral_norm_bounds_the_largest_singular_value_of_every_layer():
    torch.manual_seed(0)  # whatever ran before: the power iteration starts from random vectors
    d = Discriminator((1, 8, 8), width=16, architecture="dcgan", num_classes=10)
    with torch.no_grad():  # power iteration runs on every training-mode forward
        for _ in range(30):
            d(torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,)))
    layers = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    assert layers
    for layer in layers:
        sigma = torch.linalg.matrix_norm(layer.weight.detach().flatten(1), ord=2).item()
        original = torch.linalg.matrix_norm(
            layer.parametrizations.weight.original.detach().flatten(1), ord=2
        ).item()
        assert sigma == pytest.approx(1.0, abs=0.05)
        assert original != pytest.approx(1.0, abs=0.05)  # the raw weight is not normalised


def test_projection_discriminator_and_conditional_generator_use_the_labels():
    torch.manual_seed(0)
    g = Generator((1, 8, 8), 8, 8, num_classes=10).eval()
    d = Discriminator((1, 8, 8), 8, num_classes=10)
    with torch.no_grad():
        g.out_norm.embed.weight.normal_()  # away from the identity initialisation
    z = torch.randn(1, 8).repeat(2, 1)
    images = g(z, torch.tensor([0, 1]))
    assert not torch.allclose(images[0], images[1])
    x = torch.randn(1, 1, 8, 8).repeat(2, 1, 1, 1)
    logits = d(x, torch.tensor([0, 1]))
    assert logits[0] != logits[1]


def test_diff_augment_translates_within_an_eighth_and_passes_gradients():
    torch.manual_seed(0)
    x = torch.full((64, 1, 8, 8), -1.0)
    x[:, :, 3:5, 3:5] = 1.0  # a bright square in the middle
    moved = diff_augment(x, ["translation"])
    assert moved.shape == x.shape
    # the square moved by at most one pixel each way and kept its size
    centres = [torch.nonzero(image[0] > 0).float().mean(0) for image in moved]
    offsets = torch.stack(centres) - torch.tensor([3.5, 3.5])
    assert offsets.abs().max() <= 1.0 and (offsets != 0).any()
    assert ((moved > 0).flatten(1).sum(1) == 4).all()
    source = x.clone().requires_grad_(True)
    diff_augment(source, ["color", "translation", "cutout"]).sum().backward()
    assert source.grad is not None and source.grad.abs().sum() > 0


def test_cutout_blanks_a_quarter_of_each_image():
    x = torch.ones(16, 3, 8, 8)
    cut = diff_augment(x, ["cutout"])
    assert ((cut == -1).all(dim=1).flatten(1).sum(1) == 16).all()  # a 4×4 square


def test_unknown_settings_are_refused_with_the_choices():
    with pytest.raises(ConfigError, match="color, translation, cutout"):
        GAN(DIGITS_SPEC, augment="translation,flip")
    with pytest.raises(ConfigError, match="non_saturating, hinge, wgan_gp"):
        GAN(DIGITS_SPEC, loss="least_squares")
    with pytest.raises(ConfigError, match="n_critic"):
        GAN(DIGITS_SPEC, n_critic=0)
    text = DataSpec(modality="text", vocab_size=5).to_dict()
    with pytest.raises(ConfigError, match="image data set"):
        GAN(text)


# Sampling


def test_truncated_latents_stay_within_the_threshold_and_keep_the_normal_shape():
    z = truncated_normal((20000,), 1.0, torch.Generator().manual_seed(0))
    assert z.abs().max() <= 1.0
    # the standard deviation of N(0, 1) cut to [−1, 1] is 0.5379
    assert z.std().item() == pytest.approx(0.5379, abs=0.01)
    assert z.mean().item() == pytest.approx(0.0, abs=0.02)


def test_slerp_runs_from_one_latent_to_the_other_on_the_sphere():
    a, b = torch.randn(3, 16), torch.randn(3, 16)
    path = slerp(a, b, torch.linspace(0, 1, 5))
    assert path.shape == (3, 5, 16)
    assert torch.allclose(path[:, 0], a, atol=1e-5) and torch.allclose(path[:, -1], b, atol=1e-5)


def test_sample_options_of_the_gan():
    model = GAN(DIGITS_SPEC, width=8, latent_dim=8, conditional=True).eval()
    generator = torch.Generator().manual_seed(1)
    assert model.sample(6, generator=generator, labels=[3]).shape == (6, 1, 8, 8)
    grid = model.sample(8, generator=generator, interpolate=4)
    assert grid.shape == (8, 1, 8, 8)
    draw = lambda: model.sample(4, generator=torch.Generator().manual_seed(5), truncation=0.5)  # noqa: E731
    assert torch.equal(draw(), draw())
    with pytest.raises(ValueError, match="divide num_samples"):
        model.sample(7, interpolate=4)
    with pytest.raises(ConfigError, match="labels must lie"):
        model.sample(2, labels=[10])
    with pytest.raises(ConfigError, match="class-conditional"):
        GAN(DIGITS_SPEC, width=8).sample(2, labels=[1])


# Training


class RecordLosses(Callback):
    """Records the logged per-step losses of every training batch, by epoch."""

    def __init__(self):
        self.losses: dict[int, list[tuple[float, ...]]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        metrics = trainer.callback_metrics
        row = tuple(
            float(metrics[name])
            for name in ("train/d_loss_step", "train/g_loss_step")
            if name in metrics
        )
        self.losses.setdefault(trainer.current_epoch, []).append(row)


def digits(batch_size: int = 32) -> DigitsDataModule:
    return DigitsDataModule(batch_size=batch_size)


def fit_gan(model, *, max_epochs=1, limit_train_batches=4, callbacks=(), ckpt_path=None, **kw):
    trainer = L.Trainer(
        max_epochs=max_epochs,
        limit_train_batches=limit_train_batches,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        accelerator="cpu",
        callbacks=list(callbacks),
        **kw,
    )
    trainer.fit(model, datamodule=digits(), ckpt_path=ckpt_path, weights_only=True)
    return trainer


def small_gan(**options) -> GAN:
    return GAN(DIGITS_SPEC, width=8, latent_dim=8, **options)


def test_n_critic_steps_the_generator_once_every_n_discriminator_steps():
    torch.manual_seed(0)
    model = small_gan(n_critic=3)
    trainer = fit_gan(model, limit_train_batches=7)
    assert (model.discriminator_steps, model.generator_steps) == (7, 2)
    opt_g, opt_d = trainer.optimizers
    step_of = lambda opt: {int(s["step"]) for s in opt.state.values()}  # noqa: E731
    assert step_of(opt_d) == {7} and step_of(opt_g) == {2}
    assert trainer.global_step == 9  # Lightning counts the steps of both optimizers


@pytest.mark.parametrize(
    "options",
    [
        {"loss": "non_saturating", "spectral_norm": False},
        {"loss": "hinge"},
        {"loss": "wgan_gp", "spectral_norm": False, "n_critic": 2},
        {"loss": "non_saturating", "r1_gamma": 1.0, "augment": "color,translation,cutout"},
        {"loss": "hinge", "architecture": "resnet", "conditional": True},
    ],
    ids=["non_saturating", "hinge", "wgan_gp", "r1_diffaugment", "resnet_conditional"],
)
def test_one_batch_of_every_loss_and_regulariser_trains_both_networks(options):
    torch.manual_seed(0)
    model = small_gan(**options)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    recorder = RecordLosses()
    fit_gan(model, limit_train_batches=2, callbacks=[recorder])
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert any(n.startswith("generator.") for n in changed)
    assert any(n.startswith("discriminator.") for n in changed)
    assert all(math.isfinite(v) for row in recorder.losses[0] for v in row)


def test_bf16_mixed_precision_trains_with_the_gradient_penalty():
    torch.manual_seed(0)
    model = small_gan(loss="wgan_gp", spectral_norm=False)
    recorder = RecordLosses()
    fit_gan(model, limit_train_batches=2, callbacks=[recorder], precision="bf16-mixed")
    assert all(math.isfinite(v) for row in recorder.losses[0] for v in row)


def test_resume_from_a_checkpoint_reproduces_the_next_steps_losses(tmp_path):
    """Run A trains two epochs; run B resumes from A's first-epoch checkpoint: B's second
    epoch (shuffled data, noise, augmentation, both optimizers, the EMA) is A's, step for step."""

    def run(ckpt_path=None):
        L.seed_everything(0)
        recorder = RecordLosses()
        checkpoints = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, filename="{epoch}")
        model = small_gan(augment="translation")
        fit_gan(
            model,
            max_epochs=2,
            callbacks=[recorder, checkpoints, EMA(decay=0.9)],
            ckpt_path=ckpt_path,
        )
        return recorder.losses, model

    first, model_a = run()
    resumed, model_b = run(ckpt_path=tmp_path / "epoch=0.ckpt")
    assert list(resumed) == [1] and len(resumed[1]) == 4
    flat = lambda rows: [value for row in rows for value in row]  # noqa: E731
    assert flat(resumed[1]) == pytest.approx(flat(first[1]), rel=1e-5)
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    for name, a in state_a.items():
        assert torch.allclose(a, state_b[name], atol=1e-6), name
    assert model_b.training_step_counts() == {"discriminator": 8, "generator": 8}


def test_both_schedulers_step_and_are_saved_and_restored(tmp_path):
    halve = {"_target_": "torch.optim.lr_scheduler.StepLR", "_partial_": True, "step_size": 1}
    halve["gamma"] = 0.5
    checkpoints = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, filename="{epoch}")
    torch.manual_seed(0)
    trainer = fit_gan(small_gan(scheduler=halve), max_epochs=2, callbacks=[checkpoints])
    assert [group["lr"] for opt in trainer.optimizers for group in opt.param_groups] == [5e-5] * 2
    saved = torch.load(tmp_path / "epoch=0.ckpt", weights_only=True)
    assert len(saved["lr_schedulers"]) == 2 and len(saved["optimizer_states"]) == 2
    resumed = fit_gan(
        small_gan(scheduler=halve),
        max_epochs=2,
        callbacks=[ModelCheckpoint(dirpath=tmp_path / "resumed")],
        ckpt_path=tmp_path / "epoch=0.ckpt",
    )
    lrs = [group["lr"] for opt in resumed.optimizers for group in opt.param_groups]
    assert lrs == [5e-5] * 2  # 2e-4 halved after each of the two epochs, one before the resume


class PoisonDiscriminator(Callback):
    """Makes the discriminator's output NaN from the second epoch on."""

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            with torch.no_grad():
                pl_module.discriminator.head.parametrizations.weight.original.fill_(float("nan"))


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    torch.manual_seed(0)
    checkpoints = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    with pytest.raises(TrainingDivergedError, match="last good checkpoint is .*last.ckpt") as error:
        fit_gan(small_gan(), max_epochs=3, callbacks=[checkpoints, PoisonDiscriminator()])
    assert "d_loss=nan" in str(error.value)
    kept = load_checkpoint(tmp_path / "last.ckpt")
    assert kept["epoch"] == 0
    weights = [t for t in kept["state_dict"].values() if t.is_floating_point()]
    assert all(torch.isfinite(t).all() for t in weights)


# The scripts, as a user runs them


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory) -> Path:
    """experiment=gan_digits, two epochs of two batches, class-conditional."""
    run_dir = tmp_path_factory.mktemp("gan") / "run"
    train_run(
        run_dir,
        "experiment=gan_digits",
        *SMOKE,
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=2",
        "model.conditional=true",
        "model.width=16",
        f"paths.judges_dir={run_dir.parent / 'no_judges'}",  # the same with or without one
    )
    return run_dir


def test_train_py_writes_a_gan_checkpoint_with_both_optimizers_and_the_generator_ema(gan_run):
    results = json.loads((gan_run / "results.json").read_text())
    assert results["family"] == "gan" and results["global_step"] == 8  # 4 D + 4 G steps
    assert {"val/d_loss", "val/d_real", "val/d_fake", "val/g_loss"} <= results["val"].keys()
    log = (gan_run / "train.log").read_text()
    assert "sample quality is not tracked during training: no classifier" in log
    checkpoint = torch.load(results["checkpoints"]["last"], weights_only=True)
    assert len(checkpoint["optimizer_states"]) == 2
    assert checkpoint["gan_steps"] == {"discriminator": 4, "generator": 4}
    assert checkpoint["ema_state_dict"]
    assert all(name.startswith("generator.") for name in checkpoint["ema_state_dict"])


def test_sample_py_draws_labels_truncation_and_an_interpolation_grid(gan_run, tmp_path):
    last = gan_run / "checkpoints" / "last.ckpt"
    out = tmp_path / "labels"
    run_script("sample.py", f"ckpt_path={last}", "num_samples=8", "labels=3", f"output_dir={out}")
    assert torch.load(out / "samples.pt").shape == (8, 1, 8, 8)
    grid = tmp_path / "grid"
    process = run_script(
        "sample.py",
        f"ckpt_path={last}",
        "num_samples=12",
        "interpolate=6",
        "truncation=0.7",
        f"output_dir={grid}",
    )
    assert (grid / "samples.png").is_file() and "images_per_second" in process.stdout
    refused = run_script(
        "sample.py", f"ckpt_path={last}", "interpolate=5", "num_samples=12", check=False
    )
    assert refused.returncode != 0 and "divide num_samples=12" in refused.stderr


def test_train_py_runs_the_gan_on_two_ddp_processes(tmp_path):
    # In the discriminator's step the generator gets no gradient: the runner tells DDP to
    # expect unused parameters for families with manual optimisation.
    results = train_run(
        tmp_path / "ddp",
        "experiment=gan_digits",
        *SMOKE,
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        "model.width=16",
        f"paths.judges_dir={tmp_path / 'no_judges'}",
    )
    assert results["family"] == "gan" and results["global_step"] == 2
    assert math.isfinite(results["val"]["val/d_loss"])
