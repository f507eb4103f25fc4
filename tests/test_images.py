"""Images of every kind become the same RGB pixels; bad ones get clear errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from vitzoo.errors import BadInputError
from vitzoo.images import Preprocessor, open_image, preprocessing_from_image_processor, to_uint8_rgb
from vitzoo.registry import Preprocessing


def test_modes_convert_to_rgb(sample_image):
    rgb = Image.fromarray(sample_image[:64, :80])
    expected = torch.from_numpy(np.array(rgb)).permute(2, 0, 1)
    assert torch.equal(to_uint8_rgb(rgb), expected)
    assert torch.equal(to_uint8_rgb(rgb.convert("RGBA")), expected)
    gray = to_uint8_rgb(rgb.convert("L"))
    assert gray.shape == (3, 64, 80) and torch.equal(gray[0], gray[2])
    cmyk = to_uint8_rgb(rgb.convert("CMYK"))
    assert cmyk.shape == (3, 64, 80)
    assert (cmyk.int() - expected.int()).abs().float().mean() < 3  # CMYK round trip is near-lossless


def test_sixteen_bit_scaled_not_clipped():
    array16 = np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 257  # 0..65535 in steps of 257
    from_pil = to_uint8_rgb(Image.fromarray(array16))
    assert from_pil.max() == 255 and from_pil.min() == 0
    assert torch.equal(from_pil[0].flatten(), torch.arange(256, dtype=torch.uint8))
    assert torch.equal(to_uint8_rgb(array16), from_pil)


def test_arrays_and_tensors():
    hwc = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    chw = torch.from_numpy(hwc).permute(2, 0, 1)
    assert torch.equal(to_uint8_rgb(hwc), chw)
    assert torch.equal(to_uint8_rgb(chw), chw)
    assert torch.equal(to_uint8_rgb(chw.float() / 255), chw)
    with pytest.raises(BadInputError, match=r"\[0, 1\]"):
        to_uint8_rgb(hwc.astype(np.float32))
    with pytest.raises(BadInputError, match="channels"):
        to_uint8_rgb(np.zeros((4, 4, 5), dtype=np.uint8))
    with pytest.raises(BadInputError, match="type"):
        to_uint8_rgb({"not": "an image"})


def test_undecodable_files(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(buffer, format="PNG")
    (tmp_path / "cut.png").write_bytes(buffer.getvalue()[:40])
    for name in ("empty.png", "text.jpg", "cut.png"):
        with pytest.raises(BadInputError, match="cannot decode"):
            open_image(tmp_path / name)
    with pytest.raises(BadInputError, match="not found"):
        open_image(tmp_path / "missing.png")


def test_preprocessor_matches_transformers_image_processors(sample_image):
    """Same pixels as transformers' own processors (a second implementation), for each kind of
    pipeline the zoo uses, including the centre crop's rounding on odd margins."""
    image = Image.fromarray(sample_image)
    pipelines = [
        Preprocessing(resize_size=224, interpolation="bilinear", mean=(0.5,) * 3, std=(0.5,) * 3),  # ViT, BEiT
        Preprocessing(resize_size=256, crop_size=224, interpolation="bicubic"),  # DeiT
        Preprocessing(resize_size=256, crop_size=224, resize_mode="shortest", interpolation="bicubic"),  # DINOv2
    ]
    for prep in pipelines:
        ours = Preprocessor(prep)
        data = ours.to_image_processor_dict()
        assert preprocessing_from_image_processor(data) == prep
        processor_class = getattr(__import__("transformers"), data["image_processor_type"])
        theirs = processor_class(**{k: v for k, v in data.items() if k != "image_processor_type"})
        expected = theirs(image, return_tensors="pt")["pixel_values"]
        got = ours(image)
        assert got.shape == expected.shape == (1, 3, 224, 224)
        assert torch.allclose(got, expected, atol=1e-5)


def test_mixed_sizes_and_modes_in_one_batch(sample_image):
    prep = Preprocessor(Preprocessing(resize_size=32, crop_size=28, resize_mode="shortest"))
    images = [
        Image.fromarray(sample_image),
        Image.fromarray(sample_image[:50, :90]).convert("L"),
        np.zeros((10, 12), dtype=np.uint8),
        torch.zeros(4, 30, 20, dtype=torch.uint8),
    ]
    batch = prep(images)
    assert batch.shape == (4, 3, 28, 28) and batch.dtype == torch.float32
    single = prep(images[1])
    assert torch.allclose(batch[1], single[0])
