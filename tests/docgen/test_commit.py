"""Group commit: written when it holds `every` results or its oldest entry waited `seconds`."""
import pytest

from app.docgen.commit import GroupCommit
from app.docgen.store import Store, StoredResult


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def _result(i):
    return StoredResult(key=f"k{i}", text=f"doc {i}", summary=f"doc {i}")


def test_commits_every_n_results_or_after_the_time_limit(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    clock = Clock()
    gc = GroupCommit(store, "run", replace=False, every=3, seconds=1.0, clock=clock)
    assert not gc.add_result(_result(0), "u0", "p", "q0", "h") and not gc.add_result(_result(1), "u1", "p", "q1", "h")
    assert store.count("results") == 0  # buffered: a kill now loses these two
    assert gc.add_result(_result(2), "u2", "p", "q2", "h")  # the third fills the group
    assert store.count("results") == 3 and gc.pending == 0 and gc.commits == 1
    assert not gc.add_link("u9", "p", "q9", "k0", "h")
    clock.now += 0.5
    assert not gc.due() and not gc.add_result(_result(3), "u3", "p", "q3", "h")
    clock.now += 0.6  # the link has waited 1.1 s: the group is due even though it is not full
    assert gc.due() and gc.flush() == 2
    assert store.count("results") == 4 and store.count("units") == 5 and store.count("generations") == 4
    assert gc.flush() == 0 and not gc.due()


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(ValueError):
        GroupCommit(Store(tmp_path / "s.sqlite"), "run", replace=False, every=0)
