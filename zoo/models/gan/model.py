"""GAN: a generator and a discriminator trained against each other (Goodfellow et al., 2014).

Both networks are sized from the data spec (zoo/models/gan/networks.py). Losses: non-saturating,
hinge, Wasserstein with gradient penalty; regularisers: spectral norm, R1, DiffAugment;
knobs: discriminator steps per generator step (``n_critic``) and a learning rate and
betas for each network (TTUR). Training uses Lightning's manual optimisation, so both
optimizers (and schedulers) are saved in checkpoints and restored on resume. An EMA of
the generator (the shared callback, restricted to ``generator.``) is what samples by default.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from hydra.utils import instantiate

from zoo import checkpoint_format as keys
from zoo.errors import ConfigError
from zoo.models.base import GenerativeModule, check_optimizer, check_sizes
from zoo.models.gan.networks import (
    ARCHITECTURES,
    AUGMENTATIONS,
    LOSSES,
    Discriminator,
    Generator,
    diff_augment,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
    r1_penalty,
)

# Adam with β = (0, 0.9), the SNGAN/StudioGAN setting, for each network.
ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 2e-4, "betas": [0.0, 0.9]}


def truncated_normal(
    shape: tuple[int, ...], threshold: float, generator=None, device=None
) -> torch.Tensor:
    """Return N(0, 1) draws restricted to [−threshold, threshold] (the truncation trick of
    BigGAN), by inverting the normal CDF on the kept interval: one draw, no rejection."""
    low = 0.5 * (1 + math.erf(-threshold / math.sqrt(2)))  # Φ(−threshold)
    u = torch.rand(shape, generator=generator, device=device)
    return torch.special.ndtri(low + u * (1 - 2 * low))


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Return the spherical interpolation between rows of ``a`` and ``b`` (N, D) at t (S,):
    (N, S, D). Gaussian latents keep their typical norm along the path, unlike a straight line."""
    a_unit, b_unit = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    omega = torch.acos((a_unit * b_unit).sum(dim=1).clamp(-1 + 1e-7, 1 - 1e-7))[:, None, None]
    t = t[None, :, None]
    return (torch.sin((1 - t) * omega) * a[:, None] + torch.sin(t * omega) * b[:, None]) / (
        torch.sin(omega)
    )


class GAN(GenerativeModule):
    """A generator/discriminator pair; ``sample`` draws from the generator."""

    family = "gan"
    ema_prefix = "generator."  # the EMA callback averages the generator only
    compiled_networks = ("generator", "discriminator")
    optimizer_configs = ("optimizer", "discriminator_optimizer")
    logged_metrics = ("d_loss", "g_loss", "d_real", "d_fake")

    def __init__(
        self,
        spec: dict[str, Any],
        latent_dim: int = 64,
        architecture: str = "dcgan",
        width: int = 64,
        loss: str = "hinge",
        spectral_norm: bool = True,
        gp_weight: float = 10.0,
        r1_gamma: float = 0.0,
        augment: str | list[str] = "",
        n_critic: int = 1,
        conditional: bool = False,
        compile: bool = False,
        optimizer: dict[str, Any] | None = None,
        discriminator_optimizer: dict[str, Any] | None = ADAM,
        scheduler: dict[str, Any] | None = None,
        scheduler_interval: str = "epoch",
    ):
        optimizer = optimizer or ADAM  # before save_hyperparameters, which records it
        super().__init__(spec, optimizer, scheduler, scheduler_interval)
        self.save_hyperparameters()
        self.automatic_optimization = False  # two optimizers, stepped in training_step
        check_sizes(latent_dim=latent_dim, width=width)
        check_optimizer("discriminator_optimizer", discriminator_optimizer)
        if gp_weight < 0 or r1_gamma < 0:
            raise ConfigError(
                f"model.gp_weight and model.r1_gamma must be >= 0, got {gp_weight} and {r1_gamma}"
            )
        if architecture not in ARCHITECTURES:
            raise ConfigError(
                f"architecture must be one of {', '.join(ARCHITECTURES)}, got {architecture!r}"
            )
        if loss not in LOSSES:
            raise ConfigError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        if n_critic < 1:
            raise ConfigError(
                f"n_critic (discriminator steps per generator step) must be ≥ 1, got {n_critic}"
            )
        names = augment.split(",") if isinstance(augment, str) else augment
        self.policy = [name.strip() for name in names if name.strip()]
        unknown = [p for p in self.policy if p not in AUGMENTATIONS]
        if unknown:
            raise ConfigError(
                f"augment: unknown transform(s) {', '.join(unknown)}; "
                f"use a comma list of {', '.join(AUGMENTATIONS)}"
            )
        self.num_classes = self.conditional_classes(conditional)
        self.latent_dim = latent_dim
        shape = tuple(self.spec.shape)
        self.generator = Generator(shape, latent_dim, width, architecture, self.num_classes)
        self.discriminator = Discriminator(
            shape, width, architecture, self.num_classes, spectral_norm
        )
        self.discriminator_steps = 0  # optimizer steps taken, stored in checkpoints

    # Optimisation

    def configure_optimizers(self):
        make = instantiate(self.hparams.optimizer, _convert_="all")
        make_d = instantiate(
            self.hparams.discriminator_optimizer or self.hparams.optimizer, _convert_="all"
        )
        optimizers = [make(self.generator.parameters()), make_d(self.discriminator.parameters())]
        if not self.hparams.scheduler:
            return optimizers
        return optimizers, [self.make_scheduler(optimizer) for optimizer in optimizers]

    def _schedulers(self) -> list[Any]:
        schedulers = self.lr_schedulers()
        if schedulers is None:
            return []
        return list(schedulers) if isinstance(schedulers, list) else [schedulers]

    # The two losses

    def latents(self, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(count, self.latent_dim, generator=generator, device=self.device)

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        return diff_augment(images, self.policy) if self.policy else images

    def critic(self, images: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Return the discriminator's logits (B,) on augmented ``images``."""
        return self.discriminator(self.augment(images), labels)

    def discriminator_terms(
        self, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor | None, penalties: bool
    ) -> dict[str, torch.Tensor]:
        """Return the discriminator's loss (with the configured penalties when ``penalties``)
        and its parts: mean logits on real and fake images, gradient penalty, R1."""
        hp = self.hparams
        use_r1 = penalties and hp.r1_gamma > 0
        if use_r1:
            real = real.detach().requires_grad_(True)
        real_logits, fake_logits = self.critic(real, labels), self.critic(fake.detach(), labels)
        terms = {
            "adversarial": discriminator_loss(hp.loss, real_logits, fake_logits),
            "d_real": real_logits.detach().mean(),
            "d_fake": fake_logits.detach().mean(),
        }
        loss = terms["adversarial"]
        if penalties and hp.loss == "wgan_gp":
            terms["gradient_penalty"] = gradient_penalty(self.critic, real, fake, labels)
            loss = loss + hp.gp_weight * terms["gradient_penalty"]
        if use_r1:
            terms["r1"] = r1_penalty(real_logits, real)
            loss = loss + 0.5 * hp.r1_gamma * terms["r1"]
        terms["loss"] = loss
        return terms

    def training_step(self, batch, batch_idx):
        real, labels = batch
        labels = self.batch_labels(labels)
        opt_g, opt_d = self.optimizers()
        scheduler_g, scheduler_d = (self._schedulers() + [None, None])[:2]
        per_step = self.hparams.scheduler_interval == "step"

        # Discriminator: one step on every batch
        with torch.no_grad():
            fake = self.generator(self.latents(real.shape[0]), labels)
        self.toggle_optimizer(opt_d)
        terms = self.discriminator_terms(real, fake, labels, penalties=True)
        self._stop_if_diverged({"d_loss": terms["loss"]}, self.discriminator_steps + 1)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(terms["loss"])
        opt_d.step()
        self.untoggle_optimizer(opt_d)
        self.discriminator_steps += 1
        if per_step and scheduler_d is not None:
            scheduler_d.step()

        # Generator: one step every n_critic discriminator steps
        if self.discriminator_steps % self.hparams.n_critic == 0:
            self.toggle_optimizer(opt_g)
            fake = self.generator(self.latents(real.shape[0]), labels)
            g_loss = generator_loss(self.hparams.loss, self.critic(fake, labels))
            self._stop_if_diverged({"g_loss": g_loss}, self.discriminator_steps)
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(g_loss)
            opt_g.step()
            self.untoggle_optimizer(opt_g)
            if per_step and scheduler_g is not None:
                scheduler_g.step()
            self.log("train/g_loss", g_loss, on_step=True, on_epoch=True, prog_bar=True)

        self.log("train/d_loss", terms["loss"], on_step=True, on_epoch=True, prog_bar=True)
        for name in ("d_real", "d_fake", "gradient_penalty", "r1"):
            if name in terms:
                self.log(f"train/{name}", terms[name], on_step=True, on_epoch=True)

    def _stop_if_diverged(self, losses: dict[str, torch.Tensor], step: int) -> None:
        """Raises TrainingDivergedError before an optimizer step on a non-finite loss."""
        self.stop_if_diverged(
            losses,
            where=f"discriminator step {step}",
            advice="Lower the learning rates, or use loss=hinge with spectral_norm=true "
            "or r1_gamma > 0",
        )

    def on_train_epoch_end(self):
        if self.hparams.scheduler_interval != "step":
            for scheduler in self._schedulers():
                scheduler.step()

    def _step(self, batch, stage: str) -> torch.Tensor:
        """Logs the losses on held-out real images against fresh samples (no penalties)."""
        real, labels = batch
        labels = self.batch_labels(labels)
        fake = self.generator(self.latents(real.shape[0]), labels)
        terms = self.discriminator_terms(real, fake, labels, penalties=False)
        g_loss = generator_loss(self.hparams.loss, self.critic(fake, labels))
        self.log(f"{stage}/d_loss", terms["loss"], on_epoch=True, prog_bar=True)
        self.log(f"{stage}/g_loss", g_loss, on_epoch=True)
        self.log(f"{stage}/d_real", terms["d_real"], on_epoch=True)
        self.log(f"{stage}/d_fake", terms["d_fake"], on_epoch=True)
        return terms["loss"]

    @property
    def generator_steps(self) -> int:
        """The generator steps taken: one every n_critic discriminator steps."""
        return self.discriminator_steps // self.hparams.n_critic

    def training_step_counts(self) -> dict[str, int]:
        return {"discriminator": self.discriminator_steps, "generator": self.generator_steps}

    # Checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint[keys.GAN_STEPS] = self.training_step_counts()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        steps = checkpoint.get(keys.GAN_STEPS, {})
        self.discriminator_steps = steps.get("discriminator", 0)

    # The shared sampling call

    @torch.no_grad()
    def sample(
        self,
        num_samples: int,
        *,
        generator: torch.Generator | None = None,
        labels: list[int] | int | None = None,
        truncation: float | None = None,
        interpolate: int | None = None,
    ) -> torch.Tensor:
        """Return images (N, C, H, W) in [-1, 1] from the generator.

        ``labels`` (one or N class ids) for a conditional model (default: every class in
        turn); ``truncation`` τ draws latents from N(0, 1) cut to [−τ, τ] (fidelity for
        variety); ``interpolate`` S lays the N images out as N/S rows, each walking the
        latent sphere in S steps between two random latents (with one label per row).
        """
        if truncation is not None and truncation <= 0:
            raise ValueError(f"truncation must be > 0, got {truncation}")
        rows = num_samples
        if interpolate is not None:
            if interpolate < 2 or num_samples % interpolate:
                raise ValueError(
                    f"interpolate={interpolate} lays samples out in rows of that many steps: "
                    f"it must be ≥ 2 and divide num_samples={num_samples}"
                )
            rows = num_samples // interpolate
        count = 2 * rows if interpolate else num_samples
        z = (
            truncated_normal((count, self.latent_dim), truncation, generator, self.device)
            if truncation
            else self.latents(count, generator)
        )
        label_ids = self.sample_labels(labels, rows)
        if interpolate:
            t = torch.linspace(0, 1, interpolate, device=self.device)
            z = slerp(z[:rows], z[rows:], t).flatten(0, 1)  # (rows·S, D), row by row
            if label_ids is not None:
                label_ids = label_ids.repeat_interleave(interpolate)
        return self.generator(z, label_ids).clamp(-1, 1)
