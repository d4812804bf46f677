import pytest

from mirror.transfer import Backoff


@pytest.mark.parametrize("attempt, ceiling", [(1, 0.4), (2, 0.8), (3, 1.6), (10, 15.0), (40, 15.0)])
def test_backoff_grows_exponentially_up_to_the_cap(attempt, ceiling):
    assert Backoff(base=0.2, cap=15.0, rng=lambda: 1.0).delay(attempt) == pytest.approx(ceiling)


def test_backoff_is_fully_jittered():
    assert Backoff(rng=lambda: 0.0).delay(5) == 0.0
    assert Backoff(rng=lambda: 0.5).delay(2) == pytest.approx(0.4)
