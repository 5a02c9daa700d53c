"""Adaptive polling arithmetic and the v1 threshold values (pure)."""

import pytest

from oomhero.config import WatchSettings
from oomhero.policy import Level
from oomhero.sources import threshold_bytes
from oomhero.sources.polling import Polling, next_delay
from oomhero.targets import GrowthEstimate

MIB = 1 << 20


def test_no_threshold_above_or_no_growth_waits_the_ceiling():
    assert next_delay(10 * MIB, None, 5 * MIB, 0.01, 1.0) == 1.0
    assert next_delay(10 * MIB, 100 * MIB, 0.0, 0.01, 1.0) == 1.0
    assert next_delay(10 * MIB, 100 * MIB, -3 * MIB, 0.01, 1.0) == 1.0


def test_delay_is_half_the_time_to_the_threshold_within_floor_and_ceiling():
    # 20 MiB of headroom at 100 MiB/s: 0.2 s away, sampled after half of it.
    assert next_delay(80 * MIB, 100 * MIB, 100 * MIB, 0.01, 1.0) == pytest.approx(0.1)
    assert next_delay(99 * MIB, 100 * MIB, 1000 * MIB, 0.01, 1.0) == 0.01  # floor
    assert next_delay(0, 100 * MIB, 1 * MIB, 0.01, 1.0) == 1.0  # ceiling


def test_at_or_past_the_threshold_samples_at_the_floor():
    assert next_delay(100 * MIB, 100 * MIB, 1 * MIB, 0.02, 1.0) == 0.02


def test_growth_estimate_follows_a_burst_at_once_and_decays_after():
    growth = GrowthEstimate()
    assert growth.update(0, 0.0) == 0.0
    assert growth.update(10 * MIB, 1.0) == pytest.approx(10 * MIB)
    burst = growth.update(110 * MIB, 2.0)
    assert burst == pytest.approx(100 * MIB)  # not averaged down to 55
    calm = growth.update(110 * MIB, 3.0)
    assert 0 < calm < burst


def test_growth_estimate_ignores_a_sample_at_the_same_instant():
    growth = GrowthEstimate()
    growth.update(0, 1.0)
    assert growth.update(50 * MIB, 1.0) == 0.0


def test_v1_thresholds_are_each_threshold_and_its_rearm_point():
    assert threshold_bytes(75, 90, 5, 100 * MIB) == [
        int(100 * MIB * p / 100) for p in (70, 75, 85, 90)
    ]
    assert threshold_bytes(3, 90, 5, 100 * MIB)[0] == int(100 * MIB * 0.03)  # no negative points


def test_an_idle_small_target_is_sampled_often_enough_for_a_burst():
    # 192 MiB to the threshold; nothing grows. A 1 GiB/s burst would take 0.19 s: sample at half.
    assert next_delay(0, 192 * MIB, 0.0, 0.01, 1.0, burst=1024 * MIB) == pytest.approx(0.09375)
    # A big target is far from any burst's reach: the ceiling.
    assert next_delay(0, 6 * 1024 * MIB, 0.0, 0.01, 1.0, burst=1024 * MIB) == 1.0
    # A measured rate above the burst wins.
    assert next_delay(0, 192 * MIB, 4096 * MIB, 0.01, 1.0, burst=1024 * MIB) < 0.03


def test_a_target_the_probe_covers_is_polled_at_the_safety_net_only():
    settings = WatchSettings(safety_net=4.0)
    own, limit = settings, 256 * MIB
    polling = Polling(settings)
    # Idle and small: adaptive polling looks often, for a burst it would not otherwise see.
    assert polling.delay(own, Level.OK, 0, limit, 0.0) < 0.2
    # The armed probe sees that burst at the charge: polling is only the safety net.
    assert polling.delay(own, Level.OK, 0, limit, 0.0, covered=True) == 4.0
    # On a grid of it: covered targets sampled at different times fall due together.
    late = polling.delay(own, Level.OK, 0, limit, 0.0, covered=True, now=43.75)
    early = polling.delay(own, Level.OK, 0, limit, 0.0, covered=True, now=40.25)
    assert 43.75 + late == pytest.approx(44.0) and 40.25 + early == pytest.approx(44.0)
    # Not covered: the ceiling, as before.
    assert polling.delay(own, Level.OK, 0, 64 << 30, 0.0, now=40.25) == settings.poll_ceiling


def test_fixed_polling_keeps_its_interval_on_a_grid():
    # OOMHero's fixed interval stays what was asked for, probe or not; on a grid of it, so
    # that targets sampled at different times (and the rescans) share one wake-up.
    fixed = WatchSettings(interval=0.5)
    polling = Polling(fixed)
    assert polling.delay(fixed, Level.OK, 0, 256 * MIB, 0.0, covered=True) == 0.5
    assert 10.3 + polling.delay(fixed, Level.OK, 0, 256 * MIB, 0.0, now=10.3) == pytest.approx(10.5)
