"""Every bad input fails early with one line naming the file or argument and the problem."""

import re

import numpy as np
import pytest
from PIL import Image

from pipelines import (
    DataError,
    GaussianNoise,
    load_images,
    load_pairs,
    load_task_data,
    read_image,
    search_streams,
    training_stream,
)


def raises(pattern, fn, *args, **kwargs):
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    assert re.search(pattern, message), message
    return message


def save_png(path, height=40, width=50, channels=3, value=100):
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (height, width, channels) if channels == 3 else (height, width)
    Image.fromarray(np.full(shape, value, np.uint8)).save(path)


def test_data_error_is_value_error():
    assert issubclass(DataError, ValueError)
    assert str(DataError("a\nb")) == "a b"


def test_missing_folder(tmp_path):
    raises(r"nowhere: folder does not exist", load_images, tmp_path / "nowhere", 1)
    raises(r"nowhere: folder does not exist", load_task_data,
           "denoise", weights_data=tmp_path / "nowhere", arch_data=tmp_path)


def test_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    raises(rf"{re.escape(str(tmp_path))}: no images \(png/jpg/jpeg/bmp/tif/tiff\) found",
           load_images, tmp_path, 3)


def test_corrupt_image(tmp_path):
    (tmp_path / "garbage.png").write_bytes(b"this is not a png at all" * 10)
    raises(r"garbage\.png: cannot decode image", load_images, tmp_path, 1)
    save_png(tmp_path / "ok" / "half.png", 64, 64)
    data = (tmp_path / "ok" / "half.png").read_bytes()
    (tmp_path / "ok" / "half.png").write_bytes(data[: len(data) // 2])  # truncated file
    raises(r"half\.png: cannot decode image", read_image, tmp_path / "ok" / "half.png", 3)


def test_image_smaller_than_patch(tmp_path):
    save_png(tmp_path / "big.png", 80, 80)
    save_png(tmp_path / "tiny.png", 40, 50)
    items = load_images(tmp_path, 1)
    raises(r"image 'tiny' is 50x40, smaller than --patch-size 64", training_stream,
           items, GaussianNoise(25.0), patch_size=64, batch_size=2)


def test_unmatched_pairs(tmp_path):
    save_png(tmp_path / "rainy" / "rain-001.png")
    save_png(tmp_path / "rainy" / "rain-002.png")
    save_png(tmp_path / "clean" / "norain-001.png")
    save_png(tmp_path / "clean" / "norain-003.png")
    message = raises(r"unmatched pairs between .*rainy and .*clean", load_pairs,
                     tmp_path / "rainy", tmp_path / "clean", 3)
    assert "rainy without clean [rain-002]" in message
    assert "clean without rainy [norain-003]" in message


def test_size_mismatched_pairs(tmp_path):
    save_png(tmp_path / "rainy" / "rain-001.png", 40, 50)
    save_png(tmp_path / "clean" / "norain-001.png", 40, 48)
    raises(r"size-mismatched pairs .*rain-001 50x40 vs norain-001 48x40", load_pairs,
           tmp_path / "rainy", tmp_path / "clean", 3)
    raises(r"size-mismatched pairs", load_task_data, "derain", weights_data=tmp_path,
           arch_data=tmp_path)


@pytest.mark.parametrize("sigma", [0, 0.0, 300, -5, (10, 300), (50, 10), "abc"])
def test_sigma_out_of_range(sigma):
    raises(r"--sigma", GaussianNoise, sigma)


def test_sigma_checked_by_task_loader():
    raises(r"--sigma must be in \(0, 255\]", load_task_data, "denoise", sigma=300)


@pytest.mark.parametrize("channels", [2, 0, 4])
def test_channels_other_than_1_or_3(set12_dir, channels):
    raises(rf"channels must be 1 \(grayscale\) or 3 \(RGB\), got {channels}", load_images,
           set12_dir, channels)
    raises(r"channels must be 1", read_image, next(set12_dir.iterdir()), channels)


def test_task_arguments(tmp_path):
    raises(r"--task must be one of denoise, derain, got 'deblur'", load_task_data, "deblur")
    raises(r"--data cannot be combined with --weights-data/--arch-data", load_task_data,
           "denoise", data=tmp_path, weights_data=tmp_path, arch_data=tmp_path)
    raises(r"must be given together \(got only --weights-data\)", load_task_data,
           "denoise", weights_data=tmp_path)
    raises(r"must be given together \(got only --arch-data\)", load_task_data,
           "derain", arch_data=tmp_path)
    raises(r"--split-fraction must be in \(0, 1\)", load_task_data, "derain", split_fraction=1.0)


def test_search_streams_refuse_shared_images(bsds_val_dir):
    items = load_images(bsds_val_dir, 1)[:3]
    raises(rf"weights and architecture data share 1 image\(s\): {items[2][0]}", search_streams,
           items[:3], items[2:], GaussianNoise(25.0), 16, 2, 0)
