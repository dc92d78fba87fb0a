"""The GAN's networks, losses, penalties and DiffAugment, as plain modules and functions.

Generator and discriminator are sized from the image shape: the generator starts
from a small feature map (4×4 for 32×32 and 8×8 images, 7×7 for 28×28) and doubles
it once per stage; the discriminator mirrors it. ``dcgan`` stages are strided
(transposed) convolutions (Radford et al., 2016); ``resnet`` stages are the
residual blocks of SNGAN (Miyato et al., 2018). Class conditioning is conditional
batch norm in the generator and a projection discriminator (Miyato & Koyama, 2018).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

ARCHITECTURES = ("dcgan", "resnet")
LOSSES = ("non_saturating", "hinge", "wgan_gp")
AUGMENTATIONS = ("color", "translation", "cutout")


def num_stages(height: int, width: int, smallest: int = 4) -> int:
    """Return how many times the image halves before its sides would drop below ``smallest``
    or stop being even: the generator's up-sampling stages (2 for 28×28, 3 for 32×32)."""
    stages = 0
    while height % 2 == 0 and width % 2 == 0 and min(height, width) // 2 >= smallest:
        height, width, stages = height // 2, width // 2, stages + 1
    return stages


def stage_channels(width: int, stages: int) -> list[int]:
    """Return the channels from the smallest map to full resolution: width·2^stages … width."""
    return [width * 2 ** (stages - i) for i in range(stages + 1)]


# Generator


class ConditionalBatchNorm(nn.Module):
    """Batch norm whose scale and shift come from the class (one learned pair per class),
    or plain batch norm without classes."""

    def __init__(self, channels: int, num_classes: int = 0):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=not num_classes)
        self.embed = None
        if num_classes:
            self.embed = nn.Embedding(num_classes, 2 * channels)
            nn.init.ones_(self.embed.weight[:, :channels])
            nn.init.zeros_(self.embed.weight[:, channels:])

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        h = self.norm(x)
        if self.embed is None:
            return h
        scale, shift = self.embed(labels)[:, :, None, None].chunk(2, dim=1)
        return h * scale + shift


class UpBlock(nn.Module):
    """Doubles the feature map: a transposed convolution (dcgan) or SNGAN's residual block."""

    def __init__(self, c_in: int, c_out: int, residual: bool, num_classes: int):
        super().__init__()
        self.residual = residual
        self.norm1 = ConditionalBatchNorm(c_in, num_classes)
        if residual:
            self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
            self.norm2 = ConditionalBatchNorm(c_out, num_classes)
            self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
            self.shortcut = nn.Conv2d(c_in, c_out, 1)
        else:
            self.conv1 = nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        h = F.relu(self.norm1(x, labels))
        if not self.residual:
            return self.conv1(h)  # (B, c_out, 2H, 2W)
        h = self.conv1(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        h = self.conv2(F.relu(self.norm2(h, labels)))
        return h + self.shortcut(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Generator(nn.Module):
    """Maps latents (B, latent_dim) (and labels (B,)) to images (B, C, H, W) in [-1, 1]."""

    def __init__(
        self,
        shape: tuple[int, int, int],
        latent_dim: int,
        width: int,
        architecture: str = "dcgan",
        num_classes: int = 0,
    ):
        super().__init__()
        c, h, w = shape
        stages = num_stages(h, w)
        channels = stage_channels(width, stages)
        self.base_shape = (channels[0], h >> stages, w >> stages)
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        self.project = nn.Linear(latent_dim, channels[0] * self.base_shape[1] * self.base_shape[2])
        residual = architecture == "resnet"
        pairs = zip(channels, channels[1:], strict=False)
        self.blocks = nn.ModuleList(UpBlock(a, b, residual, num_classes) for a, b in pairs)
        self.out_norm = ConditionalBatchNorm(channels[-1], num_classes)
        self.out_conv = nn.Conv2d(channels[-1], c, 3, padding=1)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.project(z).view(-1, *self.base_shape)  # (B, C0, h0, w0)
        for block in self.blocks:
            h = block(h, labels)
        return torch.tanh(self.out_conv(F.relu(self.out_norm(h, labels))))


# Discriminator


class DownBlock(nn.Module):
    """Halves the feature map: a strided convolution (dcgan) or SNGAN's residual block
    (which may also keep the size, ``down=False``)."""

    def __init__(
        self, c_in: int, c_out: int, residual: bool, first: bool = False, down: bool = True
    ):
        super().__init__()
        self.residual, self.first, self.down = residual, first, down
        if residual:
            self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
            self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
            self.shortcut = nn.Conv2d(c_in, c_out, 1)
        else:
            self.conv1 = nn.Conv2d(c_in, c_out, 4, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.residual:
            return F.leaky_relu(self.conv1(x), 0.2)
        h = x if self.first else F.relu(x)  # the first block sees the image itself
        h = self.conv2(F.relu(self.conv1(h)))
        shortcut = self.shortcut(x)
        if self.down:
            h, shortcut = F.avg_pool2d(h, 2), F.avg_pool2d(shortcut, 2)
        return h + shortcut


class Discriminator(nn.Module):
    """Maps images (B, C, H, W) (and labels (B,)) to one logit per image, (B,).

    With classes, the logit adds the projection ⟨embed(y), φ(x)⟩ of the class
    embedding on the image features (Miyato & Koyama, 2018).
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        width: int,
        architecture: str = "dcgan",
        num_classes: int = 0,
        use_spectral_norm: bool = True,
    ):
        super().__init__()
        c, h, w = shape
        stages = num_stages(h, w)
        channels = list(reversed(stage_channels(width, stages)))  # full resolution first
        self.residual = architecture == "resnet"
        if self.residual:  # SNGAN: `stages` halving blocks, then one at the smallest size
            self.stem = nn.Identity()
            sizes = [c, *channels]
            self.blocks = nn.Sequential(
                *(
                    DownBlock(sizes[i], sizes[i + 1], True, first=i == 0, down=i < stages)
                    for i in range(stages + 1)
                )
            )
            features = channels[-1]
        else:
            self.stem = nn.Sequential(nn.Conv2d(c, channels[0], 3, padding=1), nn.LeakyReLU(0.2))
            self.blocks = nn.Sequential(
                *(DownBlock(a, b, False) for a, b in zip(channels, channels[1:], strict=False))
            )
            features = channels[-1] * (h >> stages) * (w >> stages)
        self.head = nn.Linear(features, 1)
        self.embed = nn.Embedding(num_classes, features) if num_classes else None
        if use_spectral_norm:
            for module in self.modules():
                if isinstance(module, nn.Conv2d | nn.Linear | nn.Embedding):
                    spectral_norm(module)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Return φ(x), the features the head and the projection read: (B, F)."""
        h = self.blocks(self.stem(x))
        if self.residual:
            return F.relu(h).sum(dim=(2, 3))  # global sum pooling, as in SNGAN
        return h.flatten(1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        phi = self.features(x)
        logits = self.head(phi).squeeze(1)
        if self.embed is not None:
            logits = logits + (self.embed(labels) * phi).sum(dim=1)
        return logits


# Losses on discriminator logits: closed forms, tested against their definitions


def discriminator_loss(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Return the discriminator's loss on logits of real and generated images.

    non_saturating: −log σ(D(x)) − log(1 − σ(D(G(z)))) (Goodfellow et al., 2014);
    hinge: max(0, 1 − D(x)) + max(0, 1 + D(G(z))) (Lim & Ye, 2017);
    wgan_gp: D(G(z)) − D(x), the critic's Wasserstein estimate (the penalty is added apart).
    """
    if kind == "non_saturating":
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    if kind == "hinge":
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    if kind == "wgan_gp":
        return fake.mean() - real.mean()
    raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {kind!r}")


def generator_loss(kind: str, fake: torch.Tensor) -> torch.Tensor:
    """Return the generator's loss on the discriminator's logits of its images:
    −log σ(D(G(z))) for non_saturating, −D(G(z)) for hinge and wgan_gp."""
    if kind == "non_saturating":
        return F.softplus(-fake).mean()
    if kind in ("hinge", "wgan_gp"):
        return -fake.mean()
    raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {kind!r}")


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, labels=None, generator=None):
    """Return WGAN-GP's E[(‖∇D(x̂)‖₂ − 1)²] at x̂ = εx + (1−ε)x̃, ε ~ U(0, 1) per image
    (Gulrajani et al., 2017). ``critic(images, labels)`` returns (B,) logits."""
    epsilon = torch.rand(
        real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype, generator=generator
    )
    mixed = (epsilon * real.detach() + (1 - epsilon) * fake.detach()).requires_grad_(True)
    (gradient,) = torch.autograd.grad(critic(mixed, labels).sum(), mixed, create_graph=True)
    return (gradient.flatten(1).norm(dim=1) - 1.0).pow(2).mean()


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Return R1's E[‖∇ₓD(x)‖²] on real images (Mescheder et al., 2018); ``real`` must have
    required grad when ``real_logits`` were computed. Weighted by γ/2 by the caller."""
    (gradient,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
    return gradient.flatten(1).pow(2).sum(dim=1).mean()


# DiffAugment (Zhao et al., 2020): the same random, differentiable transforms applied to
# every image the discriminator sees, real or generated, so that it cannot memorise a
# small training set and the generator still learns the un-augmented distribution.


def diff_augment(x: torch.Tensor, policy: list[str], fill: float = -1.0) -> torch.Tensor:
    """Return ``x`` (B, C, H, W) in [-1, 1] after each transform in ``policy``, drawn per image."""
    for name in policy:
        if name == "color":
            x = _color(x)
        elif name == "translation":
            x = _translation(x, 0.125, fill)
        elif name == "cutout":
            x = _cutout(x, 0.5, fill)
        else:
            raise ValueError(f"augment: unknown transform {name!r}; use {', '.join(AUGMENTATIONS)}")
    return x


def _uniform(x: torch.Tensor) -> torch.Tensor:
    return torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype)


def _color(x: torch.Tensor) -> torch.Tensor:
    x = x + (_uniform(x) - 0.5)  # brightness
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_uniform(x) * 2) + mean  # saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_uniform(x) + 0.5) + mean  # contrast


def _translation(x: torch.Tensor, ratio: float, fill: float) -> torch.Tensor:
    """Shifts each image by up to ``ratio`` of its size; pixels moved in read ``fill``."""
    b, _, h, w = x.shape
    sy, sx = max(1, int(h * ratio + 0.5)), max(1, int(w * ratio + 0.5))
    dy = torch.randint(-sy, sy + 1, (b, 1, 1), device=x.device)
    dx = torch.randint(-sx, sx + 1, (b, 1, 1), device=x.device)
    index_b, index_y, index_x = torch.meshgrid(
        torch.arange(b, device=x.device),
        torch.arange(h, device=x.device),
        torch.arange(w, device=x.device),
        indexing="ij",
    )
    # one pixel of fill around the image; positions beyond it read the fill too
    index_y = (index_y + dy + 1).clamp(0, h + 1)
    index_x = (index_x + dx + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1], value=fill).permute(0, 2, 3, 1)  # (B, H+2, W+2, C)
    return padded[index_b, index_y, index_x].permute(0, 3, 1, 2)


def _cutout(x: torch.Tensor, ratio: float, fill: float) -> torch.Tensor:
    """Replaces a square of ``ratio`` of the sides, at a random place per image, by ``fill``."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h - ch + 1, (b, 1, 1), device=x.device)
    left = torch.randint(0, w - cw + 1, (b, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)  # (B, H, W)
    return torch.where(inside.unsqueeze(1), torch.full_like(x, fill), x)
