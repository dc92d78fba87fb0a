"""Sampler accuracy at equal network calls on Gaussian data, zoo against diffusers.

    python bench/diffusion_gaussian.py [--data-std 0.5] [--logsnr-min-sweep | --five-call-search]

Data x₀ ~ N(0, s²) in every dimension (s = 0.5) has the exact denoiser
E[x₀ | x_t] = α s² x_t / (α² s² + σ²), and its probability-flow ODE is linear: it
scales x_{T−1} by √(v₀ / v_{T−1}) on the way to t = 0, where v_t = α_t² s² + σ_t² is the
marginal variance. Every sampler here ends as DDPM does, with the denoiser's x̂₀ at its
last timestep, so the exact answer is E[x₀ | x₀'s ODE value at t = 0]: the limit of every
sampler as its calls grow (``exact_sample``). The relative error of each sampler's output
against it, from the same noise, is printed for both schedules and 5, 10, 20 and 50
network calls (each counted from outside); the diffusers schedulers run on zoo's betas
(``trained_betas``) through zoo's interop, exactly as ``sampler=diffusers:<Class>`` does.
"""

import argparse
import itertools
import math

import torch

from zoo.models import diffusion
from zoo.models.diffusion import (
    NoiseSchedule,
    ddim_sample,
    diffusers_sample,
    diffusers_scheduler,
    dpm_solver_sample,
    timestep_grid,
    unipc_sample,
)

CALLS = (5, 10, 20, 50)
ZOO = {"ddim": ddim_sample, "dpm_solver": dpm_solver_sample, "unipc": unipc_sample}
# (scheduler class, config): the DDPM-family schedulers and the options a user would try
DIFFUSERS = [
    ("DDIMScheduler", {"timestep_spacing": "leading"}),
    ("DDIMScheduler", {"timestep_spacing": "trailing"}),
    ("DDIMScheduler", {"timestep_spacing": "linspace"}),
    ("DPMSolverMultistepScheduler", {}),
    ("DPMSolverMultistepScheduler", {"timestep_spacing": "leading"}),
    ("DPMSolverMultistepScheduler", {"timestep_spacing": "trailing"}),
    ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    ("DPMSolverMultistepScheduler", {"use_lu_lambdas": True}),
    ("DPMSolverMultistepScheduler", {"solver_order": 3}),
    ("DPMSolverMultistepScheduler", {"solver_order": 3, "timestep_spacing": "leading"}),
    ("DPMSolverMultistepScheduler", {"solver_order": 3, "use_karras_sigmas": True}),
    ("DPMSolverSinglestepScheduler", {}),
    ("UniPCMultistepScheduler", {}),
    ("UniPCMultistepScheduler", {"timestep_spacing": "leading"}),
    ("UniPCMultistepScheduler", {"timestep_spacing": "trailing"}),
    ("UniPCMultistepScheduler", {"use_karras_sigmas": True}),
    ("UniPCMultistepScheduler", {"solver_order": 3}),
    ("DEISMultistepScheduler", {}),
    ("PNDMScheduler", {"skip_prk_steps": True}),
    ("LMSDiscreteScheduler", {}),
    ("EulerDiscreteScheduler", {}),
    ("HeunDiscreteScheduler", {}),
]


def gaussian_denoiser(schedule: NoiseSchedule, std: float):
    """Return the exact x_t, t ↦ E[x₀ | x_t] of data N(0, std²)."""

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = schedule.alpha_sigma(t, x_t)
        return alpha * std**2 * x_t / (alpha**2 * std**2 + sigma**2)

    return denoise


def exact_sample(schedule: NoiseSchedule, noise: torch.Tensor, std: float) -> torch.Tensor:
    """Return E[x₀ | x at t = 0] where x follows the probability-flow ODE from ``noise`` at
    t = T−1: every sampler's limit as its network calls grow."""
    alphas_cumprod = schedule.alphas_cumprod
    variance = alphas_cumprod * std**2 + 1 - alphas_cumprod  # marginal of x_t
    x_0 = noise * math.sqrt(variance[0] / variance[-1])
    return gaussian_denoiser(schedule, std)(x_0, torch.zeros(len(noise), dtype=torch.long))


def relative_error(images: torch.Tensor, exact: torch.Tensor) -> float:
    """Return the median over elements of |images − exact| / |exact|."""
    return ((images - exact).abs() / exact.abs()).median().item()


def counted(denoise):
    """Return (denoiser that counts its calls, list holding the count)."""
    count = [0]

    def wrapped(x_t, t):
        count[0] += 1
        return denoise(x_t, t)

    return wrapped, count


def zoo_error(sampler: str, grid: str | None, schedule, noise, std, calls) -> float:
    denoise, count = counted(gaussian_denoiser(schedule, std))
    images = ZOO[sampler](denoise, schedule, noise, steps=calls, grid=grid)
    assert count[0] == calls, (sampler, grid, count[0], calls)
    return relative_error(images, exact_sample(schedule, noise, std))


def diffusers_error(name: str, config: dict, schedule, noise, std, calls) -> float:
    scheduler = diffusers_scheduler(name, schedule, "epsilon", config)
    denoise, count = counted(gaussian_denoiser(schedule, std))
    try:
        images = diffusers_sample(scheduler, denoise, schedule, noise, calls, "epsilon")
    except (ValueError, IndexError, AssertionError):  # diffusers fails on this schedule
        return float("nan")
    assert count[0] == calls, (name, config, count[0], calls)
    return relative_error(images, exact_sample(schedule, noise, std))


def table(std: float) -> None:
    noise = torch.randn(64, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    noise = noise.double()
    header = " | ".join(f"{n} calls" for n in CALLS)
    for kind in ("linear", "cosine"):
        schedule = NoiseSchedule(kind, 1000)
        print(f"\n### {kind} schedule, T = 1000, data N(0, {std}²)\n")
        print(f"| sampler | grid / configuration | {header} |")
        print("|---|---|" + "---|" * len(CALLS))
        zoo_rows = {}
        for sampler in ZOO:
            default = diffusion.DEFAULT_GRIDS[sampler][kind]
            for grid in diffusion.GRIDS:
                errors = [zoo_error(sampler, grid, schedule, noise, std, n) for n in CALLS]
                zoo_rows[sampler, grid] = errors
                mark = " (default)" if grid == default else ""
                cells = " | ".join(f"{e:.2g}" for e in errors)
                print(f"| zoo {sampler} | {grid}{mark} | {cells} |", flush=True)
        best = [math.inf] * len(CALLS)
        for name, config in DIFFUSERS:
            errors = [diffusers_error(name, config, schedule, noise, std, n) for n in CALLS]
            best = [min(b, e) if e == e else b for b, e in zip(best, errors, strict=True)]
            shown = ", ".join(f"{k}={v}" for k, v in config.items()) or "defaults"
            cells = " | ".join(f"{e:.2g}" for e in errors)
            print(f"| diffusers {name.removesuffix('Scheduler')} | {shown} | {cells} |", flush=True)
        print(f"| **best diffusers** | | {' | '.join(f'**{b:.2g}**' for b in best)} |")
        default = zoo_rows["unipc", diffusion.DEFAULT_GRIDS["unipc"][kind]]
        ratios = " | ".join(f"{e / b:.2f}" for e, b in zip(default, best, strict=True))
        print(f"| zoo unipc (default) ÷ best diffusers | | {ratios} |")


def logsnr_min_sweep(std: float) -> None:
    """Print the default samplers' errors for several LOGSNR_MIN, the measurement behind it."""
    noise = torch.randn(64, 1, 2, 2, generator=torch.Generator().manual_seed(0)).double()
    print(f"\n| schedule | LOGSNR_MIN | sampler | {' | '.join(f'{n} calls' for n in CALLS)} |")
    print("|---|---|---|" + "---|" * len(CALLS))
    for kind in ("linear", "cosine"):
        schedule = NoiseSchedule(kind, 1000)
        for value in (-math.inf, -5.1, -4.0, -3.0, -2.5, -2.0, -1.5):
            diffusion.LOGSNR_MIN = value
            for sampler in ("dpm_solver", "unipc"):
                errors = [zoo_error(sampler, "logsnr", schedule, noise, std, n) for n in CALLS]
                cells = " | ".join(f"{e:.2g}" for e in errors)
                print(f"| {kind} | {value} | {sampler} | {cells} |", flush=True)


def five_call_search(std: float) -> None:
    """Print how much a 5-call sample's error depends on where its three free calls fall:
    every grid T−1, λ₁ > …, 0 with λ₁, λ₂, λ₃ on a lattice of step 0.25 in [−4, 4.75]."""
    noise = torch.randn(64, 1, 2, 2, generator=torch.Generator().manual_seed(0)).double()
    lattice = [step / 4 for step in range(-16, 20)]
    print("\n| schedule | sampler | grids | smallest error | median | largest |")
    print("|---|---|---|---|---|---|")
    for kind in ("linear", "cosine"):
        schedule = NoiseSchedule(kind, 1000)
        exact = exact_sample(schedule, noise, std)
        grids = set()
        for lambdas in itertools.combinations(lattice, 3):
            nearest = [int((schedule.log_snr - value).abs().argmin()) for value in lambdas]
            grid = (999, *sorted(nearest, reverse=True), 0)
            if len(set(grid)) == 5:
                grids.add(grid)
        for sampler in ("dpm_solver", "unipc"):
            errors = []
            for grid in sorted(grids):
                diffusion.timestep_grid = lambda schedule, count, name, grid=grid: list(grid)
                denoise = gaussian_denoiser(schedule, std)
                images = ZOO[sampler](denoise, schedule, noise, steps=5)
                errors.append(relative_error(images, exact))
            diffusion.timestep_grid = timestep_grid
            errors.sort()
            print(
                f"| {kind} | {sampler} | {len(errors)} | {errors[0]:.2g} | "
                f"{errors[len(errors) // 2]:.2g} | {errors[-1]:.2g} |",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-std", type=float, default=0.5)
    parser.add_argument("--logsnr-min-sweep", action="store_true")
    parser.add_argument("--five-call-search", action="store_true")
    arguments = parser.parse_args()
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # its notes on adjusted configurations
    if arguments.logsnr_min_sweep:
        logsnr_min_sweep(arguments.data_std)
    elif arguments.five_call_search:
        five_call_search(arguments.data_std)
    else:
        table(arguments.data_std)


if __name__ == "__main__":
    main()
