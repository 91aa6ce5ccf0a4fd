"""Multipart bodies read chunk by chunk, in memory, within the per-file and body limits."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from animegan_cli.serve.uploads import FormError, read_form


def encoded(files, data=None):
    """A real multipart body and its content type, as httpx (the tests' client) sends it."""
    request = httpx.Request("POST", "http://x/", files=files, data=data)
    return request.headers["content-type"], request.read()


def read(content_type, body, max_file=1000, max_files=4, max_body=10_000, chunk=7):
    async def stream():
        for i in range(0, len(body), chunk):  # tiny chunks: parts span many of them
            yield body[i:i + chunk]

    return asyncio.run(read_form(content_type, stream(), max_file, max_files, max_body))


def test_files_in_order_with_their_names_and_fields():
    content_type, body = encoded(
        [("files", ("a.jpg", b"A" * 50, "image/jpeg")), ("files", ("../b.png", b"B", "image/png"))],
        {"format": "webp", "quality": "80"})
    form = read(content_type, body)
    assert [(u.filename, u.data, u.content_type) for u in form.files] == [
        ("a.jpg", b"A" * 50, "image/jpeg"), ("../b.png", b"B", "image/png")]
    assert form.fields == {"format": "webp", "quality": "80"}


def test_a_file_over_the_limit_fails_alone_and_is_not_kept():
    content_type, body = encoded([("files", ("big.jpg", b"x" * 2000, "image/jpeg")),
                                  ("files", ("ok.jpg", b"y", "image/jpeg"))])
    big, ok = read(content_type, body).files
    assert big.data == b"" and "over the --max-upload-mb limit" in big.error
    assert ok.data == b"y" and ok.error is None


def test_a_body_over_its_limit_stops_the_reading():
    content_type, body = encoded([("files", ("big.jpg", b"x" * 20_000, "image/jpeg"))])
    with pytest.raises(FormError) as caught:
        read(content_type, body, max_file=100_000, max_body=5_000)
    assert caught.value.status == 413


def test_too_many_files_no_files_and_not_multipart_are_refused():
    content_type, body = encoded([("files", (f"{i}.jpg", b"x", "image/jpeg")) for i in range(3)])
    with pytest.raises(FormError) as caught:
        read(content_type, body, max_files=2)
    assert caught.value.status == 413
    content_type, body = encoded([("format", (None, b"png"))])  # a field, no file
    with pytest.raises(FormError, match="no images"):
        read(content_type, body)
    with pytest.raises(FormError) as caught:
        read("application/json", b"{}")
    assert caught.value.status == 415


def test_files_in_another_field_are_refused():
    content_type, body = encoded([("image", ("a.jpg", b"x", "image/jpeg"))])
    with pytest.raises(FormError, match="'files'"):
        read(content_type, body)
