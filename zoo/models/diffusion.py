"""Diffusion: DDPM training with a UNet or a DiT, DDPM/DDIM/DPM-Solver++/UniPC samplers (and
any diffusers scheduler), classifier-free guidance and the variational bound in bits/dim.

Ho et al. (2020, DDPM); Nichol & Dhariwal (2021, improved DDPM: cosine schedule);
Song et al. (2021, DDIM); Lu et al. (2022, DPM-Solver++); Zhao et al. (2023, UniPC);
Ho & Salimans (2022, classifier-free guidance); Hang et al. (2023, min-SNR-γ weighting);
Peebles & Xie (2023, DiT).

The noise schedule and the samplers are plain math with no weights (``NoiseSchedule``,
``timestep_grid``, ``ddpm_sample``, ``ddim_sample``, ``dpm_solver_sample``,
``unipc_sample``, ``diffusers_sample``): each sampler only calls a function
``x_t, t ↦ x̂₀``, exactly ``steps`` times, so one trained network serves them all."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
from tqdm.auto import tqdm

from zoo.errors import ConfigError
from zoo.metrics import bits_per_dim
from zoo.models.base import GenerativeModule, check_fractions, check_sizes
from zoo.nn.backbones import BACKBONES, NETWORK_OPTIONS, denoising_network
from zoo.nn.distributions import discretized_gaussian_log_prob, gaussian_kl
from zoo.nn.guidance import drop_labels, guidance_scale, guided_prediction, null_labels

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
        # λ_t = log(α_t/σ_t), the half log signal-to-noise ratio; decreasing in t.
        self.log_snr = 0.5 * torch.log(self.alphas_cumprod / (1 - self.alphas_cumprod))

    def at(self, values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Return ``values[t]`` shaped (B, 1, 1, 1) in ``like``'s dtype and device."""
        return values.to(like.device)[t].to(like.dtype).view(-1, *([1] * (like.dim() - 1)))

    def alpha_sigma(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return √ᾱ_t and √(1 − ᾱ_t), shaped to broadcast over ``like``.

        A real-valued t (some diffusers schedulers call the network between timesteps)
        interpolates λ_t linearly between its two neighbours, as diffusers does for σ.
        """
        if not t.is_floating_point():
            alpha_bar = self.at(self.alphas_cumprod, t, like)
            return alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
        t = t.to(torch.float64).clamp(0, self.num_steps - 1)
        lower = t.floor().long()
        upper = (lower + 1).clamp(max=self.num_steps - 1)
        log_snr = self.log_snr.to(t.device)
        interpolated = torch.lerp(log_snr[lower], log_snr[upper], t - lower)
        alpha_bar = torch.sigmoid(2 * interpolated).to(like.dtype)
        alpha_bar = alpha_bar.view(-1, *([1] * (like.dim() - 1)))
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

    def from_x0(
        self, kind: str, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        """Return the ``kind`` prediction whose x̂₀ at x_t is ``x0`` (``to_x0``'s inverse)."""
        if kind == "x0":
            return x0
        alpha, sigma = self.alpha_sigma(t, x_t)
        epsilon = (x_t - alpha * x0) / sigma
        return epsilon if kind == "epsilon" else alpha * epsilon - sigma * x0

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

GRIDS = ("time_uniform", "trailing", "logsnr", "karras")

# λ = log(α/σ) below which the logsnr and karras grids place no timestep but T−1. Under
# λ ≈ −2.5 (SNR < 1/150) the denoiser's answer barely moves, so one step from T−1 crosses
# it; the λ-uniform grid of DPM-Solver would otherwise spend its calls in the cosine
# schedule's plunge at t ≥ 990 (λ falls from −5 to −10 there because β is clipped at 0.999).
# The value is the most accurate across data scales of those measured by
# bench/diffusion_gaussian.py --logsnr-min-sweep (bench/RESULTS.md).
LOGSNR_MIN = -2.5

# The grid each sampler uses unless told, per schedule: the most accurate measured on
# Gaussian data (bench/diffusion_gaussian.py; the table is in bench/RESULTS.md).
DEFAULT_GRIDS = {
    "ddim": {"linear": "logsnr", "cosine": "trailing"},
    "dpm_solver": {"linear": "logsnr", "cosine": "logsnr"},
    "unipc": {"linear": "logsnr", "cosine": "logsnr"},
}


def _strictly_decreasing(nearest: list[int], last: int) -> list[int]:
    """Return ``nearest`` (timesteps from T−1 down) made strictly decreasing, ending at 0 or
    above: a timestep that repeats its predecessor moves one below it, so that no two
    network calls share a timestep and every call counts."""
    timesteps: list[int] = []
    for index, t in enumerate(nearest):
        upper = last if index == 0 else timesteps[-1] - 1
        lower = len(nearest) - 1 - index  # leave room for the timesteps still to come
        timesteps.append(max(min(t, upper), lower))
    return timesteps


def timestep_grid(schedule: NoiseSchedule, count: int, grid: str) -> list[int]:
    """Return ``count`` distinct timesteps from T−1 down, where a sampler calls the network.

    ``time_uniform``: evenly spaced in t, T−1 and 0 included (diffusers' ``linspace``).
    ``trailing``: T−1, T−1 − T/count, …; the last is T/count − 1 (Lin et al., 2024, Table 2).
    ``logsnr``: evenly spaced in λ = log(α/σ) from max(λ_{T−1}, LOGSNR_MIN) to λ₀, the first
    moved to T−1 (Lu et al., 2022, DPM-Solver's grid for discrete-time models).
    ``karras``: evenly spaced in σ^(1/7), σ = e^{−λ}, over the same λ range (Karras et al.,
    2022, eq. 5). λ-spaced timesteps are the nearest ones, pushed apart where two coincide.
    Raises ConfigError unless 1 ≤ count ≤ T and ``grid`` is one of GRIDS.
    """
    last = schedule.num_steps - 1
    if not 1 <= count <= schedule.num_steps:
        raise ConfigError(
            f"steps must lie in 1 … {schedule.num_steps} (network calls), got {count}"
        )
    if grid not in GRIDS:
        raise ConfigError(f"grid must be one of {', '.join(GRIDS)}, got {grid!r}")
    if count == 1:
        return [last]
    if grid == "time_uniform":
        return torch.linspace(last, 0, count, dtype=torch.float64).round().long().tolist()
    if grid == "trailing":
        spacing = schedule.num_steps / count
        return [round(schedule.num_steps - index * spacing) - 1 for index in range(count)]
    log_snr = schedule.log_snr  # (T,), decreasing in t
    start, end = max(log_snr[-1].item(), LOGSNR_MIN), log_snr[0].item()
    if grid == "logsnr":
        targets = torch.linspace(start, end, count, dtype=torch.float64)
    else:
        rho = 7.0
        ramp = torch.linspace(0, 1, count, dtype=torch.float64)
        sigma_max, sigma_min = math.exp(-start / rho), math.exp(-end / rho)  # σ^(1/ρ)
        targets = -rho * torch.log(sigma_max + ramp * (sigma_min - sigma_max))
    nearest = (log_snr[None, :] - targets[:, None]).abs().argmin(dim=1).tolist()
    return _strictly_decreasing([last, *nearest[1:]], last)


def _full(t: int, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)


def _progress(iterable, enabled: bool, name: str):
    return tqdm(iterable, desc=name, leave=False) if enabled else iterable


def _alpha_sigma_lambda(schedule: NoiseSchedule, t: int) -> tuple[float, float, float]:
    """Return α_t = √ᾱ_t, σ_t = √(1 − ᾱ_t) and λ_t = log(α_t/σ_t) as numbers."""
    alpha_bar = schedule.alphas_cumprod[t].item()
    alpha, sigma = math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar)
    return alpha, sigma, math.log(alpha / sigma)


def ddpm_sample(
    denoise: Denoiser,
    schedule: NoiseSchedule,
    noise: torch.Tensor,
    generator=None,
    progress: bool = False,
) -> torch.Tensor:
    """Return x₀ by ancestral sampling through all T steps, x_{t−1} ~ q(x_{t−1} | x_t, x̂₀);
    T network calls."""
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
    grid: str | None = None,
) -> torch.Tensor:
    """Return x₀ after DDIM updates (Song et al., eq. 12) through ``steps`` timesteps of
    ``grid``: ``steps`` network calls, the last one's x̂₀ is the sample. η=0 deterministic."""
    x = noise
    timesteps = timestep_grid(schedule, steps, grid or DEFAULT_GRIDS["ddim"][schedule.kind])
    for index in _progress(range(len(timesteps)), progress, "DDIM"):
        t = timesteps[index]
        x0 = denoise(x, _full(t, x))
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
    grid: str | None = None,
) -> torch.Tensor:
    """Return x₀ after DPM-Solver++(2M) (Lu et al., 2022, Algorithm 2) through ``steps``
    timesteps of ``grid``: ``steps`` network calls.

    A second-order multistep solver of the diffusion ODE in x₀-prediction form, in
    λ = log(α/σ); the first step is first order (DDIM's). The last call's x̂₀ is the
    sample: the step from the last timestep to σ = 0 is first order, as diffusers'
    ``lower_order_final`` makes it.
    """
    timesteps = timestep_grid(schedule, steps, grid or DEFAULT_GRIDS["dpm_solver"][schedule.kind])
    x = noise
    previous_x0, previous_h = None, None
    for index in _progress(range(len(timesteps)), progress, "DPM-Solver++"):
        t = timesteps[index]
        x0 = denoise(x, _full(t, x))
        if index == len(timesteps) - 1:
            return x0
        alpha_t, sigma_t, lambda_t = _alpha_sigma_lambda(schedule, t)
        alpha_s, sigma_s, lambda_s = _alpha_sigma_lambda(schedule, timesteps[index + 1])
        h = lambda_s - lambda_t  # > 0
        if previous_x0 is None:
            direction = x0
        else:
            r = previous_h / h
            direction = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * previous_x0
        x = (sigma_s / sigma_t) * x - alpha_s * math.expm1(-h) * direction
        previous_x0, previous_h = x0, h
    return x  # not reached: the loop returns the last call's x̂₀


def _unipc_coefficients(ratios: list[float], h: float, corrector: bool) -> list[float]:
    """Return UniPC's weights of the divided differences (Zhao et al., 2023, Algorithm 2 with
    B(h) = e^{−h} − 1, "bh2"), for x₀-prediction: ``ratios`` r_k = (λ_{s_k} − λ_s)/h of the
    earlier calls, the corrector's list ending with the new call's 1."""
    hh = -h
    phi = math.expm1(hh) / hh - 1  # h·φ₂(h)/h, then the higher φ's in turn
    b_h = math.expm1(hh)
    rows, rhs, factorial = [], [], 1
    for order in range(1, len(ratios) + 1):
        rows.append([r ** (order - 1) for r in ratios])
        rhs.append(phi * factorial / b_h)
        factorial *= order + 1
        phi = phi / hh - 1 / factorial
    if corrector:
        if len(ratios) == 1:
            return [0.5]
        matrix, vector = rows, rhs
    else:
        if len(ratios) == 2:
            return [0.5]
        matrix, vector = [row[:-1] for row in rows[:-1]], rhs[:-1]
    solution = torch.linalg.solve(
        torch.tensor(matrix, dtype=torch.float64), torch.tensor(vector, dtype=torch.float64)
    )
    return solution.tolist()


def unipc_sample(
    denoise: Denoiser,
    schedule: NoiseSchedule,
    noise: torch.Tensor,
    steps: int = 20,
    progress: bool = False,
    grid: str | None = None,
    order: int = 3,
) -> torch.Tensor:
    """Return x₀ after UniPC (Zhao et al., 2023) through ``steps`` timesteps of ``grid``:
    ``steps`` network calls.

    Each step predicts with a multistep formula of ``order`` (UniP; lower at the first
    steps, and 2 into the last timestep as diffusers' ``lower_order_final``), then, once the network
    has been called at the predicted point, corrects it with that call (UniC): the
    corrector raises the order by one and costs no call. x₀-prediction form, B(h) =
    e^{−h} − 1 ("bh2"); the last call's x̂₀ is the sample.
    """
    timesteps = timestep_grid(schedule, steps, grid or DEFAULT_GRIDS["unipc"][schedule.kind])
    nodes = [_alpha_sigma_lambda(schedule, t) for t in timesteps]  # (α, σ, λ) per call
    outputs: list[torch.Tensor] = []  # x̂₀ of each call

    def update(x_start: torch.Tensor, index: int, step_order: int, new_x0=None) -> torch.Tensor:
        # From timestep index to index + 1 with the step_order − 1 calls before index;
        # new_x0 (the call at index + 1) turns the predictor into the corrector.
        (_, sigma_s, lambda_s), (alpha_t, sigma_t, lambda_t) = nodes[index], nodes[index + 1]
        h = lambda_t - lambda_s
        x0 = outputs[index]
        ratios = [(nodes[index - k][2] - lambda_s) / h for k in range(1, step_order)]
        differences = [(outputs[index - k] - x0) / r for k, r in enumerate(ratios, start=1)]
        x = (sigma_t / sigma_s) * x_start - alpha_t * math.expm1(-h) * x0
        scale = alpha_t * math.expm1(-h)
        if new_x0 is None:
            if differences:
                weights = _unipc_coefficients([*ratios, 1.0], h, corrector=False)
                x = x - scale * sum(w * d for w, d in zip(weights, differences, strict=True))
            return x
        weights = _unipc_coefficients([*ratios, 1.0], h, corrector=True)
        correction = sum(w * d for w, d in zip(weights[:-1], differences, strict=True))
        return x - scale * (correction + weights[-1] * (new_x0 - x0))

    x = noise
    previous_x, previous_order = noise, 1
    for index in _progress(range(len(timesteps)), progress, "UniPC"):
        x0 = denoise(x, _full(timesteps[index], x))
        outputs.append(x0)
        if index == len(timesteps) - 1:
            return x0
        if index > 0:  # UniC: correct the point just predicted with the call made there
            x = update(previous_x, index - 1, previous_order, new_x0=x0)
        step_order = min(order, index + 1, len(timesteps) - index)
        previous_x, previous_order = x, step_order
        x = update(x, index, step_order)
    return x  # not reached: the loop returns the last call's x̂₀


# diffusers' prediction_type for each kind of network output
DIFFUSERS_PREDICTION = {"epsilon": "epsilon", "x0": "sample", "v": "v_prediction"}


def diffusers_scheduler(
    name: str, schedule: NoiseSchedule, prediction: str, config: dict[str, Any] | None = None
):
    """Return diffusers' scheduler class ``name`` on this schedule (its betas passed as
    ``trained_betas``, so the noise levels are identical) for a ``prediction`` network.

    ``config`` overrides the scheduler's own defaults (e.g. ``timestep_spacing``).
    Raises ConfigError without diffusers, for a name that is not a diffusers scheduler,
    and for one that cannot take a DDPM noise schedule.
    """
    try:
        import diffusers
    except ImportError:
        raise ConfigError(
            f'sampler=diffusers:{name} needs diffusers: pip install "zoo[diffusers]"'
        ) from None
    scheduler_class = getattr(diffusers, name, None)
    if not (
        isinstance(scheduler_class, type) and issubclass(scheduler_class, diffusers.SchedulerMixin)
    ):
        raise ConfigError(
            f"diffusers has no scheduler {name!r}; pass a class name such as "
            "sampler=diffusers:UniPCMultistepScheduler or diffusers:DPMSolverMultistepScheduler"
        )
    accepted = inspect.signature(scheduler_class.__init__).parameters
    if "trained_betas" not in accepted or "prediction_type" not in accepted:
        raise ConfigError(
            f"diffusers:{name} does not take a DDPM noise schedule (trained_betas and "
            "prediction_type); choose a DDPM scheduler, e.g. diffusers:UniPCMultistepScheduler"
        )
    options: dict[str, Any] = {
        "num_train_timesteps": schedule.num_steps,
        "trained_betas": schedule.betas.tolist(),
        "prediction_type": DIFFUSERS_PREDICTION[prediction],
    }
    if "clip_sample" in accepted:
        options["clip_sample"] = False  # zoo's clip= clips x̂₀ before the scheduler sees it
    options.update(config or {})
    return scheduler_class(**options)


def _set_network_calls(scheduler, name: str, calls: int) -> None:
    """Set the scheduler's timesteps so that sampling makes exactly ``calls`` network calls
    (one per entry of ``timesteps``; Heun-type schedulers make two per step)."""
    made = {}
    for num_inference_steps in range(1, calls + 1):
        try:
            scheduler.set_timesteps(num_inference_steps)
        except ValueError:  # a count the scheduler refuses (e.g. too few for its order)
            continue
        made[num_inference_steps] = len(scheduler.timesteps)
        if made[num_inference_steps] == calls:
            return
    possible = sorted(set(made.values()))
    raise ConfigError(
        f"diffusers:{name} cannot make exactly steps={calls} network calls; "
        f"it can make {', '.join(map(str, possible[-4:])) or 'none up to that'}"
    )


def diffusers_sample(
    scheduler,
    denoise: Denoiser,
    schedule: NoiseSchedule,
    noise: torch.Tensor,
    steps: int,
    prediction: str,
    eta: float | None = None,
    generator=None,
    progress: bool = False,
) -> torch.Tensor:
    """Return x₀ after sampling with a diffusers scheduler (``diffusers_scheduler``) through
    its ``set_timesteps``/``step`` API: ``steps`` network calls.

    The denoiser's x̂₀ (with zoo's guidance and clipping) is handed to the scheduler as the
    ``prediction`` its network would have made at that x_t, so every diffusers scheduler
    drives a zoo model unchanged. ``eta`` goes to schedulers whose ``step`` takes it (DDIM).
    """
    name = type(scheduler).__name__
    _set_network_calls(scheduler, name, steps)
    step_options: dict[str, Any] = {}
    accepted = inspect.signature(scheduler.step).parameters
    if eta is not None:
        if "eta" not in accepted:
            raise ConfigError(
                f"eta= is not an option of diffusers:{name}; DDIM schedulers take it (sampler=ddim)"
            )
        step_options["eta"] = eta
    if "generator" in accepted:
        step_options["generator"] = generator
    x = noise * scheduler.init_noise_sigma
    for t in _progress(scheduler.timesteps, progress, name):
        x_t = scheduler.scale_model_input(x, t)  # the VP x_t the network expects
        tt = torch.full((x.shape[0],), t.item(), device=x.device, dtype=t.dtype)
        x0 = denoise(x_t, tt)
        output = schedule.from_x0(prediction, x0, x_t, tt)
        x = scheduler.step(output, t, x, **step_options).prev_sample
    return x


SAMPLERS = ("ddpm", "ddim", "dpm_solver", "unipc")


# The LightningModule ---------------------------------------------------------------------------


def _rename_unet_weights(state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Renames, in place, the weights of ``prefix + "unet."`` to ``prefix + "network."``: a
    load_state_dict pre-hook, so that checkpoints (and EMA weights) written before the
    choice of backbone load."""
    old = prefix + "unet."
    for name in [name for name in state_dict if name.startswith(old)]:
        state_dict[prefix + "network." + name[len(old) :]] = state_dict.pop(name)


class Diffusion(GenerativeModule):
    """A DDPM whose UNet or DiT predicts ε, x₀ or v; any sampler can draw from it."""

    family = "diffusion"
    compiled_networks = ("network",)

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
        backbone: str = "unet",
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
        sampler: str = "unipc",
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
            patch_size=patch_size,
            hidden_size=hidden_size,
            depth=depth,
            num_heads=num_heads,
            sampler_steps=sampler_steps,
        )
        check_fractions(dropout=dropout, label_dropout=label_dropout)
        if backbone not in BACKBONES:
            raise ConfigError(f"model.backbone must be unet or dit, got {backbone!r}")
        if prediction not in ("epsilon", "x0", "v"):
            raise ConfigError(f"model.prediction must be epsilon, x0 or v, got {prediction!r}")
        if loss_weighting not in ("uniform", "min_snr"):
            raise ConfigError(
                f"model.loss_weighting must be uniform or min_snr, got {loss_weighting!r}"
            )
        if sampler != "ddpm" and not 1 <= sampler_steps <= num_steps:
            raise ConfigError(
                f"model.sampler_steps={sampler_steps} (network calls) must lie in "
                f"1 … model.num_steps={num_steps}"
            )
        self.check_sample_options(sampler, None, num_steps, clip=clip)
        self.noise_schedule = NoiseSchedule(schedule, num_steps, beta_start, beta_end)
        self.last_network_calls: int | None = None  # set by each sample() call
        self.num_classes = self.conditional_classes(conditional)
        self.network = denoising_network(  # (zoo/nn/backbones.py: the UNet or the DiT)
            backbone,
            tuple(self.spec.shape),
            self.num_classes,
            **{name: self.hparams[name] for name in NETWORK_OPTIONS},
        )
        # Checkpoints written before the backbone choice name the network "unet".
        self._register_load_state_dict_pre_hook(_rename_unet_weights)

    @staticmethod
    def check_sample_options(
        sampler: str,
        steps: int | None,
        num_steps: int,
        grid: str | None = None,
        eta: float | None = None,
        clip: str = "clip",
    ) -> None:
        """Raise ConfigError, naming the fix, for sampler options that cannot work together.

        ``steps`` counts network calls: 1 … T, and T or None (all T) for ``ddpm``.
        """
        if sampler not in SAMPLERS and not sampler.startswith("diffusers:"):
            raise ConfigError(
                f"sampler must be one of {', '.join(SAMPLERS)} or diffusers:<SchedulerClass>, "
                f"got {sampler!r}"
            )
        if sampler == "ddpm":
            if steps not in (None, num_steps):
                raise ConfigError(
                    f"sampler=ddpm makes all T={num_steps} network calls, got steps={steps}; "
                    "for fewer use sampler=unipc, dpm_solver or ddim"
                )
        elif steps is not None and not 1 <= steps <= num_steps:
            raise ConfigError(
                f"steps counts network calls and must lie in 1 … {num_steps}, got {steps}"
            )
        if grid is not None:
            if sampler == "ddpm" or sampler.startswith("diffusers:"):
                raise ConfigError(
                    f"grid= applies to ddim, dpm_solver and unipc; sampler={sampler} "
                    "spaces its timesteps itself"
                )
            if grid not in GRIDS:
                raise ConfigError(f"grid must be one of {', '.join(GRIDS)}, got {grid!r}")
        if eta is not None:
            if sampler != "ddim" and not sampler.startswith("diffusers:"):
                raise ConfigError(f"eta= is DDIM's noise level; sampler={sampler} ignores it")
            if not 0 <= eta <= 1:
                raise ConfigError(
                    f"eta must lie in 0 (deterministic DDIM) … 1 (ancestral), got {eta}"
                )
        if clip not in ("none", "clip", "dynamic"):
            raise ConfigError(f"clip must be none, clip or dynamic, got {clip!r}")

    # Training

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None):
        """Return the network's prediction (ε, x₀ or v) at x_t, t."""
        return self.network(x_t, t, labels)

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
        if labels is not None:  # classifier-free guidance: learn the unconditional model too
            labels = drop_labels(labels, self.hparams.label_dropout, self.num_classes, generator)
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
            return null_labels(count, self.num_classes, self.device)
        return self.sample_labels(labels, count)

    def denoiser(self, labels: torch.Tensor | None, guidance: float, clip: str) -> Denoiser:
        """Return x_t, t ↦ x̂₀ with classifier-free guidance and x₀ clipping applied.

        Guidance mixes the conditional and unconditional predictions as
        u + w·(c − u) (Ho & Salimans; zoo/nn/guidance.py): w = 1 is the conditional model,
        w = 0 the unconditional; both halves go through the network in one call.
        """
        kind, schedule = self.hparams.prediction, self.noise_schedule

        def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            prediction = guided_prediction(self, x_t, t, labels, guidance, self.num_classes)
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
        grid: str | None = None,
        eta: float | None = None,
        guidance: float | None = None,
        clip: str | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """Return images (N, C, H, W) in [-1, 1]; the sampler and its steps default to the config's.

        ``steps`` is the number of network calls (``ddpm``: all T); ``grid`` places them
        (GRIDS; default per sampler and schedule, DEFAULT_GRIDS); ``sampler`` may name any
        diffusers scheduler as ``diffusers:<Class>``. ``labels`` (one or N class ids)
        condition a class-conditional model, which draws every class in turn without them;
        ``guidance`` is the classifier-free guidance scale (1: the conditional model, 0: its
        unconditional half, "no label"); ``eta`` is DDIM's noise level. The calls made are left in
        ``last_network_calls`` (one call runs the network once, on a doubled batch with
        guidance). Raises ConfigError for options that cannot work (check_sample_options).
        """
        sampler = sampler or self.hparams.sampler
        schedule = self.noise_schedule
        if steps is None and sampler != "ddpm":
            steps = self.hparams.sampler_steps
        clip = clip or self.hparams.clip
        self.check_sample_options(sampler, steps, schedule.num_steps, grid, eta, clip)
        # A conditional model draws the classes in turn unless told (as every family does).
        labels = self.sample_labels(labels, num_samples)  # checked, None when unconditional
        scale = guidance_scale(guidance, labels)
        denoise = self.denoiser(labels, scale, clip)
        calls = 0

        def counted(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            nonlocal calls
            calls += 1
            return denoise(x_t, t)

        shape = (num_samples, *self.spec.shape)
        noise = torch.randn(shape, generator=generator, device=self.device)
        if sampler == "ddpm":
            images = ddpm_sample(counted, schedule, noise, generator, progress)
        elif sampler == "ddim":
            images = ddim_sample(
                counted, schedule, noise, steps, eta or 0.0, generator, progress, grid
            )
        elif sampler == "dpm_solver":
            images = dpm_solver_sample(counted, schedule, noise, steps, progress, grid)
        elif sampler == "unipc":
            images = unipc_sample(counted, schedule, noise, steps, progress, grid)
        else:
            scheduler = diffusers_scheduler(
                sampler.removeprefix("diffusers:"), schedule, self.hparams.prediction
            )
            images = diffusers_sample(
                scheduler,
                counted,
                schedule,
                noise,
                steps,
                self.hparams.prediction,
                eta,
                generator,
                progress,
            )
        self.last_network_calls = calls
        return images.clamp(-1, 1)
