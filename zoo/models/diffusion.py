"""Diffusion: DDPM training with a UNet, DDPM/DDIM/DPM-Solver++ samplers, classifier-free
guidance and the variational bound in bits/dim.

Ho et al. (2020, DDPM); Nichol & Dhariwal (2021, improved DDPM: cosine schedule);
Song et al. (2021, DDIM); Lu et al. (2022, DPM-Solver++); Ho & Salimans (2022,
classifier-free guidance); Hang et al. (2023, min-SNR-γ weighting).

The noise schedule and the samplers are plain math with no weights
(``NoiseSchedule``, ``ddpm_sample``, ``ddim_sample``, ``dpm_solver_sample``): each
sampler only calls a function ``x_t, t ↦ x̂₀``, so one trained network serves them all.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from tqdm.auto import tqdm

from zoo.errors import ConfigError
from zoo.metrics import bits_per_dim
from zoo.models.base import GenerativeModule, check_fractions, check_sizes
from zoo.nn.distributions import discretized_gaussian_log_prob, gaussian_kl
from zoo.nn.unet import UNet

# The noise schedule ---------------------------------------------------------------------------


class NoiseSchedule:
    """The forward process q(x_t | x₀) = N(√ᾱ_t x₀, (1 − ᾱ_t) I) for t = 0 … T−1, in float64.

    ``linear``: β_t evenly spaced from ``beta_start`` to ``beta_end`` (DDPM);
    ``cosine``: ᾱ_t = f(t+1)/f(0) with f(u) = cos²((u/T + s)/(1 + s) · π/2), β clipped at 0.999
    (improved DDPM). Index t here is the paper's t+1: x_t is noisier than x₀ even at t = 0.
    """

    def __init__(
        self,
        kind: str = "cosine",
        num_steps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
    ):
        if kind == "linear":
            betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
        elif kind == "cosine":
            s = 0.008
            u = torch.arange(num_steps + 1, dtype=torch.float64)
            f = torch.cos((u / num_steps + s) / (1 + s) * math.pi / 2) ** 2
            betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
        else:
            raise ConfigError(f"model.schedule must be 'linear' or 'cosine', got {kind!r}")
        self.kind, self.num_steps = kind, num_steps
        self.betas = betas
        self.alphas_cumprod = torch.cumprod(1 - betas, dim=0)
        self.alphas_cumprod_prev = torch.cat(
            [torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]]
        )
        # q(x_{t-1} | x_t, x₀) = N(coef_x0 · x₀ + coef_xt · x_t, posterior_variance)
        self.posterior_variance = betas * (1 - self.alphas_cumprod_prev) / (1 - self.alphas_cumprod)
        self.posterior_coef_x0 = betas * self.alphas_cumprod_prev.sqrt() / (1 - self.alphas_cumprod)
        self.posterior_coef_xt = (
            (1 - self.alphas_cumprod_prev) * (1 - betas).sqrt() / (1 - self.alphas_cumprod)
        )
        # The variance is 0 at t = 0; its log is clipped to the next value (improved DDPM).
        self.posterior_log_variance = torch.log(
            torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]])
        )

    def at(self, values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Return ``values[t]`` shaped (B, 1, 1, 1) in ``like``'s dtype and device."""
        return values.to(like.device)[t].to(like.dtype).view(-1, *([1] * (like.dim() - 1)))

    def alpha_sigma(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return √ᾱ_t and √(1 − ᾱ_t), shaped to broadcast over ``like``."""
        alpha_bar = self.at(self.alphas_cumprod, t, like)
        return alpha_bar.sqrt(), (1 - alpha_bar).sqrt()

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Return x_t = √ᾱ_t x₀ + √(1 − ᾱ_t) ε."""
        alpha, sigma = self.alpha_sigma(t, x0)
        return alpha * x0 + sigma * noise

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """Return the signal-to-noise ratio ᾱ_t / (1 − ᾱ_t) at timesteps t (B,)."""
        alpha_bar = self.alphas_cumprod.to(t.device)[t]
        return alpha_bar / (1 - alpha_bar)

    # Conversions between what a network may predict: ε, x₀ and v = √ᾱ ε − √(1−ᾱ) x₀.

    def target(
        self, kind: str, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        """Return the training target of a ``kind`` (``epsilon``, ``x0``, ``v``) prediction."""
        if kind == "epsilon":
            return noise
        if kind == "x0":
            return x0
        alpha, sigma = self.alpha_sigma(t, x0)
        return alpha * noise - sigma * x0

    def to_x0(
        self, kind: str, prediction: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        """Return x̂₀ from a ``kind`` prediction at x_t."""
        alpha, sigma = self.alpha_sigma(t, x_t)
        if kind == "epsilon":
            return (x_t - sigma * prediction) / alpha
        if kind == "x0":
            return prediction
        return alpha * x_t - sigma * prediction

    def loss_weight(self, kind: str, t: torch.Tensor, weighting: str, gamma: float) -> torch.Tensor:
        """Return per-example weights (B,) of the MSE on a ``kind`` target.

        ``uniform``: 1 (DDPM's L_simple for ε). ``min_snr``: min(SNR, γ) expressed for the
        target: /SNR for ε, ×1 for x₀, /(SNR + 1) for v (Hang et al., 2023, eq. 8 ff.).
        """
        if weighting == "uniform":
            return torch.ones(t.shape, device=t.device)
        snr = self.snr(t)
        clipped = snr.clamp(max=gamma)
        denominator = {"epsilon": snr, "x0": torch.ones_like(snr), "v": snr + 1}[kind]
        return (clipped / denominator).float()


# The samplers: functions of a denoiser x_t, t ↦ x̂₀ ---------------------------------------------

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _timesteps(schedule: NoiseSchedule, steps: int) -> list[int]:
    """Return ``steps`` timesteps from T−1 down to 0, evenly spaced (both ends included)."""
    if not 1 <= steps <= schedule.num_steps:
        raise ConfigError(f"steps must lie in 1 … {schedule.num_steps}, got {steps}")
    return (
        torch.linspace(schedule.num_steps - 1, 0, steps)
        .round()
        .long()
        .unique_consecutive()
        .tolist()
    )


def _logsnr_timesteps(schedule: NoiseSchedule, count: int) -> list[int]:
    """Return about ``count`` timesteps from T−1 down to 0 whose λ = log(α/σ) are evenly spaced.

    DPM-Solver's recommended grid: a uniform grid in t puts a huge λ step at the
    noisy end (ᾱ is almost 0 there), which costs a multistep solver most of its accuracy.
    """
    if count < 2:
        raise ConfigError(f"steps must be at least 1, got {count - 1}")
    alphas_cumprod = schedule.alphas_cumprod
    log_snr = 0.5 * torch.log(alphas_cumprod / (1 - alphas_cumprod))  # λ_t, decreasing in t
    targets = torch.linspace(log_snr[-1].item(), log_snr[0].item(), count, dtype=torch.float64)
    nearest = (log_snr[None, :] - targets[:, None]).abs().argmin(dim=1)
    return nearest.unique_consecutive().tolist()


def _full(t: int, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)


def _progress(iterable, enabled: bool, name: str):
    return tqdm(iterable, desc=name, leave=False) if enabled else iterable


def ddpm_sample(
    denoise: Denoiser,
    schedule: NoiseSchedule,
    noise: torch.Tensor,
    generator=None,
    progress: bool = False,
) -> torch.Tensor:
    """Return x₀ by ancestral sampling through all T steps, x_{t−1} ~ q(x_{t−1} | x_t, x̂₀)."""
    x = noise
    for t in _progress(range(schedule.num_steps - 1, -1, -1), progress, "DDPM"):
        tt = _full(t, x)
        x0 = denoise(x, tt)
        mean = (
            schedule.at(schedule.posterior_coef_x0, tt, x) * x0
            + schedule.at(schedule.posterior_coef_xt, tt, x) * x
        )
        if t > 0:
            z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = mean + (0.5 * schedule.at(schedule.posterior_log_variance, tt, x)).exp() * z
        else:
            x = mean  # = x̂₀: ᾱ_{−1} = 1
    return x


def ddim_sample(
    denoise: Denoiser,
    schedule: NoiseSchedule,
    noise: torch.Tensor,
    steps: int = 50,
    eta: float = 0.0,
    generator=None,
    progress: bool = False,
) -> torch.Tensor:
    """Return x₀ after ``steps`` DDIM updates (Song et al., eq. 12); η=0 deterministic."""
    x = noise
    timesteps = _timesteps(schedule, steps)
    for index in _progress(range(len(timesteps)), progress, "DDIM"):
        t = timesteps[index]
        tt = _full(t, x)
        x0 = denoise(x, tt)
        alpha_bar = schedule.alphas_cumprod[t].item()
        alpha_bar_next = (
            schedule.alphas_cumprod[timesteps[index + 1]].item()
            if index + 1 < len(timesteps)
            else 1.0
        )
        epsilon = (x - math.sqrt(alpha_bar) * x0) / math.sqrt(1 - alpha_bar)
        sigma = eta * math.sqrt(
            (1 - alpha_bar_next) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_next)
        )
        x = (
            math.sqrt(alpha_bar_next) * x0
            + math.sqrt(max(1 - alpha_bar_next - sigma**2, 0.0)) * epsilon
        )
        if sigma > 0:
            x = x + sigma * torch.randn(
                x.shape, generator=generator, device=x.device, dtype=x.dtype
            )
    return x


def dpm_solver_sample(
    denoise: Denoiser,
    schedule: NoiseSchedule,
    noise: torch.Tensor,
    steps: int = 20,
    progress: bool = False,
) -> torch.Tensor:
    """Return x₀ after ``steps`` DPM-Solver++(2M) updates (Lu et al., 2022, Algorithm 2).

    A second-order multistep solver of the diffusion ODE in x₀-prediction form, in
    λ = log(α/σ), on a grid uniform in λ; the first step is first order (it is DDIM's),
    and the result is the denoiser's x̂₀ at the last timestep (t = 0).
    """
    timesteps = _logsnr_timesteps(schedule, steps + 1)
    x = noise
    previous_x0, previous_h = None, None
    for index in _progress(range(len(timesteps) - 1), progress, "DPM-Solver++"):
        t, s = timesteps[index], timesteps[index + 1]
        alpha_t, alpha_s = (schedule.alphas_cumprod[[t, s]].sqrt()).tolist()
        sigma_t, sigma_s = ((1 - schedule.alphas_cumprod[[t, s]]).sqrt()).tolist()
        h = math.log(alpha_s / sigma_s) - math.log(alpha_t / sigma_t)  # λ_s − λ_t > 0
        x0 = denoise(x, _full(t, x))
        if previous_x0 is None:
            direction = x0
        else:
            r = previous_h / h
            direction = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * previous_x0
        x = (sigma_s / sigma_t) * x - alpha_s * math.expm1(-h) * direction
        previous_x0, previous_h = x0, h
    return denoise(x, _full(timesteps[-1], x))


SAMPLERS = ("ddpm", "ddim", "dpm_solver")


# The LightningModule ---------------------------------------------------------------------------


class Diffusion(GenerativeModule):
    """A DDPM whose UNet predicts ε, x₀ or v; any sampler can draw from it."""

    family = "diffusion"
    compiled_networks = ("unet",)

    def __init__(
        self,
        spec: dict[str, Any],
        schedule: str = "cosine",
        num_steps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        prediction: str = "epsilon",
        loss_weighting: str = "uniform",
        min_snr_gamma: float = 5.0,
        base_channels: int = 64,
        channel_multipliers: list[int] | tuple[int, ...] = (1, 2),
        num_res_blocks: int = 2,
        attention_resolutions: list[int] | tuple[int, ...] = (4,),
        num_heads: int = 4,
        dropout: float = 0.1,
        conditional: bool = False,
        label_dropout: float = 0.1,
        sampler: str = "dpm_solver",
        sampler_steps: int = 20,
        clip: str = "clip",
        bound_timesteps: int | None = None,
        compile: bool = False,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        scheduler_interval: str = "epoch",
    ):
        optimizer = optimizer or {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 2e-4}
        super().__init__(spec, optimizer, scheduler, scheduler_interval)
        self.save_hyperparameters()
        check_sizes(
            num_steps=num_steps,
            base_channels=base_channels,
            channel_multipliers=list(channel_multipliers),
            num_res_blocks=num_res_blocks,
            num_heads=num_heads,
            sampler_steps=sampler_steps,
        )
        check_fractions(dropout=dropout, label_dropout=label_dropout)
        if prediction not in ("epsilon", "x0", "v"):
            raise ConfigError(f"model.prediction must be epsilon, x0 or v, got {prediction!r}")
        if loss_weighting not in ("uniform", "min_snr"):
            raise ConfigError(
                f"model.loss_weighting must be uniform or min_snr, got {loss_weighting!r}"
            )
        self.check_sample_options(sampler, sampler_steps, clip)
        self.noise_schedule = NoiseSchedule(schedule, num_steps, beta_start, beta_end)
        self.num_classes = self.conditional_classes(conditional)
        self.unet = UNet(
            tuple(self.spec.shape),
            base_channels=base_channels,
            channel_multipliers=tuple(channel_multipliers),
            num_res_blocks=num_res_blocks,
            attention_resolutions=tuple(attention_resolutions),
            num_heads=num_heads,
            dropout=dropout,
            num_classes=self.num_classes,
        )

    @staticmethod
    def check_sample_options(sampler: str, steps: int, clip: str) -> None:
        if sampler not in SAMPLERS:
            raise ConfigError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
        if steps < 1:
            raise ConfigError(f"steps must be at least 1, got {steps}")
        if clip not in ("none", "clip", "dynamic"):
            raise ConfigError(f"clip must be none, clip or dynamic, got {clip!r}")

    # Training

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None):
        """Return the UNet's prediction (ε, x₀ or v) at x_t, t."""
        return self.unet(x_t, t, labels)

    def _loss(
        self, x0: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Return the weighted MSE of the prediction at random timesteps and noise."""
        b, device = x0.shape[0], x0.device
        t = torch.randint(
            0, self.noise_schedule.num_steps, (b,), device=device, generator=generator
        )
        noise = torch.randn(x0.shape, device=device, generator=generator)
        x_t = self.noise_schedule.add_noise(x0, noise, t)
        labels = self.batch_labels(labels)
        if labels is not None:
            # Classifier-free guidance: learn the unconditional model on a share of the batch.
            drop = torch.rand(b, device=device, generator=generator) < self.hparams.label_dropout
            labels = torch.where(drop, torch.full_like(labels, self.num_classes), labels)
        prediction = self(x_t, t, labels)
        target = self.noise_schedule.target(self.hparams.prediction, x0, noise, t)
        weights = self.noise_schedule.loss_weight(
            self.hparams.prediction, t, self.hparams.loss_weighting, self.hparams.min_snr_gamma
        )
        return (weights * (prediction - target).pow(2).flatten(1).mean(1)).mean()

    def training_step(self, batch, batch_idx):
        loss = self._loss(*batch)
        self.stop_if_diverged({"loss": loss})
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        # The same timesteps and noise at every validation, so that epochs compare and the
        # best checkpoint is picked by the model, not by the luck of the draw.
        generator = torch.Generator(device=self.device).manual_seed(batch_idx)
        self.log("val/loss", self._loss(*batch, generator=generator), on_epoch=True, prog_bar=True)

    def test_step(self, batch, batch_idx):
        x0, labels = batch
        self.log("test/loss", self._loss(x0, labels), on_epoch=True)
        self.log("test/bpd", self.variational_bound_bpd(x0, labels).mean(), on_epoch=True)

    # The variational bound (Ho et al., eq. 5), in bits/dim

    @torch.no_grad()
    def variational_bound_bpd(self, x0: torch.Tensor, labels: torch.Tensor | None = None):
        """Return the negative ELBO of each image (B,) in bits/dim: L_T + Σ_t L_t + L₀.

        With ``bound_timesteps`` = K < T the T−1 middle terms are estimated without bias
        by stratified sampling: one random timestep in each of K equal strata, weighted
        by its stratum's size — K network evaluations instead of T, at some noise.
        """
        schedule = self.noise_schedule
        labels = self._labels_or_unconditional(labels, x0.shape[0])
        at = schedule.at
        # L_T: KL(q(x_T | x₀) ‖ N(0, I)), independent of the network.
        alpha, sigma = schedule.alpha_sigma(_full(schedule.num_steps - 1, x0), x0)
        zeros = torch.zeros_like(x0)
        total = (
            gaussian_kl(alpha * x0, 2 * sigma.log().expand_as(x0), zeros, zeros).flatten(1).sum(1)
        )
        terms = [(t, 1.0) for t in range(1, schedule.num_steps)]  # (timestep, weight)
        if self.hparams.bound_timesteps and self.hparams.bound_timesteps < len(terms):
            edges = torch.linspace(1, schedule.num_steps, self.hparams.bound_timesteps + 1)
            edges = edges.long().tolist()
            terms = [
                (int(torch.randint(low, high, ()).item()), float(high - low))
                for low, high in zip(edges[:-1], edges[1:], strict=True)
                if high > low
            ]
        for t, weight in [*terms, (0, 1.0)]:
            tt = _full(t, x0)
            x_t = schedule.add_noise(x0, torch.randn_like(x0), tt)
            x0_hat = schedule.to_x0(self.hparams.prediction, self(x_t, tt, labels), x_t, tt)
            mean = at(schedule.posterior_coef_x0, tt, x0) * x0_hat.clamp(-1, 1)
            mean = mean + at(schedule.posterior_coef_xt, tt, x0) * x_t
            log_var = at(schedule.posterior_log_variance, tt, x0).expand_as(x0)
            if t == 0:  # L₀: the discretized Gaussian decoder −log p(x₀ | x₁)
                nll = -discretized_gaussian_log_prob(x0, mean, 0.5 * log_var, self.spec.num_levels)
                total = total + nll.flatten(1).sum(1)
            else:  # L_t: KL(q(x_{t−1} | x_t, x₀) ‖ p(x_{t−1} | x_t))
                true_mean = at(schedule.posterior_coef_x0, tt, x0) * x0
                true_mean = true_mean + at(schedule.posterior_coef_xt, tt, x0) * x_t
                true_log_var = at(schedule.posterior_variance, tt, x0).log().expand_as(x0)
                kl = gaussian_kl(true_mean, true_log_var, mean, log_var)
                total = total + weight * kl.flatten(1).sum(1)
        return bits_per_dim(total, x0[0].numel())

    # Sampling

    def _labels_or_unconditional(self, labels, count: int) -> torch.Tensor | None:
        """Return labels (count,) on the device for a conditional model: the given ones, or
        the "no label" id of classifier-free guidance when None; None when unconditional."""
        if not self.num_classes:
            return None
        if labels is None:
            return torch.full((count,), self.num_classes, device=self.device, dtype=torch.long)
        return self.sample_labels(labels, count)

    def denoiser(self, labels: torch.Tensor | None, guidance: float, clip: str) -> Denoiser:
        """Return x_t, t ↦ x̂₀ with classifier-free guidance and x₀ clipping applied.

        Guidance mixes the conditional and unconditional predictions as
        u + w·(c − u) (Ho & Salimans): w = 1 is the conditional model, w = 0 the unconditional.
        """
        kind, schedule = self.hparams.prediction, self.noise_schedule

        def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if labels is not None and guidance != 1.0:
                unconditional = torch.full_like(labels, self.num_classes)
                both = self(
                    torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([labels, unconditional])
                )
                conditional, free = both.chunk(2)
                prediction = free + guidance * (conditional - free)
            else:
                prediction = self(x_t, t, labels)
            x0 = schedule.to_x0(kind, prediction, x_t, t)
            if clip == "clip":
                return x0.clamp(-1, 1)
            if clip == "dynamic":  # Imagen's dynamic thresholding at the 99.5th percentile
                s = x0.abs().flatten(1).quantile(0.995, dim=1).clamp(min=1.0).view(-1, 1, 1, 1)
                return x0.clamp(-s, s) / s
            return x0

        return denoise

    @torch.no_grad()
    def sample(
        self,
        num_samples: int,
        *,
        generator: torch.Generator | None = None,
        labels: list[int] | int | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        eta: float = 0.0,
        guidance: float = 1.0,
        clip: str | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """Return images (N, C, H, W) in [-1, 1]; the sampler and its steps default to the config's.

        ``labels`` (one or N class ids) condition a class-conditional model; ``guidance``
        is the classifier-free guidance scale; ``eta`` is DDIM's noise level.
        """
        sampler = sampler or self.hparams.sampler
        steps = steps or self.hparams.sampler_steps
        clip = clip or self.hparams.clip
        self.check_sample_options(sampler, steps, clip)
        labels = (  # asked labels are checked, even against an unconditional model
            self.sample_labels(labels, num_samples)
            if labels is not None
            else self._labels_or_unconditional(None, num_samples)
        )
        denoise = self.denoiser(labels, guidance if labels is not None else 1.0, clip)
        shape = (num_samples, *self.spec.shape)
        noise = torch.randn(shape, generator=generator, device=self.device)
        schedule = self.noise_schedule
        if sampler == "ddpm":
            images = ddpm_sample(denoise, schedule, noise, generator, progress)
        elif sampler == "ddim":
            images = ddim_sample(denoise, schedule, noise, steps, eta, generator, progress)
        else:
            images = dpm_solver_sample(denoise, schedule, noise, steps, progress)
        return images.clamp(-1, 1)
