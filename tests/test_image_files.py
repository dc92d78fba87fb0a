"""Image folders with the files users really have: 16-bit grey, transparency, files that are
not images, and images lying outside the class folders."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from conftest import run_script
from PIL import Image

from zoo.data import ImageFolderDataModule
from zoo.data.images import eight_bit_image, unreadable_image
from zoo.errors import ConfigError, ZooError


def level(k: int) -> float:
    """Return the [-1, 1] value of the 8-bit level k."""
    return 2 * k / 255 - 1


def write_png(path, pixels: np.ndarray, **save) -> None:
    """Write ``pixels`` (H, W[, C]) as a PNG, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **save)


def whole_folder(root, **options) -> ImageFolderDataModule:
    """Return a module that trains on every image of ``root`` at its native 4×4 size."""
    return ImageFolderDataModule(
        root=str(root), image_size=4, val_fraction=0, test_fraction=0, **options
    )


# 16-bit grey ---------------------------------------------------------------------------------


def test_a_16_bit_grey_png_is_scaled_to_8_bits_not_clipped_to_white(tmp_path):
    # A 16-bit ramp: PIL's own convert("L") clips every value over 255 to white.
    sixteen = np.array([[0, 128, 129, 257], [32896, 40000, 65407, 65535]] * 2, dtype=np.uint16)
    write_png(tmp_path / "ramp.png", sixteen)
    with Image.open(tmp_path / "ramp.png") as image:
        assert image.mode == "I;16"  # the real format, as Pillow reads it
        assert np.asarray(image.convert("L")).min() == 0  # (the naive conversion:)
        assert (np.asarray(image.convert("L"))[1] == 255).all()  # a white row
    data = whole_folder(tmp_path, channels=1)
    data.setup("fit")
    x, y = data.train_dataset[0]
    expected = np.round(sixteen / 257)  # [[0, 0, 1, 1], [128, 156, 255, 255]]
    assert expected[1].tolist() == [128, 156, 255, 255]
    torch.testing.assert_close(x[0], torch.from_numpy(2 * expected / 255 - 1).float())
    assert y == -1


def test_16_bit_grey_becomes_the_same_grey_in_all_three_channels():
    sixteen = Image.fromarray(np.full((2, 2), 257 * 100, dtype=np.uint16))
    assert np.asarray(eight_bit_image(sixteen, "RGB")).tolist() == [[[100] * 3] * 2] * 2


# Transparency --------------------------------------------------------------------------------


def hidden_red(alpha: int = 0) -> np.ndarray:
    """Return a 4×4 RGBA image: opaque blue on the left, red of opacity ``alpha`` on the right."""
    pixels = np.zeros((4, 4, 4), dtype=np.uint8)
    pixels[:, :2] = (0, 0, 255, 255)
    pixels[:, 2:] = (255, 0, 0, alpha)
    return pixels


@pytest.mark.parametrize(("background", "value"), [("white", 255), ("black", 0)])
def test_transparent_pixels_show_the_background_never_the_colour_under_them(
    tmp_path, background, value
):
    write_png(tmp_path / "icon.png", hidden_red(alpha=0))
    data = whole_folder(tmp_path, background=background)
    data.setup("fit")
    x, _ = data.train_dataset[0]
    torch.testing.assert_close(x[:, :, 2:], torch.full((3, 4, 2), level(value)))
    torch.testing.assert_close(x[:, 0, 0], torch.tensor([-1.0, -1.0, 1.0]))  # opaque blue kept


def test_half_transparent_pixels_blend_with_the_background():
    # alpha 128 of red over white: red stays 255, green and blue 255 * 127/255 = 127.
    blended = eight_bit_image(Image.fromarray(hidden_red(alpha=128)), "RGB", "white")
    assert np.asarray(blended)[0, 3].tolist() == [255, 127, 127]
    grey = eight_bit_image(Image.fromarray(hidden_red(alpha=0)), "L", "black")
    assert np.asarray(grey)[:, 2:].max() == 0


def test_palette_and_grey_images_with_a_transparent_colour_use_the_background(tmp_path):
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 255] + [255, 0, 0] * 255)  # index 1: red, marked transparent
    palette.paste(0, (0, 0, 2, 4))  # left half: index 0, opaque blue
    palette.save(tmp_path / "palette.png", transparency=1)
    with Image.open(tmp_path / "palette.png") as image:
        assert np.asarray(eight_bit_image(image, "RGB")).tolist()[0] == [
            [0, 0, 255],
            [0, 0, 255],
            [255, 255, 255],
            [255, 255, 255],
        ]
    write_png(tmp_path / "grey.png", np.full((4, 4), 7, dtype=np.uint8), transparency=7)
    with Image.open(tmp_path / "grey.png") as image:
        assert np.asarray(eight_bit_image(image, "L", "black")).max() == 0


def test_an_unknown_background_is_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"data.background=grey .* \['white', 'black'\]"):
        ImageFolderDataModule(root=str(tmp_path), background="grey")


# Files that are not images -------------------------------------------------------------------


def folder_with_bad_files(root) -> None:
    """Write two good PNGs, a text file named .jpg, a truncated PNG and a truncated JPEG."""
    for index in range(2):
        write_png(root / f"good{index}.png", hidden_red(alpha=255))
    (root / "notes.jpg").write_text("this is not a picture\n")
    write_png(root / "whole.png", np.zeros((16, 16), dtype=np.uint8))
    (root / "cut.png").write_bytes((root / "whole.png").read_bytes()[:-20])
    (root / "whole.png").unlink()
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "photo.jpg", quality=90)
    (root / "cut.jpg").write_bytes((root / "photo.jpg").read_bytes()[:2000])
    (root / "photo.jpg").unlink()


def test_each_unreadable_file_is_found_when_the_folder_is_scanned(tmp_path):
    folder_with_bad_files(tmp_path)
    assert unreadable_image(tmp_path / "good0.png") is None
    assert "cannot identify image file" in unreadable_image(tmp_path / "notes.jpg")
    assert unreadable_image(tmp_path / "cut.png") is not None
    assert "truncated" in unreadable_image(tmp_path / "cut.jpg")


def test_bad_files_are_named_in_one_error_before_any_loader_exists(tmp_path):
    folder_with_bad_files(tmp_path)
    data = whole_folder(tmp_path, num_workers=2)
    with pytest.raises(ZooError) as raised:
        _ = data.spec  # what train() asks first: no worker has started
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"3 of 5 files under {tmp_path} are not readable images: cut.jpg (")
    assert "cut.png (" in message and "notes.jpg (cannot identify image file" in message
    assert message.endswith("Remove them, or pass data.skip_bad_files=true to leave them out")


def test_skip_bad_files_leaves_them_out_with_a_warning_naming_them(tmp_path, caplog):
    folder_with_bad_files(tmp_path)
    data = whole_folder(tmp_path, skip_bad_files=True)
    with caplog.at_level(logging.WARNING, logger="zoo"):
        data.setup("fit")
    assert len(data.train_dataset) == 2
    assert "3 of 5 files" in caplog.text and "notes.jpg" in caplog.text
    x, _ = next(iter(data.train_dataloader()))
    assert x.shape == (2, 3, 4, 4)


def test_a_jpeg_with_data_after_its_end_marker_is_still_an_image(tmp_path):
    write_png(tmp_path / "a.png", hidden_red(alpha=255))
    Image.fromarray(hidden_red(alpha=255)[..., :3]).save(tmp_path / "b.jpg")
    with open(tmp_path / "b.jpg", "ab") as file:
        file.write(b"trailer a camera appended")  # e.g. a motion photo's video
    assert unreadable_image(tmp_path / "b.jpg") is None
    assert len(whole_folder(tmp_path)._scan[0]) == 2


def test_train_script_names_a_text_file_posing_as_an_image_in_one_line(tmp_path):
    folder_with_bad_files(tmp_path)
    run = ["data=image_folder", f"data.root={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}"]
    process = run_script("train.py", *run, check=False)
    assert process.returncode != 0 and "Traceback" not in process.stderr
    last = process.stderr.strip().splitlines()[-1]
    assert last.startswith("train.py: 3 of 5 files under") and "notes.jpg" in last
    assert not (tmp_path / "run" / "checkpoints").exists()


# Labels --------------------------------------------------------------------------------------


def class_folders_and_a_stray(root, strays: int = 1) -> None:
    """Write three images in each of the class folders a and b, and ``strays`` at the root."""
    for name in "ab":
        for index in range(3):
            write_png(root / name / f"{index}.png", hidden_red(alpha=255))
    for index in range(strays):
        write_png(root / f"stray{index}.png", hidden_red(alpha=255))


def test_a_stray_image_at_the_root_keeps_the_class_labels_and_is_named(tmp_path, caplog):
    class_folders_and_a_stray(tmp_path)
    data = whole_folder(tmp_path)
    with caplog.at_level(logging.WARNING, logger="zoo"):
        assert data.classes == ["a", "b"]
    paths, labels, _ = data._scan
    assert len(paths) == 6 and labels == [0, 0, 0, 1, 1, 1]
    assert (
        f"1 images lie at the root of data.root={tmp_path}, outside the class folders a, b: "
        "they are left out (stray0.png)"
    ) in caplog.text
    assert "data.labels=none" in caplog.text


def test_labels_none_uses_every_image_without_labels(tmp_path):
    class_folders_and_a_stray(tmp_path)
    data = whole_folder(tmp_path, labels="none")
    assert data.spec.num_classes == 0
    paths, labels, _ = data._scan
    assert len(paths) == 7 and set(labels) == {-1}


def test_auto_labels_follow_where_most_images_lie(tmp_path, caplog):
    class_folders_and_a_stray(tmp_path, strays=7)  # 7 at the root, 6 in folders
    with caplog.at_level(logging.WARNING, logger="zoo"):
        assert whole_folder(tmp_path).spec.num_classes == 0
    assert "every image is used without labels; pass data.labels=folders" in caplog.text
    forced = whole_folder(tmp_path, labels="folders")
    assert forced.classes == ["a", "b"] and len(forced._scan[0]) == 6


def test_labels_folders_on_a_flat_folder_is_refused_in_one_line(tmp_path):
    write_png(tmp_path / "only.png", hidden_red(alpha=255))
    with pytest.raises(ConfigError, match="no image .* lies in a subfolder.*data.labels=none"):
        _ = whole_folder(tmp_path, labels="folders").spec
    with pytest.raises(ConfigError, match=r"data.labels=classes is not an option"):
        whole_folder(tmp_path, labels="classes")
