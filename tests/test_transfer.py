import pytest

from mirror.transfer import Backoff


@pytest.mark.parametrize("attempt, ceiling", [(1, 0.4), (2, 0.8), (3, 1.6), (10, 15.0), (40, 15.0)])
def test_backoff_grows_exponentially_up_to_the_cap(attempt, ceiling):
    assert Backoff(base=0.2, cap=15.0, rng=lambda: 1.0).delay(attempt) == pytest.approx(ceiling)


def test_backoff_is_fully_jittered():
    assert Backoff(rng=lambda: 0.0).delay(5) == 0.0
    assert Backoff(rng=lambda: 0.5).delay(2) == pytest.approx(0.4)


from mirror.transfer import Bandwidth


def test_bandwidth_books_one_shared_timeline():
    now = [100.0]
    limit = Bandwidth(1000, clock=lambda: now[0])
    assert limit.delay(250) == 0.0  # within the 0.25 s burst allowance
    assert limit.delay(1000) == pytest.approx(1.0)  # a second stream waits its turn
    now[0] += 5.0  # idle time does not pile up into a long burst
    assert limit.delay(500) == pytest.approx(0.25)
