import random

from reactor.backoff import delay


def test_steps_double_until_the_cap_and_stay_within_half_to_full_step():
    rng = random.Random(1)
    for attempt, step in [(1, 1.0), (2, 2.0), (3, 4.0), (9, 256.0), (10, 300.0), (500, 300.0)]:
        for _ in range(200):
            d = delay(attempt, base=1.0, cap=300.0, rng=rng)
            assert step / 2 <= d <= step, (attempt, d)


def test_attempt_zero_or_negative_is_the_first_step():
    assert 0.05 <= delay(0, base=0.1, cap=10) <= 0.1
    assert 0.05 <= delay(-3, base=0.1, cap=10) <= 0.1


def test_jitter_spreads_retries():
    values = {round(delay(5, base=1.0, cap=300.0), 6) for _ in range(50)}
    assert len(values) > 40
