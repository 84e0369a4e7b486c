"""The caching CPU allocator attributions install (featvis_fast.engine.cpu_cache): blocks are reused
within and across calls, the previous allocator comes back, unused blocks are released, and
values are never carried over where torch promises zeros."""
import pytest
import torch

from featvis_fast._extensions import ExtensionUnavailable, load_cpu
from featvis_fast.engine import cpu_cache


@pytest.fixture(autouse=True)
def extension():
    try:
        load_cpu()
    except ExtensionUnavailable as exc:
        pytest.skip(f"no C++ extension here: {exc}")
    cpu_cache.empty_cpu_cache()
    yield
    cpu_cache.empty_cpu_cache()


BIG = (3, 1000, 1001)  # 12 MB, well above the 256 KiB the cache starts at


def test_freed_blocks_are_reused_within_and_across_calls():
    with cpu_cache.cached_cpu_memory():
        a = torch.empty(BIG)
        first = a.data_ptr()
        del a
        before = cpu_cache.cpu_cache_stats()
        b = torch.empty(BIG)
        assert b.data_ptr() == first
        assert cpu_cache.cpu_cache_stats()["hits"] == before["hits"] + 1
        del b
        smaller = torch.empty(BIG[0], BIG[1], 700)  # more than half the block: best fit reuses it
        assert smaller.data_ptr() == first
        del smaller
    assert cpu_cache.cpu_cache_stats()["cached_bytes"] >= 4 * 3 * 1000 * 1001
    with cpu_cache.cached_cpu_memory():
        c = torch.empty(BIG)
        assert c.data_ptr() == first, "the next call reuses the previous call's block"


def _block_bytes(shape) -> int:
    return -(-4 * torch.Size(shape).numel() // 4096) * 4096


def test_the_cache_never_holds_more_than_the_most_ever_in_use():
    small = (BIG[0], BIG[1], 400)  # under half of BIG: no cached BIG block serves it
    with cpu_cache.cached_cpu_memory():
        a, b = torch.empty(BIG), torch.empty(BIG)  # the peak: two BIG blocks in use
        kept = {a.data_ptr(), b.data_ptr()}
        del a, b
        assert cpu_cache.cpu_cache_stats()["cached_bytes"] == 2 * _block_bytes(BIG)
        t = torch.empty(small)  # a miss: one cached BIG block goes back so that the peak holds
        assert cpu_cache.cpu_cache_stats()["cached_bytes"] == _block_bytes(BIG)
        u = torch.empty(BIG)  # the BIG block kept is reused (glibc may hand out the other's address to t)
        assert u.data_ptr() in kept and u.data_ptr() != t.data_ptr()
        del t, u
    cpu_cache.empty_cpu_cache()
    with cpu_cache.cached_cpu_memory():
        a = torch.empty(BIG)
        del a
        t = torch.empty(small)  # peak one BIG block: keeping it beside t would exceed it
        assert cpu_cache.cpu_cache_stats()["cached_bytes"] == 0
        del t


def test_the_previous_allocator_comes_back_and_unused_blocks_are_released():
    with cpu_cache.cached_cpu_memory():
        with cpu_cache.cached_cpu_memory():  # nested: still installed after the inner exit
            pass
        a = torch.empty(BIG)
        first = a.data_ptr()
        del a
    cached = cpu_cache.cpu_cache_stats()["cached_bytes"]
    assert cached > 0
    stats = cpu_cache.cpu_cache_stats()
    outside = torch.empty(BIG)  # the default allocator again: not counted, not cached
    assert cpu_cache.cpu_cache_stats()["hits"] == stats["hits"]
    assert cpu_cache.cpu_cache_stats()["misses"] == stats["misses"]
    del outside
    with cpu_cache.cached_cpu_memory():
        tiny = torch.empty(10)  # below the threshold: never cached
        del tiny
    assert cpu_cache.cpu_cache_stats()["cached_bytes"] == 0, "a block the call did not reuse is released"
    assert first != 0


def test_blocks_freed_outside_go_back_to_the_system():
    with cpu_cache.cached_cpu_memory():
        kept = torch.ones(BIG)
    cached = cpu_cache.cpu_cache_stats()["cached_bytes"]
    del kept
    assert cpu_cache.cpu_cache_stats()["cached_bytes"] == cached


def test_zeros_and_values_are_right_in_reused_blocks():
    with cpu_cache.cached_cpu_memory():
        junk = torch.full(BIG, 7.0)
        del junk
        z = torch.zeros(BIG)
        assert int(torch.count_nonzero(z)) == 0
        x = torch.randn(BIG)
        y = x * 2
        assert torch.equal(y / 2, x)


def test_switched_off_by_environment(monkeypatch):
    monkeypatch.setenv("FEATVIS_CPU_CACHE", "0")
    stats = cpu_cache.cpu_cache_stats()
    assert stats == {"cached_bytes": 0, "hits": 0, "misses": 0}
    with cpu_cache.cached_cpu_memory():
        a = torch.empty(BIG)
        del a
    monkeypatch.delenv("FEATVIS_CPU_CACHE")
    assert cpu_cache.cpu_cache_stats()["cached_bytes"] == 0


def test_other_devices_are_left_alone():
    stats = cpu_cache.cpu_cache_stats()
    with cpu_cache.cached_cpu_memory("meta"):
        a = torch.empty(BIG)
        del a
    assert cpu_cache.cpu_cache_stats()["misses"] == stats["misses"]


def test_growing_temporaries_do_not_pile_up():
    """A forward whose temporaries keep growing (DenseNet's concatenations) must not keep every
    smaller one: on a miss, blocks too small to serve it go back while more is cached than used."""
    step = 300_000  # floats: 1.2 MB
    with cpu_cache.cached_cpu_memory():
        kept = torch.empty(4 * step)
        for k in range(1, 30):
            t = torch.empty(k * step)
            del t
        cached = cpu_cache.cpu_cache_stats()["cached_bytes"]
        del kept
    largest = 29 * step * 4
    assert cached <= 4 * step * 4 + 2 * largest, f"{cached / 2**20:.1f} MiB cached"
    assert cached < sum(k * step * 4 for k in range(1, 30)) / 4
