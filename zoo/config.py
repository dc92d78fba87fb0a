"""Config resolvers the entry scripts need before Hydra composes (no torch import here)."""

import secrets

from omegaconf import OmegaConf


def register_resolvers() -> None:
    """Registers ``${run_id:}``: a random suffix drawn once per process (idempotent).

    Run directories end with it, so two runs started in the same second never
    share a folder.
    """
    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", lambda: secrets.token_hex(3), use_cache=True)
