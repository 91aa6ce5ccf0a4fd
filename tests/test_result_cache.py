"""The result cache: keys from bytes and settings, LRU within a byte budget, opt-in look-alikes."""

from __future__ import annotations

from animegan_cli.serve.cache import CachedResult, ResultCache, cache_key

SETTINGS = {"size": 512, "precision": "fp32", "format": "PNG", "quality": None}


def result(n: int, fill: bytes = b"x") -> CachedResult:
    return CachedResult(fill * n, "image/png", ".png")


def test_key_changes_with_bytes_checkpoint_and_every_setting():
    base = cache_key(b"photo", "ck1", SETTINGS)
    assert base == cache_key(b"photo", "ck1", dict(reversed(list(SETTINGS.items()))))
    assert base != cache_key(b"photo2", "ck1", SETTINGS)
    assert base != cache_key(b"photo", "ck2", SETTINGS)
    for name, other in (("size", 256), ("precision", "bf16"), ("format", "JPEG"),
                        ("quality", 90)):
        assert base != cache_key(b"photo", "ck1", {**SETTINGS, name: other}), name


def test_lru_evicts_the_least_recently_used_within_the_budget():
    cache = ResultCache(max_bytes=250)
    cache.put("a", result(100))
    cache.put("b", result(100))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", result(100))
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
    assert cache.bytes == 200 and len(cache) == 2


def test_a_result_larger_than_the_budget_is_not_kept_and_zero_turns_it_off():
    cache = ResultCache(max_bytes=50)
    cache.put("a", result(10))
    cache.put("big", result(100))
    assert cache.get("big") is None and cache.get("a") is not None
    off = ResultCache(max_bytes=0)
    off.put("a", result(1))
    assert off.get("a") is None and off.bytes == 0


def test_replacing_a_key_keeps_the_byte_count_right():
    cache = ResultCache(max_bytes=1000)
    cache.put("a", result(100))
    cache.put("a", result(300))
    assert cache.bytes == 300 and len(cache) == 1


def test_look_alikes_only_when_asked_within_distance_and_group():
    plain = ResultCache(max_bytes=1000)
    plain.put("a", result(10), group="g", dhash=0b1111)
    assert plain.find_similar("g", 0b1111) is None  # off unless --cache-similar
    cache = ResultCache(max_bytes=1000, similar=2)
    near, far = result(10, b"n"), result(10, b"f")
    cache.put("near", near, group="g", dhash=0b1111)
    cache.put("far", far, group="g", dhash=0b1111_0000_0000)
    assert cache.find_similar("g", 0b0111) == near  # 1 bit away
    assert cache.find_similar("g", 0b0000_0001_0000_0000) is None  # 3+ bits from both
    assert cache.find_similar("other shape", 0b1111) is None
