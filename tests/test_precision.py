"""bf16-mixed training on the CPU: attention kept fast and right, fused optimizers clipped."""

from types import SimpleNamespace

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import TEXT, text_spec
from lightning.pytorch.plugins.precision import FSDPPrecision, MixedPrecision, Precision

from zoo.data import TextFileDataModule
from zoo.models import GPT
from zoo.nn.attention import scaled_dot_product_attention
from zoo.nn.distributions import gaussian_kl_to_standard_normal
from zoo.nn.dit import DiT


def qkv(*shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=generator, requires_grad=True) for _ in range(3)]


@pytest.mark.parametrize("is_causal", [False, True])
def test_attention_under_bf16_autocast_is_float32_attention_of_the_bf16_inputs(is_causal):
    q, k, v = qkv(2, 3, 7, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q16, k16, v16 = (x.to(torch.bfloat16) for x in (q, k, v))
        y = scaled_dot_product_attention(q16, k16, v16, is_causal=is_causal)
    assert y.dtype == torch.bfloat16  # what autocast's neighbours expect
    reference = F.scaled_dot_product_attention(
        q16.float(), k16.float(), v16.float(), is_causal=is_causal
    )
    torch.testing.assert_close(y.float(), reference.to(torch.bfloat16).float())
    y.float().sum().backward()  # gradients reach the float32 leaves
    assert all(x.grad is not None and torch.isfinite(x.grad).all() for x in (q, k, v))


def test_attention_outside_autocast_is_sdpa_unchanged():
    q, k, v = qkv(2, 3, 7, 8)
    mask = torch.ones(7, 7, dtype=torch.bool).tril()
    y = scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.equal(y, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))


def test_a_dit_step_under_bf16_autocast_matches_float32_to_bf16_precision():
    torch.manual_seed(0)
    net = DiT((1, 8, 8), patch_size=2, hidden_size=32, depth=2, num_heads=2)
    for parameter in net.parameters():  # adaLN-Zero starts as identity: give it some output
        torch.nn.init.normal_(parameter, std=0.05)
    x, t = torch.randn(4, 1, 8, 8), torch.rand(4)
    full = net(x, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = net(x, t)
    assert mixed.shape == full.shape
    relative = (mixed.float() - full).norm() / full.norm()
    assert 0 < relative < 0.05, relative  # bf16 rounding, nothing more


class ClippedNorms(L.Callback):
    """Records the gradient norm and largest |gradient| each optimizer step applied (after
    clipping)."""

    def __init__(self):
        self.norms: list[float] = []
        self.largest: list[float] = []

    def on_train_start(self, trainer, pl_module):
        def record(optimizer, args, kwargs):
            grads = [p.grad for group in optimizer.param_groups for p in group["params"]]
            grads = torch.cat([g.flatten() for g in grads if g is not None])
            self.norms.append(float(torch.linalg.vector_norm(grads)))
            self.largest.append(float(grads.abs().max()))

        trainer.optimizers[0].register_step_post_hook(record)


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_a_fused_adamw_under_bf16_mixed_precision_clips_its_gradients(tmp_path, algorithm):
    """Lightning refuses to clip for a fused optimizer under mixed precision (for float16's
    gradient scaler); bf16 has no scaler, and the GPT's fused AdamW clips as configured."""
    (tmp_path / "corpus.txt").write_text(TEXT * 10, encoding="utf-8")
    data = TextFileDataModule(
        path=str(tmp_path / "corpus.txt"),
        tokens_dir=str(tmp_path),
        block_size=16,
        batch_size=8,
        samples_per_epoch=32,
    )
    torch.manual_seed(0)
    model = GPT(data.spec.to_dict(), n_layer=1, n_head=2, n_embd=32, block_size=16)
    norms = ClippedNorms()
    trainer = L.Trainer(
        accelerator="cpu",
        precision="bf16-mixed",
        max_steps=4,
        max_epochs=-1,
        gradient_clip_val=0.01,  # far below a fresh GPT's gradients
        gradient_clip_algorithm=algorithm,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[norms],
    )
    trainer.fit(model, datamodule=data)
    assert trainer.optimizers[0].defaults["fused"] is True
    assert len(norms.norms) == 4
    if algorithm == "norm":
        assert all(norm == pytest.approx(0.01, rel=1e-3) for norm in norms.norms), norms.norms
    else:
        assert all(largest == pytest.approx(0.01) for largest in norms.largest), norms.largest


@pytest.mark.parametrize(
    "plugin",
    [
        MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu")),
        FSDPPrecision("bf16-mixed"),  # sharded gradients: a local norm is not the norm
        Precision(),
    ],
    ids=["float16 with its scaler", "FSDP bf16", "float32"],
)
def test_every_other_precision_clips_through_lightning(plugin):
    model = GPT(text_spec(), n_layer=1, n_head=2, n_embd=16, block_size=8)
    optimizer = torch.optim.AdamW(model.parameters(), fused=True)
    calls = []
    model._trainer = SimpleNamespace(precision_plugin=plugin)
    model.clip_gradients = lambda optimizer, **kwargs: calls.append(optimizer)  # Lightning
    model.configure_gradient_clipping(optimizer, 1.0, "norm")
    assert calls == [optimizer]


def test_the_vae_kl_of_bf16_encoder_outputs_is_computed_in_float32_and_never_negative():
    generator = torch.Generator().manual_seed(0)
    mean = (1e-3 * torch.randn(64, 8, generator=generator)).to(torch.bfloat16)
    log_var = (1e-3 * torch.randn(64, 8, generator=generator)).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        kl = gaussian_kl_to_standard_normal(mean, log_var)
    m, v = mean.double(), log_var.double()
    exact = (0.5 * (v.exp() + m**2 - 1 - v)).sum(-1)  # the closed form, in float64
    assert kl.dtype == torch.float32 and (kl >= 0).all()
    torch.testing.assert_close(kl.double(), exact, rtol=0, atol=1e-6)  # bf16: errors ~1e-2
