"""What serve does with one upload: statuses of bad ones, settings, encoding, the cache."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from animegan_cli.serve.service import ImageError, ImageService, ServeSettings
from animegan_cli.stylizer import Stylizer
from tests.conftest import photo_like


@pytest.fixture
def service(checkpoint):
    stylizer = Stylizer.load(weights=checkpoint, size=32, backend="torch", precision="fp32",
                             max_pixels=10_000)
    return ImageService(stylizer, ServeSettings(cache_similar=4), lambda n, s: None)


def encoded(width: int, height: int, fmt: str = "PNG", mode: str = "RGB", seed: int = 0) -> bytes:
    img = Image.fromarray(photo_like(width, height, seed), "RGB").convert(mode)
    buffer = io.BytesIO()
    img.save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(("upload", "status", "reason"), [
    (b"GIF89a but not really", 415, "not an image, or a format that cannot be read"),
    (encoded(200, 100), 413, "is 200x100 (0 MP), over the --max-pixels limit of 0.01 MP"),
    (encoded(60, 1), 422, "too small"),
    (encoded(40, 30)[:60], 422, "cannot decode"),
], ids=["not-an-image", "over-max-pixels", "too-small", "truncated"])
def test_a_bad_upload_gets_its_status_and_the_clis_reason(service, upload, status, reason):
    with pytest.raises(ImageError) as caught:
        service.prepare(service.request(), upload)
    assert caught.value.status == status and reason in caught.value.reason


def test_request_settings_are_checked_and_change_the_cache_key(service):
    upload = encoded(40, 30)
    png, jpg = service.request(), service.request("jpg", 90)
    assert service.key(png, upload) != service.key(jpg, upload)
    assert service.key(png, upload) != service.key(service.request(size=16), upload)
    assert service.request(size=32).stylizer is service.stylizer  # no copy when unchanged
    for bad in ({"format_": "gif"}, {"quality": 101}, {"size": 6}):
        with pytest.raises(ImageError) as caught:
            service.request(**bad)
        assert caught.value.status == 422


def test_a_transparent_upload_asked_for_as_jpg_comes_back_as_png(service):
    job = service.request("jpg")
    item = service.prepare(job, encoded(40, 30, mode="RGBA"))
    [pixels] = service.stylizer.run([item])
    result = service.encode(job, item, pixels, "k")
    assert result.media_type == "image/png" and result.extension == ".png"
    with Image.open(io.BytesIO(result.data)) as img:
        assert img.mode == "RGBA"
    assert service.lookup("k") == result


def test_a_look_alike_finds_the_cached_result_only_with_cache_similar(service):
    job = service.request()
    original = service.prepare(job, encoded(40, 30, seed=1))
    [pixels] = service.stylizer.run([original])
    result = service.encode(job, original, pixels, service.key(job, b"original"))
    noisy = np.asarray(Image.open(io.BytesIO(encoded(40, 30, seed=1)))).astype(int) + 2
    buffer = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buffer, "PNG")
    look_alike = service.prepare(job, buffer.getvalue())
    assert service.similar(job, look_alike) == result
    buffer = io.BytesIO()
    Image.fromarray(photo_like(40, 30, seed=1)[::-1, ::-1].copy()).save(buffer, "PNG")
    other = service.prepare(job, buffer.getvalue())  # the same photo upside down
    assert service.similar(job, other) is None
