"""Flow matching: a rectified flow whose UNet or DiT predicts a velocity, sampled by Euler,
Heun or midpoint ODE steps, with classifier-free guidance, on pixels or on the latents of a
frozen autoencoder.

Lipman et al. (2023, flow matching); Liu et al. (2023, rectified flow); Esser et al. (2024,
SD3: logit-normal timesteps); Peebles & Xie (2023, DiT); Rombach et al. (2022, latent
diffusion); Ho & Salimans (2022, classifier-free guidance).

Convention (SD3's, and diffusers' FlowMatchEulerDiscreteScheduler's): t = 0 is data and
t = 1 is noise. x_t = (1 − t)·x₀ + t·ε, and the network learns the velocity
v = dx_t/dt = ε − x₀ by mean squared error. Sampling integrates dx/dt = v(x, t) from pure
noise at t = 1 down to t = 0; every sampler only calls a function ``x, t ↦ v``, so one
trained network serves them all. ``steps`` counts NETWORK CALLS (a guided call evaluates the
conditional and unconditional halves as one batch): Euler takes ``steps`` steps; Heun and
midpoint, second order, take ⌈steps/2⌉ equal steps in t, each of two calls, except that the
last one is an Euler step (one call) when ``steps`` is odd. There is no likelihood here: the
exact one would need the divergence of v integrated along the ODE (instantaneous change of
variables), which this family does not compute.

With ``stage_one`` (a VAE with a spatial latent, zoo/models/vae.py) the flow models that
VAE's posterior means μ(x), one deterministic code per image, encoded once before training.
LDM instead trains on a fresh draw z ~ q(z|x) each time; with the data encoded once a draw
would be frozen anyway, and the mean is the code the decoder reconstructs best. The codes
are shifted and scaled by the training codes' mean and standard deviation (LDM's scale
factor, SD3's shift and scale), measured once and stored in the checkpoint; samples are
decoded by the frozen VAE's decoder mean.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from tqdm.auto import tqdm

from zoo.errors import ConfigError
from zoo.models.base import GenerativeModule, check_fractions, check_sizes
from zoo.nn.backbones import BACKBONES, NETWORK_OPTIONS, denoising_network
from zoo.nn.guidance import drop_labels, guidance_scale, guided_prediction

TIME_SCALE = 1000.0  # the networks embed t ∈ [0, 1] as t·1000, the scale of DDPM's timesteps
TIMESTEP_SAMPLING = ("uniform", "logit_normal")

# The interpolation and its target ----------------------------------------------------------


def interpolate(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Return x_t = (1 − t)·x₀ + t·ε for times t (B,) in [0, 1], shaped like x₀."""
    t = t.view(-1, *([1] * (x0.dim() - 1)))
    return (1 - t) * x0 + t * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Return the velocity of the straight path from x₀ to ε: v = dx_t/dt = ε − x₀."""
    return noise - x0


def flow_matching_loss(
    prediction: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """Return the conditional flow-matching loss of each example (B,): the mean over its
    values of (v̂ − (ε − x₀))²."""
    return (prediction - velocity_target(x0, noise)).pow(2).flatten(1).mean(1)


def sample_times(
    count: int,
    kind: str = "logit_normal",
    mean: float = 0.0,
    std: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Return ``count`` training times (count,) in (0, 1): uniform, or logit-normal
    t = sigmoid(m + s·n), n ~ N(0, 1), which puts more of them in the middle of the path
    (SD3, Esser et al. 2024, eq. 19)."""
    if kind == "uniform":
        return torch.rand(count, generator=generator, device=device)
    if kind == "logit_normal":
        normal = torch.randn(count, generator=generator, device=device)
        return torch.sigmoid(mean + std * normal)
    raise ConfigError(f"model.timestep_sampling must be uniform or logit_normal, got {kind!r}")


# The samplers: functions of a velocity field x, t ↦ v -------------------------------------

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _full(t: float, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), t, device=x.device, dtype=x.dtype)


def _progress(iterable, enabled: bool, name: str):
    return tqdm(iterable, desc=name, leave=False) if enabled else iterable


def euler_sample(
    velocity: Velocity, noise: torch.Tensor, calls: int, progress: bool = False
) -> torch.Tensor:
    """Return x₀ after ``calls`` Euler steps x ← x + (s − t)·v(x, t) from t = 1 to 0 on a
    uniform grid: ``calls`` network calls, first order."""
    times = torch.linspace(1, 0, calls + 1, dtype=torch.float64).tolist()
    x = noise
    for t, s in _progress(list(zip(times[:-1], times[1:], strict=True)), progress, "Euler"):
        x = x + (s - t) * velocity(x, _full(t, x))
    return x


def _second_order(
    velocity: Velocity, noise: torch.Tensor, calls: int, midpoint: bool, progress: bool
) -> torch.Tensor:
    """Return x₀ after ⌈calls/2⌉ equal steps in t of Heun's (or the midpoint) method, the
    last an Euler step when ``calls`` is odd: exactly ``calls`` network calls."""
    intervals = math.ceil(calls / 2)
    times = torch.linspace(1, 0, intervals + 1, dtype=torch.float64).tolist()
    x = noise
    name = "midpoint" if midpoint else "Heun"
    for index in _progress(range(intervals), progress, name):
        t, s = times[index], times[index + 1]
        h = s - t  # < 0: towards the data
        v = velocity(x, _full(t, x))
        if index == intervals - 1 and calls % 2:  # the odd call: an Euler step
            x = x + h * v
        elif midpoint:  # x + h·v(x + h/2·v, t + h/2)
            x = x + h * velocity(x + 0.5 * h * v, _full(t + 0.5 * h, x))
        else:  # Heun: the trapezoid of the slopes at both ends of an Euler step
            x = x + 0.5 * h * (v + velocity(x + h * v, _full(s, x)))
    return x


def heun_sample(
    velocity: Velocity, noise: torch.Tensor, calls: int, progress: bool = False
) -> torch.Tensor:
    """Return x₀ by Heun's method (explicit trapezoid, second order) in ``calls`` network calls."""
    return _second_order(velocity, noise, calls, midpoint=False, progress=progress)


def midpoint_sample(
    velocity: Velocity, noise: torch.Tensor, calls: int, progress: bool = False
) -> torch.Tensor:
    """Return x₀ by the explicit midpoint method (second order) in ``calls`` network calls."""
    return _second_order(velocity, noise, calls, midpoint=True, progress=progress)


SAMPLERS = {"euler": euler_sample, "heun": heun_sample, "midpoint": midpoint_sample}


# The LightningModule --------------------------------------------------------------------------


class Flow(GenerativeModule):
    """A rectified flow whose UNet or DiT predicts the velocity ε − x₀; any sampler can draw
    from it. Over a frozen spatial VAE with ``stage_one``; on pixels without."""

    family = "flow"
    compiled_networks = ("network",)
    stage_one_families = ("vae",)
    ema_prefix = "network."  # the velocity network (never the frozen first stage)

    def __init__(
        self,
        spec: dict[str, Any],
        backbone: str = "unet",
        timestep_sampling: str = "logit_normal",
        logit_mean: float = 0.0,
        logit_std: float = 1.0,
        base_channels: int = 64,
        channel_multipliers: list[int] | tuple[int, ...] = (1, 2),
        num_res_blocks: int = 2,
        attention_resolutions: list[int] | tuple[int, ...] = (4,),
        patch_size: int = 2,
        hidden_size: int = 256,
        depth: int = 6,
        mlp_ratio: float = 4.0,
        positions: str = "sincos",
        num_heads: int = 4,
        dropout: float = 0.1,
        conditional: bool = False,
        label_dropout: float = 0.1,
        sampler: str = "heun",
        sampler_steps: int = 20,
        stage_one: dict[str, Any] | None = None,
        compile: bool = False,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        scheduler_interval: str = "epoch",
    ):
        optimizer = optimizer or {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 2e-4}
        super().__init__(spec, optimizer, scheduler, scheduler_interval)
        self.save_hyperparameters()
        check_sizes(
            base_channels=base_channels,
            channel_multipliers=list(channel_multipliers),
            num_res_blocks=num_res_blocks,
            patch_size=patch_size,
            hidden_size=hidden_size,
            depth=depth,
            num_heads=num_heads,
            sampler_steps=sampler_steps,
        )
        check_fractions(dropout=dropout, label_dropout=label_dropout)
        if timestep_sampling not in TIMESTEP_SAMPLING:
            raise ConfigError(
                "model.timestep_sampling must be uniform or logit_normal, "
                f"got {timestep_sampling!r}"
            )
        if not logit_std > 0:
            raise ConfigError(f"model.logit_std must be > 0, got {logit_std!r}")
        if backbone not in BACKBONES:
            raise ConfigError(f"model.backbone must be unet or dit, got {backbone!r}")
        self.check_sample_options(sampler, sampler_steps)
        self.num_classes = self.conditional_classes(conditional)
        self.last_network_calls: int | None = None  # set by each sample() call
        # What the flow models: the images, or the first stage's latents.
        self.data_shape = tuple(self.spec.shape)
        if stage_one is not None:
            self.stage_one = self.build_stage_one(stage_one)
            if self.stage_one.hparams.get("latent", "flat") != "spatial":
                raise ConfigError(
                    "the flow's first stage must have a spatial latent: train it with "
                    "model.latent=spatial (e.g. experiment=vae_spatial_mnist5k)"
                )
            self.data_shape = tuple(self.stage_one.latent_shape)
            # The training latents' mean and standard deviation, measured once
            # (fit_latent_statistics) and kept in the checkpoint.
            self.register_buffer("latent_mean", torch.zeros(()))
            self.register_buffer("latent_std", torch.ones(()))
        self.network = denoising_network(
            backbone,
            self.data_shape,
            self.num_classes,
            **{name: self.hparams[name] for name in NETWORK_OPTIONS},
        )

    @staticmethod
    def check_sample_options(sampler: str, steps: int) -> None:
        """Raises ConfigError for an unknown sampler or a number of network calls below 1."""
        if sampler not in SAMPLERS:
            raise ConfigError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ConfigError(f"steps counts network calls and must be at least 1, got {steps!r}")

    def parameter_groups(self):
        return self.network.parameters()  # the first stage stays frozen

    # The first stage

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Return the first stage's posterior means (B, c, h, w) of images (B, C, H, W) in
        [-1, 1], not yet normalised. Raises ConfigError for a flow on pixels."""
        if not self.two_stage:
            raise ConfigError("this flow works on pixels: it has no first stage to encode with")
        return self.stage_one.posterior_mean(images)

    @torch.no_grad()
    def fit_latent_statistics(self, latents: torch.Tensor) -> None:
        """Stores the mean and standard deviation of the training latents (N, c, h, w), which
        normalise every latent the flow sees to zero mean and unit variance."""
        self.latent_mean.fill_(latents.mean().item())
        self.latent_std.fill_(latents.std().item())

    def _flow_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Return what the flow models of a batch: the images, or, for a two-stage model
        (whose batches are latents encoded once, zoo.data.EncodedDataModule), the latents
        normalised to zero mean and unit variance."""
        if not self.two_stage:
            return x
        return (x - self.latent_mean) / self.latent_std

    # Training

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None):
        """Return the predicted velocity (B, …) at x_t and times t (B,) in [0, 1]."""
        return self.network(x_t, t * TIME_SCALE, labels)

    def _loss(
        self, x: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Return the flow-matching loss of a batch at random times and noise."""
        x0 = self._flow_inputs(x)
        b, device = x0.shape[0], x0.device
        t = sample_times(
            b,
            self.hparams.timestep_sampling,
            self.hparams.logit_mean,
            self.hparams.logit_std,
            generator=generator,
            device=device,
        )
        noise = torch.randn(x0.shape, device=device, generator=generator)
        labels = self.batch_labels(labels)
        if labels is not None:  # classifier-free guidance: learn the unconditional model too
            labels = drop_labels(labels, self.hparams.label_dropout, self.num_classes, generator)
        prediction = self(interpolate(x0, noise, t), t, labels)
        return flow_matching_loss(prediction, x0, noise).mean()

    def _step(self, batch, stage: str, generator: torch.Generator | None = None) -> torch.Tensor:
        loss = self._loss(*batch, generator=generator)
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=on_step)
        return loss

    def validation_step(self, batch, batch_idx):
        # The same times and noise at every validation, so that epochs compare and the
        # best checkpoint is picked by the model, not by the luck of the draw.
        generator = torch.Generator(device=self.device).manual_seed(batch_idx)
        self._step(batch, "val", generator)

    def test_step(self, batch, batch_idx):
        generator = torch.Generator(device=self.device).manual_seed(batch_idx)
        self._step(batch, "test", generator)

    # Sampling

    def velocity_field(self, labels: torch.Tensor | None, guidance: float) -> Velocity:
        """Return x, t ↦ v with classifier-free guidance applied; every call is one network
        call, counted in ``self.last_network_calls``."""

        def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            self.last_network_calls += 1
            return guided_prediction(self, x, t, labels, guidance, self.num_classes)

        return velocity

    @torch.no_grad()
    def sample(
        self,
        num_samples: int,
        *,
        generator: torch.Generator | None = None,
        labels: list[int] | int | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """Return images (N, C, H, W) in [-1, 1], drawn with ``steps`` network calls of
        ``sampler`` (both default to the config's); ``last_network_calls`` reports them.

        ``labels`` (one class or a list, repeated) condition a class-conditional model,
        which draws every class in turn without them, as every family does. ``guidance`` is
        the classifier-free guidance scale w towards the labels (1: the conditional model,
        0: its unconditional half, "no label"). Raises ConfigError for an unknown sampler,
        steps below 1, and labels or guidance asked of an unconditional model.
        """
        sampler = self.hparams.sampler if sampler is None else sampler
        steps = self.hparams.sampler_steps if steps is None else steps
        self.check_sample_options(sampler, steps)
        # A conditional model draws the classes in turn unless told (as every family does).
        labels = self.sample_labels(labels, num_samples)  # checked, None when unconditional
        scale = guidance_scale(guidance, labels)
        self.last_network_calls = 0
        velocity = self.velocity_field(labels, scale)
        noise = torch.randn(
            (num_samples, *self.data_shape), generator=generator, device=self.device
        )
        x0 = SAMPLERS[sampler](velocity, noise, steps, progress)
        if self.two_stage:
            return self.stage_one.decode(x0 * self.latent_std + self.latent_mean)
        return x0.clamp(-1, 1)
