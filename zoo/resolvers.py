"""Config resolvers the entry scripts need before Hydra composes (no torch import here)."""

import secrets

from omegaconf import OmegaConf


def _choice(group: str, *, _root_) -> str:
    """Return the option chosen for a config group (``${choice:model}`` → ``vae``).

    Works both where the ``hydra`` node is in the config (run and sweep folder
    names) and in the job's config, where Hydra has taken that node out.
    """
    if "hydra" in _root_:
        return _root_.hydra.runtime.choices[group]
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.choices[group]


def _auto_devices(cpu_processes: int) -> str | int:
    """Return ``auto`` (every GPU) when CUDA is present, else ``cpu_processes`` (trainer=ddp)."""
    import torch  # only when a config asks: composing a config should not need torch

    return "auto" if torch.cuda.is_available() else int(cpu_processes)


def register_resolvers() -> None:
    """Registers the zoo's resolvers (idempotent).

    ``${run_id:}``: a random suffix drawn once per process; run folders end with
    it, so two runs started in the same second never share a folder.
    ``${choice:GROUP}``: the option chosen for a config group.
    ``${auto_devices:N}``: ``auto`` with CUDA, else N CPU processes (trainer=ddp).
    """
    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", lambda: secrets.token_hex(3), use_cache=True)
    if not OmegaConf.has_resolver("choice"):
        OmegaConf.register_new_resolver("choice", _choice)
    if not OmegaConf.has_resolver("auto_devices"):
        OmegaConf.register_new_resolver("auto_devices", _auto_devices)
