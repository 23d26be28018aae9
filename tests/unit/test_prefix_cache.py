"""PrefixCache bookkeeping with a stand-in for transformers' DynamicCache."""

from __future__ import annotations

from agent.drafting import PrefixCache


class FakeCache:
    """Keeps a length; ``crop(-k)`` drops k trailing positions like DynamicCache."""

    def __init__(self, length: int) -> None:
        self.length = length

    def get_seq_length(self) -> int:
        return self.length

    def crop(self, n: int) -> None:
        assert n < 0
        self.length += n


def test_longest_kept_prefix_wins_and_is_a_private_copy() -> None:
    cache = PrefixCache(size=4, min_tokens=2)
    a = [1, 2, 3, 4, 5, 6]
    b = [1, 2, 3, 9, 9]
    assert cache.lookup(a) is None
    cache.remember(a, FakeCache(len(a) + 3))  # prompt plus generated positions
    cache.remember(b, FakeCache(len(b) + 3))  # keeps b and the common start [1, 2, 3]
    found = cache.lookup([1, 2, 3, 4, 5, 6, 7])
    assert found.get_seq_length() == 6  # a itself, cropped to the prompt
    found.length = 99  # generate() appends to the copy it gets; the kept one is untouched
    assert cache.lookup([1, 2, 3, 4, 5, 6, 7]).get_seq_length() == 6
    assert cache.lookup([1, 2, 3, 7]).get_seq_length() == 3
    assert cache.lookup(a).get_seq_length() == 3  # never the whole prompt: one token must run
    assert cache.hits == 4


def test_short_prefixes_are_not_kept_and_old_ones_are_evicted() -> None:
    cache = PrefixCache(size=2, min_tokens=3)
    cache.remember([1, 2], FakeCache(2))
    assert cache.lookup([1, 2, 3]) is None  # below min_tokens
    for start in (10, 20, 30):
        cache.remember([start, start + 1, start + 2], FakeCache(3))
    assert cache.lookup([10, 11, 12, 13]) is None  # least recently used, evicted
    assert cache.lookup([30, 31, 32, 33]) is not None
