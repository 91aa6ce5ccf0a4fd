"""Issue 22, items 8, 9 and 22: names in any script, who may talk to serve, and the page.

The HTTP tests share one real server (uvicorn on 127.0.0.1, a token, one allowed Host name
and one allowed Origin); the page is driven in Debian's chromium through Playwright.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from click.testing import CliRunner

from tests.conftest import make_image
from tests.test_serve import Server, free_port, photo_bytes

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking"]
ZIP_UTF8_FLAG = 0x800  # general purpose bit 11: the entry's name is UTF-8


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    from tests.conftest import write_random_checkpoint

    home = tmp_path_factory.mktemp("origins-home")
    checkpoint = write_random_checkpoint(home / "random.pt")
    env = {"XDG_CACHE_HOME": str(home / "cache"), "XDG_CONFIG_HOME": str(home / "config"),
           "ANIMEGAN_TOKEN": TOKEN}
    # --max-size 512: the page's test asks size 256 of a server at --size 128.
    running = Server(checkpoint, "--allowed-host", "photos.example",
                     "--allowed-origin", "https://app.example", "--max-size", "512", env=env)
    yield running
    running.stop()


def post(server: Server, files, headers: dict[str, str] | None = None,
         client: httpx.Client | None = None, **data: str) -> httpx.Response:
    return (client or server.client).post("/animeify", files=files, data=data,
                                          headers={**AUTH, **(headers or {})})


# ------------------------------------------------------------------------- item 8: names


@pytest.mark.slow
def test_item8_a_name_in_any_script_gets_its_result_and_a_header_that_names_it(guarded):
    cases = {"照片.jpg": "image.png", "фото.jpg": "image.png", "café.jpg": "cafe.png"}
    for seed, (name, fallback) in enumerate(cases.items()):
        reply = post(guarded, {"files": (name, photo_bytes(seed=800 + seed))})
        assert reply.status_code == 200, reply.text
        real = Path(name).stem + ".png"
        assert reply.headers["content-disposition"] == (
            f"inline; filename=\"{fallback}\"; filename*=UTF-8''{quote(real)}")
    plain = post(guarded, {"files": ("photo.jpg", photo_bytes(seed=803))})
    assert plain.headers["content-disposition"] == 'inline; filename="photo.png"'


@pytest.mark.slow
def test_item8_zip_entries_keep_names_in_any_script_flagged_utf8(guarded):
    names = ["照片.jpg", "фото.jpg", "Фото.png", "photo.jpg"]
    files = [("files", (name, photo_bytes(seed=810 + i))) for i, name in enumerate(names)]
    reply = post(guarded, files)
    assert reply.status_code == 200, reply.text
    archive = zipfile.ZipFile(io.BytesIO(reply.content))
    assert archive.namelist() == ["照片.png", "фото.png", "Фото-2.png", "photo.png",
                                  "results.json"]
    for info in archive.infolist():
        assert bool(info.flag_bits & ZIP_UTF8_FLAG) == (not info.filename.isascii())
    records = json.loads(archive.read("results.json"))
    assert [r["file"] for r in records] == names
    assert [r["output"] for r in records] == archive.namelist()[:-1]


def test_item8_content_disposition_has_an_ascii_fallback_and_the_utf8_name():
    from animegan_cli.serve.app import ascii_name, content_disposition

    assert ascii_name("照片.png") == "image.png"
    assert ascii_name("Ångström photo.webp") == "Angstrom_photo.webp"
    assert content_disposition("inline", "a-b.png") == 'inline; filename="a-b.png"'
    header = content_disposition("attachment", "фото.jpg")
    header.encode("latin-1")  # what Starlette does with it: never a UnicodeEncodeError
    assert header == ("attachment; filename=\"image.jpg\"; "
                      "filename*=UTF-8''%D1%84%D0%BE%D1%82%D0%BE.jpg")


# ------------------------------------------------------------------- item 9: who may talk


@pytest.mark.slow
def test_item9_a_host_name_the_server_does_not_go_by_is_refused(guarded):
    port = guarded.port
    for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1.nip.io:{port}"):
        for reply in (guarded.client.get("/readyz", headers={**AUTH, "Host": host}),
                      post(guarded, {"files": ("a.jpg", photo_bytes())}, {"Host": host})):
            assert reply.status_code == 400, (host, reply.text)
            body = reply.json()
            assert body["error"] == "bad_request" and "--allowed-host" in body["detail"]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "[::1]", "photos.example",
                 "PHOTOS.example:443"):
        assert guarded.client.get("/readyz", headers={**AUTH, "Host": host}).status_code == 200
    # A liveness probe answers any Host: it tells nothing.
    assert guarded.client.get("/healthz", headers={"Host": "lb.internal"}).status_code == 200


@pytest.mark.slow
def test_item9_a_cross_site_post_is_refused_before_it_costs_anything(guarded):
    engine_before = guarded.metric("animegan_engine_images_total", AUTH)
    for origin in ("https://evil.example", "null", f"http://127.0.0.1:{free_port()}",
                   f"https://127.0.0.1:{guarded.port}.evil.example"):
        reply = post(guarded, {"files": ("a.jpg", photo_bytes(seed=901))}, {"Origin": origin})
        assert reply.status_code == 403, (origin, reply.text)
        body = reply.json()
        assert body["error"] == "forbidden" and "--allowed-origin" in body["detail"]
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization"}
    assert guarded.client.options("/animeify", headers=preflight).status_code == 403
    assert guarded.metric("animegan_engine_images_total", AUTH) == engine_before
    # The server's own page, a client that is not a browser, and an allowed origin: served.
    for origin in (guarded.url, None, "https://app.example"):
        headers = {"Origin": origin} if origin else {}
        reply = post(guarded, {"files": ("a.jpg", photo_bytes(seed=902))}, headers)
        assert reply.status_code == 200, (origin, reply.text)
    assert reply.headers["access-control-allow-origin"] == "https://app.example"
    preflight["Origin"] = "https://app.example"
    allowed = guarded.client.options("/animeify", headers=preflight)
    assert allowed.status_code == 200
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()


@pytest.mark.slow
def test_item9_one_client_never_learns_from_the_cache_what_another_uploaded(guarded):
    upload = {"files": ("mine.jpg", photo_bytes(seed=930))}
    first = post(guarded, upload)
    assert first.status_code == 200 and first.headers["x-animegan-cached"] == "false"
    engine_before = guarded.metric("animegan_engine_images_total", AUTH)
    # Another client (another loopback address) sends the same bytes: computed anew, no hit.
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(base_url=guarded.url, transport=transport, timeout=60) as other:
        theirs = post(guarded, upload, client=other)
    assert theirs.status_code == 200 and theirs.headers["x-animegan-cached"] == "false"
    assert guarded.metric("animegan_engine_images_total", AUTH) == engine_before + 1
    assert theirs.content == first.content
    again = post(guarded, upload)  # the first client's own repeat still hits
    assert again.headers["x-animegan-cached"] == "true"
    assert guarded.metric("animegan_engine_images_total", AUTH) == engine_before + 1


def test_item9_access_settings_are_checked_from_flags_and_the_config_file(isolated_env):
    from animegan_cli.cli.app import main
    from animegan_cli.settings.config import config_path

    runner = CliRunner()
    result = runner.invoke(main, ["serve", "--allowed-origin", "app.example"])
    assert result.exit_code == 2
    assert "--allowed-origin: 'app.example' is not an origin" in result.output
    config_path().parent.mkdir(parents=True, exist_ok=True)
    config_path().write_text('[serve]\nallowed_hosts = "photos.example"\n')
    result = runner.invoke(main, ["serve"])
    assert result.exit_code == 2 and "allowed_hosts must be a list of strings" in result.output
    config_path().write_text('[serve]\ncache_scope = "everyone"\n')
    result = runner.invoke(main, ["serve"])
    assert result.exit_code == 2 and "cache_scope (config file" in result.output


def test_item9_the_access_policy_names_hosts_and_origins():
    from animegan_cli.serve.access import AccessPolicy

    local = AccessPolicy.build("127.0.0.1", ("Photos.Example:8443",), ("https://App.example/",))
    assert [local.host_allowed(h) for h in (
        "127.0.0.1:8000", "localhost", "[::1]:8000", "photos.example", None,
        "10.0.0.5", "evil.example", "localhost.evil.example")] == [
        True, True, True, True, True, False, False, False]
    assert AccessPolicy.build("0.0.0.0").host_allowed("10.0.0.5:8000")
    assert not AccessPolicy.build("0.0.0.0").host_allowed("evil.example")
    assert AccessPolicy.build("127.0.0.1", ("*",)).host_allowed("evil.example")
    same = [("http://127.0.0.1:8000", "127.0.0.1:8000"),
            ("https://photos.example", "photos.example"), ("https://app.example:443", "x"),
            (None, "x")]
    assert all(local.origin_allowed(o, h) for o, h in same)
    other = [("http://127.0.0.1:9000", "127.0.0.1:8000"), ("null", "x"),
             ("http://photos.example", "photos.example:8000"), ("https://evil.example", "x")]
    assert not any(local.origin_allowed(o, h) for o, h in other)


def test_item9_the_cache_scope_is_the_clients_address_unless_shared():
    from starlette.requests import Request

    from animegan_cli.serve.app import _CACHE_SCOPE_OF

    def scope_of(mode: str, address: str) -> str:
        return _CACHE_SCOPE_OF[mode](Request({"type": "http", "client": (address, 5000)}))

    assert scope_of("client", "10.0.0.1") != scope_of("client", "10.0.0.2")
    assert scope_of("client", "10.0.0.1") == scope_of("client", "10.0.0.1")
    assert scope_of("shared", "10.0.0.1") == scope_of("shared", "10.0.0.2")


# ---------------------------------------------------------------------- item 22: the page


GAP_AFTER_PICK_THEM = """() => {
  const label = document.querySelector('#drop label');
  const dot = document.createRange();
  dot.setStart(label.nextSibling, 0);
  dot.setEnd(label.nextSibling, 1);
  return dot.getBoundingClientRect().left - label.getBoundingClientRect().right;
}"""
LINK_UNDER_IMAGE = """els => els.map(result => {
  const img = result.querySelector('img').getBoundingClientRect();
  const link = result.querySelector('a[download]').getBoundingClientRect();
  return [link.left - img.left, link.top - img.bottom];
})"""
LOADED = ("n => { const done = document.querySelectorAll('.pair.done .result img');"
          " return done.length == n && [...done].every(i => i.complete && i.naturalWidth); }")


def _wait_results(page, done: int) -> list[list[int]]:
    """Wait until ``done`` results have loaded; their natural sizes, in order."""
    page.wait_for_function(LOADED, arg=done, timeout=90_000)
    return page.eval_on_selector_all(
        ".pair.done .result img", "els => els.map(e => [e.naturalWidth, e.naturalHeight])")


@pytest.mark.slow
def test_item22_the_page_reads_right_sends_size_says_wrong_token_and_places_links_alike(
        guarded, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed")
    photo = str(make_image(tmp_path / "photo.jpg", 300, 200, seed=220))
    shapes = [str(make_image(tmp_path / "wide.jpg", 300, 100, seed=221)),
              str(make_image(tmp_path / "tall.jpg", 100, 300, seed=222))]
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            page.goto(guarded.url + "/")
            assert page.inner_text("#drop").strip() == "Drop photos here, or pick them."
            assert abs(page.evaluate(GAP_AFTER_PICK_THEM)) < 2  # no gap before the full stop
            assert page.locator("link[rel=icon]").count() == 1

            page.fill("#token", "s3cre7")
            page.set_input_files("#files", photo)
            page.wait_for_selector(".pair.failed", timeout=60_000)
            assert page.inner_text(".pair.failed .status") == "photo.jpg: failed: wrong token"

            page.fill("#token", TOKEN)
            page.set_input_files("#files", shapes)
            assert _wait_results(page, 2) == [[128, 44], [44, 128]]  # the server's --size 128
            for dx, dy in page.eval_on_selector_all(".pair.done .result", LINK_UNDER_IMAGE):
                assert abs(dx) < 1 and 0 <= dy < 16, (dx, dy)  # under, at its left edge

            offered = page.eval_on_selector_all(
                "#size option:not([disabled])", "els => els.map(e => e.value)")
            assert offered == ["", "256", "512"]  # the server's --max-size 512
            page.select_option("#size", "256")
            page.set_input_files("#files", photo)
            assert _wait_results(page, 3)[-1] == [256, 172]
            page.select_option("#keep_size", "true")
            page.set_input_files("#files", photo)
            assert _wait_results(page, 4)[-1] == [300, 200]
        finally:
            browser.close()


@pytest.mark.slow
def test_item22_favicon_is_public_and_never_an_error(guarded):
    reply = guarded.client.get("/favicon.ico")  # no token: public, as the page
    assert reply.status_code not in (401, 404)
    assert reply.status_code == 204 and not reply.content
