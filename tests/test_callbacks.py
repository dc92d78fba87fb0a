"""The shared callbacks: the EMA's average and swaps, the curve plots, the sample files."""

from __future__ import annotations

from types import SimpleNamespace

import lightning as L
import matplotlib.pyplot as plt
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from zoo.callbacks import EMA, CurvePlotter, SampleQuality, SampleWriter
from zoo.callbacks.cadence import epoch_is_due
from zoo.callbacks.plot import plot_curves
from zoo.checkpoint_format import EMA as EMA_KEY
from zoo.data.spec import DataSpec
from zoo.models import VAE
from zoo.outputs import image_grid, save_image_grid, save_texts

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class OneWeight(L.LightningModule):
    """A module with a single scalar weight, so an average can be computed by hand."""

    def __init__(self, value: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(value, dtype=torch.float64))

    def set(self, value: float) -> None:
        with torch.no_grad():
            self.weight.fill_(value)


def at_step(step: int = 0) -> SimpleNamespace:
    """Return a stand-in trainer at a global step."""
    return SimpleNamespace(global_step=step)


def drive_updates(ema: EMA, module: OneWeight, values: list[float]) -> list[float]:
    """Return the average after each optimizer step, the weight set to each value in turn."""
    averages = []
    for step, value in enumerate(values):
        module.set(value)
        ema.on_train_batch_end(at_step(ema._last_step + 1), module, None, None, step)
        averages.append(ema.ema_weights["weight"].item())
    return averages


# EMA: the average ----------------------------------------------------------------------------


def test_ema_without_warmup_follows_the_recursion_with_a_constant_decay():
    module, ema = OneWeight(0.0), EMA(decay=0.9, warmup=False)
    ema.on_fit_start(at_step(), module)
    # ema_n = 0.9 · ema_{n-1} + 0.1 · w_n from ema_0 = w_0 = 0.
    assert drive_updates(ema, module, [1.0, 2.0, 3.0]) == pytest.approx([0.1, 0.29, 0.561])
    assert ema.num_updates == 3


def test_ema_with_warmup_ramps_the_decay_as_one_plus_n_over_ten_plus_n():
    module, ema = OneWeight(0.0), EMA(decay=0.999, warmup=True)
    ema.on_fit_start(at_step(), module)
    # Decays 1/10, 2/11, 3/12: 0.9·1; (2/11)·0.9 + (9/11)·2 = 1.8; 0.25·1.8 + 0.75·3 = 2.7.
    assert drive_updates(ema, module, [1.0, 2.0, 3.0]) == pytest.approx([0.9, 1.8, 2.7])
    assert ema.current_decay() == pytest.approx(4 / 13)


def test_ema_warmup_never_exceeds_the_configured_decay():
    module, ema = OneWeight(), EMA(decay=0.2, warmup=True)
    ema.on_fit_start(at_step(), module)
    decays = []
    for value in range(5):
        decays.append(ema.current_decay())
        drive_updates(ema, module, [float(value)])
    assert decays == pytest.approx([1 / 10, 2 / 11, 0.2, 0.2, 0.2])


def test_ema_starts_from_the_weights_at_fit_start():
    module, ema = OneWeight(5.0), EMA(decay=0.5, warmup=False)
    ema.on_fit_start(at_step(), module)
    assert ema.ema_weights["weight"].item() == 5.0
    module.set(7.0)  # a copy, not a view: changing the weight leaves the average alone
    assert ema.ema_weights["weight"].item() == 5.0


def test_ema_decay_outside_zero_to_one_is_refused():
    for decay in (1.0, -0.1):
        with pytest.raises(ValueError, match=r"decay must lie in \[0, 1\)"):
            EMA(decay=decay)


class GeneratorAndCritic(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.generator = nn.Linear(2, 2)
        self.critic = nn.BatchNorm1d(2)  # holds an integer buffer, num_batches_tracked


def test_ema_prefix_averages_one_submodule_and_only_floating_tensors():
    module, ema = GeneratorAndCritic(), EMA(decay=0.5, prefix="generator.")
    ema.on_fit_start(at_step(), module)
    assert sorted(ema.ema_weights) == ["generator.bias", "generator.weight"]
    everything = EMA(decay=0.5)
    everything.on_fit_start(at_step(), module)
    assert "critic.running_mean" in everything.ema_weights
    assert "critic.num_batches_tracked" not in everything.ema_weights


# EMA: swapping the average in for evaluation -------------------------------------------------


def module_with_average(live: float, average: float) -> tuple[OneWeight, EMA]:
    module, ema = OneWeight(average), EMA(decay=0.9, warmup=False)
    ema.on_fit_start(at_step(), module)
    module.set(live)
    return module, ema


@pytest.mark.parametrize("stage", ["validation", "test"])
def test_ema_is_swapped_in_for_evaluation_and_the_live_weights_come_back_exactly(stage):
    live = 0.123456789012345
    module, ema = module_with_average(live=live, average=2.0)
    parameter = module.weight
    getattr(ema, f"on_{stage}_start")(None, module)
    assert module.weight.item() == 2.0
    getattr(ema, f"on_{stage}_start")(None, module)  # a second swap-in must not lose them
    getattr(ema, f"on_{stage}_end")(None, module)
    assert module.weight.item() == live
    assert module.weight is parameter  # copied in place: the optimizer still holds it
    assert ema.ema_weights["weight"].item() == 2.0


def test_ema_checkpoint_stores_the_average_beside_the_live_weights():
    module, ema = module_with_average(live=1.0, average=2.0)
    checkpoint = {"state_dict": module.state_dict()}
    ema.on_save_checkpoint(None, module, checkpoint)
    assert checkpoint["state_dict"]["weight"].item() == 1.0
    assert checkpoint[EMA_KEY]["weight"].item() == 2.0


def test_ema_checkpoint_saved_mid_validation_stores_the_live_weights_not_the_average():
    module, ema = module_with_average(live=1.0, average=2.0)
    ema.on_validation_start(None, module)
    # What Lightning would write now, while the module holds the average; the state_dict's
    # tensors share storage with the weights, so checked before the live weights come back.
    checkpoint = {"state_dict": module.state_dict()}
    assert checkpoint["state_dict"]["weight"].item() == 2.0
    ema.on_save_checkpoint(None, module, checkpoint)
    assert checkpoint["state_dict"]["weight"].item() == 1.0
    assert checkpoint[EMA_KEY]["weight"].item() == 2.0
    ema.on_validation_end(None, module)
    assert module.weight.item() == 1.0


def test_ema_restored_from_a_checkpoint_continues_the_same_average():
    module, ema = OneWeight(0.0), EMA(decay=0.999, warmup=True)
    ema.on_fit_start(at_step(), module)
    drive_updates(ema, module, [1.0, 2.0])
    checkpoint = {"state_dict": module.state_dict()}
    ema.on_save_checkpoint(None, module, checkpoint)
    callback_state = ema.state_dict()

    resumed_module, resumed = OneWeight(9.0), EMA(decay=0.999, warmup=True)
    resumed.on_load_checkpoint(None, resumed_module, checkpoint)
    resumed.load_state_dict(callback_state)
    resumed.on_fit_start(at_step(), resumed_module)  # keeps the restored average, not the weight 9
    assert resumed.num_updates == 2
    assert resumed.ema_weights["weight"].item() == pytest.approx(1.8)
    assert drive_updates(resumed, resumed_module, [3.0]) == pytest.approx([2.7])
    assert drive_updates(ema, module, [3.0]) == pytest.approx([2.7])


# EMA in a real fit -----------------------------------------------------------------------------


class TinyRegression(L.LightningModule):
    """A linear model fitted by SGD to y = 2x; logs train/loss and val/loss per epoch."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(1, 1)

    def _loss(self, batch):
        x, y = batch
        return nn.functional.mse_loss(self.layer(x), y)

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch)
        self.log("train/loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self._loss(batch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def regression_loader() -> DataLoader:
    x = torch.linspace(-1, 1, 12).unsqueeze(1)
    return DataLoader(TensorDataset(x, 2 * x), batch_size=4)  # 3 batches an epoch, fixed order


def fit(callbacks, max_epochs: int, ckpt_path=None) -> tuple[L.Trainer, TinyRegression]:
    """Return the trainer and the model after a seeded CPU fit of TinyRegression."""
    L.seed_everything(0, verbose=False)
    model = TinyRegression()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=max_epochs,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
        num_sanity_val_steps=1,
    )
    loader = regression_loader()
    trainer.fit(model, loader, loader, ckpt_path=ckpt_path, weights_only=True)
    return trainer, model


def test_ema_in_a_fit_is_saved_in_a_weights_only_checkpoint_apart_from_the_live_weights(
    tmp_path,
):
    ema = EMA(decay=0.9)
    trainer, model = fit([ema], max_epochs=2)
    path = tmp_path / "fit.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    assert set(checkpoint[EMA_KEY]) == {"layer.weight", "layer.bias"}
    for name, average in checkpoint[EMA_KEY].items():
        torch.testing.assert_close(average, ema.ema_weights[name])
        torch.testing.assert_close(checkpoint["state_dict"][name], model.state_dict()[name])
        assert not torch.equal(average, checkpoint["state_dict"][name])
    assert ema.num_updates == trainer.global_step == 6


def test_ema_leaves_training_unchanged_despite_swapping_for_validation():
    _, plain = fit([], max_epochs=2)
    _, averaged = fit([EMA(decay=0.9)], max_epochs=2)
    for name, weight in plain.state_dict().items():
        assert torch.equal(averaged.state_dict()[name], weight)


def test_ema_resumed_from_a_checkpoint_matches_an_uninterrupted_fit(tmp_path):
    whole = EMA(decay=0.9)
    fit([whole], max_epochs=4)
    first_half = EMA(decay=0.9)
    trainer, _ = fit([first_half], max_epochs=2)
    path = tmp_path / "half.ckpt"
    trainer.save_checkpoint(path)
    resumed = EMA(decay=0.9)
    fit([resumed], max_epochs=4, ckpt_path=path)
    assert resumed.num_updates == whole.num_updates == 12
    for name, average in whole.ema_weights.items():
        torch.testing.assert_close(resumed.ema_weights[name], average)


# CurvePlotter ---------------------------------------------------------------------------------


HISTORY = {
    "train/loss": [(10, 1.0), (20, 0.5)],
    "val/loss": [(10, 1.2), (20, 0.7)],
    "val/bpd": [(10, 3.0), (20, 2.5)],
}


def fake_trainer(step: int, metrics: dict[str, float], sanity_checking: bool = False):
    return SimpleNamespace(
        global_step=step,
        callback_metrics={name: torch.tensor(value) for name, value in metrics.items()},
        sanity_checking=sanity_checking,
    )


def test_curve_plotter_records_epoch_metrics_of_its_stage_without_step_values():
    plotter = CurvePlotter("unused.png")
    metrics = {"train/loss_step": 9.0, "train/loss_epoch": 1.0, "val/loss": 2.0, "lr": 0.1}
    plotter.on_train_epoch_end(fake_trainer(10, metrics), None)
    assert dict(plotter.history) == {"train/loss": [(10, 1.0)]}
    plotter.on_validation_epoch_end(fake_trainer(10, metrics), None)
    assert plotter.history["val/loss"] == [(10, 2.0)]


def test_curve_plotter_ignores_the_sanity_check_and_replaces_a_point_at_the_same_step():
    plotter = CurvePlotter("unused.png")
    plotter.on_validation_epoch_end(fake_trainer(0, {"val/loss": 5.0}, sanity_checking=True), None)
    assert dict(plotter.history) == {}
    plotter.on_validation_epoch_end(fake_trainer(10, {"val/loss": 2.0}), None)
    plotter.on_validation_epoch_end(fake_trainer(10, {"val/loss": 1.5}), None)
    plotter.on_validation_epoch_end(fake_trainer(20, {"val/loss": 1.0}), None)
    assert plotter.history["val/loss"] == [(10, 1.5), (20, 1.0)]


def test_curve_plotter_history_survives_a_weights_only_checkpoint(tmp_path):
    plotter = CurvePlotter(tmp_path / "curves.png")
    plotter.history.update({name: list(points) for name, points in HISTORY.items()})
    torch.save(plotter.state_dict(), tmp_path / "state.pt")

    resumed = CurvePlotter(tmp_path / "curves.png")
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert dict(resumed.history) == HISTORY
    resumed.on_train_epoch_end(fake_trainer(30, {"train/loss": 0.25}), None)
    resumed.on_validation_epoch_end(fake_trainer(30, {"val/kl_nats": 4.0}), None)
    assert resumed.history["train/loss"] == [(10, 1.0), (20, 0.5), (30, 0.25)]
    assert resumed.history["val/kl_nats"] == [(30, 4.0)]


def test_curve_plotter_in_a_fit_records_train_and_val_loss_per_epoch_and_plots(tmp_path):
    plotter = CurvePlotter(tmp_path / "curves.png", title="tiny")
    fit([plotter], max_epochs=2)
    assert sorted(plotter.history) == ["train/loss", "val/loss"]
    for points in plotter.history.values():
        assert [step for step, _ in points] == [3, 6]  # 3 batches an epoch
    assert (tmp_path / "curves.png").read_bytes().startswith(PNG_MAGIC)


def test_plot_curves_draws_train_and_val_of_a_metric_on_one_panel(tmp_path, monkeypatch):
    figures = []
    close = plt.close
    monkeypatch.setattr(plt, "close", lambda figure: figures.append(figure))
    path = plot_curves(HISTORY, tmp_path / "plots" / "curves.png", title="run")

    assert path == tmp_path / "plots" / "curves.png"
    assert path.read_bytes().startswith(PNG_MAGIC)
    assert not list(path.parent.glob("*.tmp.png"))
    with Image.open(path) as image:
        assert image.size == (990, 352)  # two panels side by side: 2 · 4.5 by 3.2 inches at 110 dpi
    (figure,) = figures
    panels = {ax.get_title(): ax for ax in figure.axes}
    assert sorted(panels) == ["bpd", "loss"]
    loss_lines = {line.get_label(): line for line in panels["loss"].get_lines()}
    assert sorted(loss_lines) == ["train", "val"]
    assert list(loss_lines["val"].get_ydata()) == [1.2, 0.7]
    assert [line.get_label() for line in panels["bpd"].get_lines()] == ["val"]
    assert figure._suptitle.get_text() == "run"
    close(figure)


def test_curve_plotter_writes_no_plot_when_nothing_was_recorded(tmp_path):
    CurvePlotter(tmp_path / "curves.png").on_fit_end(None, None)
    assert not (tmp_path / "curves.png").exists()


# SampleWriter helpers --------------------------------------------------------------------------


def test_image_grid_maps_minus_one_to_one_onto_zero_to_one_and_enlarges_tiny_images():
    levels = torch.tensor([-1.0, -0.5, 0.5, 3.0])  # 3.0 lies outside [-1, 1]: clamped to 1
    images = levels.view(4, 1, 1, 1).expand(4, 1, 8, 8)
    grid = image_grid(images, nrow=2)
    # Each 8×8 image is enlarged 4× to 32×32; make_grid pads 2 pixels around and between.
    assert grid.shape == (3, 2 + 2 * (32 + 2), 2 + 2 * (32 + 2))
    for index, expected in enumerate([0.0, 0.25, 0.75, 1.0]):
        row, column = divmod(index, 2)
        top, left = 2 + row * 34, 2 + column * 34
        tile = grid[:, top : top + 32, left : left + 32]
        assert torch.all(tile == expected), f"image {index}"
    assert torch.all(grid[:, :2] == 1.0)  # white padding


def test_image_grid_enlarges_pixel_for_pixel():
    images = torch.full((2, 1, 8, 8), -1.0)
    images[0, 0, 0, 0] = 1.0
    tile = image_grid(images, nrow=2)[0, 2:34, 2:34]  # the first image, past the padding
    assert torch.all(tile[:4, :4] == 1.0)
    assert tile.sum() == 16


@pytest.mark.parametrize("size,shown", [(8, 32), (28, 56), (32, 32), (64, 64)])
def test_image_grid_shows_each_image_at_least_32_pixels_wide(size, shown):
    grid = image_grid(torch.zeros(2, 3, size, size), nrow=2)
    assert grid.shape == (3, 2 + shown + 2, 2 + 2 * (shown + 2))


def test_image_grid_of_one_image_is_the_image_without_padding():
    # torchvision's make_grid returns a lone image as it is.
    assert image_grid(torch.zeros(1, 1, 8, 8)).shape == (3, 32, 32)


def test_image_grid_defaults_to_a_square_layout():
    grid = image_grid(torch.zeros(5, 1, 32, 32))  # ceil(sqrt(5)) = 3 columns, 2 rows
    assert grid.shape == (3, 2 + 2 * 34, 2 + 3 * 34)


def test_save_image_grid_writes_the_grid_as_a_png(tmp_path):
    path = save_image_grid(torch.zeros(4, 1, 8, 8), tmp_path / "new" / "grid.png", nrow=2)
    assert path.read_bytes().startswith(PNG_MAGIC)
    with Image.open(path) as image:
        assert image.size == (70, 70)
        assert image.getpixel((10, 10)) == (128, 128, 128)  # 0 in [-1, 1] is mid-grey


def test_save_texts_writes_numbered_samples_in_utf8(tmp_path):
    path = save_texts(["ROMEO:\nO, she doth", "JULIET: ’tis"], tmp_path / "new" / "samples.txt")
    assert path.read_text(encoding="utf-8") == (
        "===== sample 0 =====\nROMEO:\nO, she doth\n\n===== sample 1 =====\nJULIET: ’tis\n"
    )


class TextSampler:
    """Stands in for a text family: records the options of each sample() call."""

    device = torch.device("cpu")

    def __init__(self):
        self.calls = []

    def sample(self, num_samples, *, generator=None, **options):
        self.calls.append(options)
        return [f"text {i}" for i in range(num_samples)]


def writer_trainer(epoch: int, max_epochs: int, sanity_checking: bool = False):
    return SimpleNamespace(
        current_epoch=epoch,
        max_epochs=max_epochs,
        max_steps=-1,
        sanity_checking=sanity_checking,
        global_step=10 * epoch,
        loggers=[],
    )


def test_sample_writer_writes_text_samples_with_its_options_but_not_in_the_sanity_check(
    tmp_path,
):
    writer = SampleWriter(tmp_path, every_n_epochs=5, num_samples=2, options={"top_k": 3})
    module = TextSampler()
    writer.on_validation_epoch_end(writer_trainer(0, max_epochs=1, sanity_checking=True), module)
    assert module.calls == [] and writer.written == []
    writer.on_validation_epoch_end(writer_trainer(0, max_epochs=1), module)  # the last epoch
    assert module.calls == [{"top_k": 3}]
    assert writer.written == [tmp_path / "epoch_000.txt"]
    assert (tmp_path / "epoch_000.txt").read_text(encoding="utf-8") == (
        "===== sample 0 =====\ntext 0\n\n===== sample 1 =====\ntext 1\n"
    )


# Epoch indices 4 and 9 end the 5th and 10th epochs; index 10 ends the 11th, the last.
@pytest.mark.parametrize("epoch,due", [(0, False), (3, False), (4, True), (9, True), (10, True)])
def test_sample_writer_is_due_every_n_epochs_and_at_the_last(tmp_path, epoch, due):
    writer = SampleWriter(tmp_path, every_n_epochs=5, num_samples=1)
    writer.on_validation_epoch_end(writer_trainer(epoch, max_epochs=11), TextSampler())
    assert writer.written == ([tmp_path / f"epoch_{epoch:03d}.txt"] if due else [])


# SampleWriter in a real fit of the VAE ---------------------------------------------------------


def test_sample_writer_writes_samples_and_reconstructions_on_due_epochs_of_a_vae_fit(tmp_path):
    spec = DataSpec(modality="image", shape=(1, 8, 8), num_levels=17, num_classes=10)
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 17, (8, 1, 8, 8), generator=generator).float() / 8 - 1
    loader = DataLoader(TensorDataset(x, torch.zeros(8, dtype=torch.long)), batch_size=4)
    model = VAE(spec.to_dict(), latent_dim=2, channels=[4], iw_samples=0)
    writer = SampleWriter(tmp_path / "samples", every_n_epochs=2, num_samples=4, seed=0)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=3,
        limit_train_batches=1,
        limit_val_batches=1,
        callbacks=[writer],
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
    )
    trainer.fit(model, loader, loader)

    # Epoch 2 (index 1) is due by every_n_epochs=2 and epoch 3 is the last; the sanity check is not.
    assert sorted(path.name for path in (tmp_path / "samples").iterdir()) == [
        "epoch_001.png",
        "epoch_002.png",
        "reconstructions_epoch_001.png",
        "reconstructions_epoch_002.png",
    ]
    assert writer.written == [
        tmp_path / "samples" / "epoch_001.png",
        tmp_path / "samples" / "epoch_002.png",
    ]
    with Image.open(tmp_path / "samples" / "epoch_002.png") as image:
        assert image.size == (70, 70)  # 4 samples, 2 by 2, each 32 px
    with Image.open(tmp_path / "samples" / "reconstructions_epoch_002.png") as image:
        assert image.size == (
            2 + 4 * 34,
            2 + 2 * 34,
        )  # a row of 4 images, a row of 4 reconstructions


def test_ema_updates_once_per_optimizer_step_under_gradient_accumulation():
    module, ema = OneWeight(0.0), EMA(decay=0.9, warmup=False)
    ema.on_fit_start(at_step(0), module)
    module.set(1.0)
    for batch, step in enumerate([0, 0, 1, 1, 1, 2]):  # accumulate 3 batches, then step
        ema.on_train_batch_end(at_step(step), module, None, None, batch)
    assert ema.num_updates == 2
    assert ema.ema_weights["weight"].item() == pytest.approx(1 - 0.9**2)


def loop_at(epoch: int, max_epochs=-1, max_steps=-1, steps_per_epoch=10) -> SimpleNamespace:
    """A trainer at the end of epoch index ``epoch``, as the periodic callbacks see it."""
    return SimpleNamespace(
        current_epoch=epoch,
        max_epochs=max_epochs,
        max_steps=max_steps,
        global_step=steps_per_epoch * (epoch + 1),
        sanity_checking=False,
    )


EVERY_FIFTH = [False, False, False, False, True, False, False, False, False, True]


@pytest.mark.parametrize("max_epochs", [-1, None])
def test_a_run_bounded_only_by_steps_is_due_every_n_epochs_not_every_epoch(max_epochs):
    due = [epoch_is_due(loop_at(epoch, max_epochs=max_epochs), 5) for epoch in range(10)]
    assert due == EVERY_FIFTH


def test_the_epoch_that_reaches_max_steps_is_due_as_the_last_one():
    assert not epoch_is_due(loop_at(1, max_steps=30), 5)  # 20 steps done
    assert epoch_is_due(loop_at(2, max_steps=30), 5)  # 30 steps: the run ends here


def test_sample_quality_and_sample_writer_follow_the_same_cadence(tmp_path, monkeypatch):
    quality = SampleQuality({}, every_n_epochs=5)
    judged = []
    monkeypatch.setattr(quality, "_prepare", lambda trainer, module: judged.append(1) and False)
    module = SimpleNamespace(
        generates=True, spec=SimpleNamespace(modality="image"), device=torch.device("cpu")
    )
    writer = SampleWriter(tmp_path, every_n_epochs=5, num_samples=1)
    for epoch in range(10):
        quality.on_validation_epoch_end(loop_at(epoch), module)
        writer.on_validation_epoch_end(
            SimpleNamespace(**vars(loop_at(epoch)), loggers=[]), TextSampler()
        )
    assert len(judged) == 2  # after the 5th and the 10th epoch, not after every one
    assert writer.written == [tmp_path / "epoch_004.txt", tmp_path / "epoch_009.txt"]


def test_atomic_checkpoint_io_keeps_the_old_file_when_a_save_fails(tmp_path, monkeypatch):
    from zoo.outputs import AtomicCheckpointIO

    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, path)

    def interrupted_save(obj, file):
        file.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
