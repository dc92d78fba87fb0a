"""The GAN family: the LightningModule (model.py) and its networks, losses and DiffAugment
(networks.py)."""

from zoo.models.gan.model import GAN, slerp, truncated_normal

__all__ = ["GAN", "slerp", "truncated_normal"]
