"""The sidecar's caches (edge/caches.py): how much each keeps, and what it forgets first."""

from __future__ import annotations

from edge.caches import LRU, Expiring, Memo


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_memo_forgets_the_oldest_entry_set() -> None:
    memo: Memo[str, int] = Memo(3)
    for i in range(5):
        assert memo.put(str(i), i) == i
    assert dict(memo) == {"2": 2, "3": 3, "4": 4}
    assert memo.get("3") == 3 and memo.get("0") is None  # reading does not refresh
    memo.put("3", 30)  # setting a kept key again forgets nothing
    assert dict(memo) == {"2": 2, "3": 30, "4": 4}
    memo.put("5", 5)
    assert list(memo) == ["3", "4", "5"]
    off: Memo[str, int] = Memo(0)
    assert off.put("a", 1) == 1 and "a" not in off  # a memo of size 0 keeps nothing


def test_an_lru_forgets_the_least_recently_used() -> None:
    lru: LRU[str, int] = LRU(3)
    for i in range(3):
        lru[str(i)] = i
    assert lru.get("0") == 0  # "0" is now the most recent
    lru["3"] = 3
    assert "1" not in lru and [k in lru for k in "023"] == [True, True, True]
    assert lru["2"] == 2 and lru.pop("2") == 2 and lru.pop("2") is None and len(lru) == 2


def test_a_weighed_lru_keeps_within_its_budget() -> None:
    lru: LRU[str, bytes] = LRU(10, weigh=len)
    lru["a"] = b"1234"
    lru["b"] = b"12345"
    assert lru.weight == 9
    lru["c"] = b"12"  # 11 > 10: the least recently used goes
    assert "a" not in lru and lru.weight == 7
    lru["b"] = b"1"  # replacing an entry replaces its weight
    assert lru.weight == 3
    lru["huge"] = b"x" * 11  # heavier than the whole budget: not kept, nothing lost
    assert "huge" not in lru and lru.weight == 3 and len(lru) == 2


def test_expiring_entries_go_after_their_ttl_and_past_maxsize() -> None:
    clock = Clock()
    short: Expiring[str, int | None] = Expiring(100, 0.05, timer=clock)
    short["a"] = None
    assert "a" in short and short["a"] is None
    clock.now += 0.06
    assert "a" not in short and short.get("a", 7) == 7
    small: Expiring[str, int] = Expiring(3, 60, timer=clock)
    for i in range(10):
        small[str(i)] = i
    assert len(small) == 3 and dict(small.items()) == {"7": 7, "8": 8, "9": 9}
    small["7"] = 70  # setting again makes it the newest
    small["10"] = 10
    assert dict(small.items()) == {"9": 9, "7": 70, "10": 10}
    assert small.pop("9") == 9 and small.pop("9") is None


def test_an_expiring_map_that_keeps_nothing_still_takes_writes() -> None:
    """A cache turned off (ttl 0, or maxsize 0) forgets at once rather than raising."""
    for off in (Expiring[str, int](100, 0), Expiring[str, int](0, 60)):
        off["a"] = 1
        off["b"] = 2
        assert "a" not in off and off.get("b") is None
