"""The families: one module each, every one a GenerativeModule.

``FAMILIES`` maps the family name stored in a checkpoint to its class. sample.py
rebuilds models only through this table, so a checkpoint can never name code to import.
"""

from zoo.models.base import GenerativeModule
from zoo.models.char_rnn import CharRNN
from zoo.models.classifier import CNNClassifier
from zoo.models.diffusion import Diffusion
from zoo.models.flow import Flow
from zoo.models.gan import GAN
from zoo.models.gpt import GPT
from zoo.models.pixelcnn import PixelCNN
from zoo.models.vae import VAE
from zoo.models.vq_prior import VQPrior
from zoo.models.vqvae import VQVAE

FAMILIES: dict[str, type[GenerativeModule]] = {
    cls.family: cls
    for cls in (VAE, CharRNN, CNNClassifier, GPT, Diffusion, Flow, PixelCNN, GAN, VQVAE, VQPrior)
}

__all__ = [
    "FAMILIES",
    "CNNClassifier",
    "CharRNN",
    "Diffusion",
    "Flow",
    "GAN",
    "GPT",
    "GenerativeModule",
    "PixelCNN",
    "VAE",
    "VQPrior",
    "VQVAE",
]
