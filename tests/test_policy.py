import pytest

from oomhero.policy import Decision, Level, PolicyState, Thresholds, evaluate

# warning 75, critical 90; re-arm points: warning below 70, critical below 85.
T = Thresholds(warning=75, critical=90, hysteresis=5, cooldown=30)


def run(samples, thresholds=T):
    """Feed (time, percent) samples; return the decisions."""
    state = PolicyState()
    return [evaluate(thresholds, state, percent, now) for now, percent in samples]


def signals(decisions):
    return [(d.signal, d.reason) for d in decisions if d.signal is not None]


def test_ok_stays_ok_and_never_signals():
    decisions = run([(0, 0), (1, 50), (2, 74.9), (100, 74.9)])
    assert [d.level for d in decisions] == [Level.OK] * 4
    assert signals(decisions) == []


def test_crossing_warning_signals_warning_once_as_crossed():
    state = PolicyState()
    decision = evaluate(T, state, 80, now=10)
    assert decision == Decision(Level.OK, Level.WARNING, signal=Level.WARNING, reason="crossed")
    assert decision.changed
    assert state.level is Level.WARNING
    assert state.last_signal_at == 10


def test_exactly_at_the_threshold_counts_as_crossed():
    assert run([(0, 75)])[0].signal is Level.WARNING
    assert run([(0, 90)])[0].signal is Level.CRITICAL


def test_staying_above_warning_within_cooldown_does_not_repeat():
    decisions = run([(0, 80), (1, 81), (15, 82), (29.9, 80)])
    assert signals(decisions) == [(Level.WARNING, "crossed")]
    assert [d.level for d in decisions] == [Level.WARNING] * 4
    assert not any(d.changed for d in decisions[1:])


def test_staying_above_warning_after_cooldown_repeats():
    decisions = run([(0, 80), (30, 80), (45, 80), (60, 80)])
    assert signals(decisions) == [
        (Level.WARNING, "crossed"),
        (Level.WARNING, "repeat"),
        (Level.WARNING, "repeat"),
    ]
    assert [i for i, d in enumerate(decisions) if d.signal] == [0, 1, 3]


def test_repeat_cooldown_counts_from_the_last_signal():
    decisions = run([(0, 80), (31, 80), (60, 80), (61, 80)])
    assert [d.reason for d in decisions] == ["crossed", "repeat", "", "repeat"]


def test_zero_cooldown_never_repeats():
    thresholds = Thresholds(75, 90, 5, cooldown=0)
    decisions = run([(0, 80), (100, 80), (10_000, 85), (20_000, 95), (90_000, 99)], thresholds)
    assert signals(decisions) == [(Level.WARNING, "crossed"), (Level.CRITICAL, "crossed")]


def test_ok_to_critical_jump_sends_critical_only_as_jumped():
    decision = run([(0, 95)])[0]
    assert decision == Decision(Level.OK, Level.CRITICAL, signal=Level.CRITICAL, reason="jumped")


def test_warning_to_critical_sends_critical():
    decisions = run([(0, 80), (5, 91)])
    assert signals(decisions) == [(Level.WARNING, "crossed"), (Level.CRITICAL, "crossed")]
    assert decisions[1].previous is Level.WARNING
    assert decisions[1].level is Level.CRITICAL


def test_critical_repeats_after_cooldown_while_above_critical():
    decisions = run([(0, 95), (10, 95), (30, 92)])
    assert signals(decisions) == [(Level.CRITICAL, "jumped"), (Level.CRITICAL, "repeat")]


def test_falling_from_critical_holds_critical_until_below_its_rearm_point():
    decisions = run([(0, 95), (1, 89), (2, 85), (3, 84.9)])
    assert [d.level for d in decisions] == [
        Level.CRITICAL,
        Level.CRITICAL,
        Level.CRITICAL,
        Level.WARNING,
    ]
    assert [d.signal for d in decisions[1:]] == [None, None, None]
    assert decisions[3].reason == "fell"
    assert decisions[3].changed


def test_in_critical_hysteresis_band_no_repeat_even_after_cooldown():
    # 87% is below critical (90), so the critical signal does not repeat, but still critical.
    decisions = run([(0, 95), (100, 87), (200, 87)])
    assert [d.level for d in decisions] == [Level.CRITICAL] * 3
    assert signals(decisions) == [(Level.CRITICAL, "jumped")]


def test_falling_never_signals():
    decisions = run([(0, 95), (1, 80), (2, 60), (3, 10)])
    assert signals(decisions[1:]) == []
    assert [d.level for d in decisions] == [Level.CRITICAL, Level.WARNING, Level.OK, Level.OK]
    assert [d.reason for d in decisions[1:]] == ["fell", "fell", ""]


def test_critical_straight_to_ok_when_below_both_rearm_points():
    decisions = run([(0, 95), (1, 50)])
    assert decisions[1] == Decision(Level.CRITICAL, Level.OK, reason="fell")


def test_critical_to_inside_warning_band_lands_on_warning():
    decisions = run([(0, 95), (1, 72)])
    assert decisions[1].level is Level.WARNING
    assert decisions[1].signal is None


def test_within_warning_hysteresis_band_no_resignal():
    decisions = run([(0, 80), (1, 72), (2, 70), (3, 76), (4, 71), (5, 80)])
    assert [d.level for d in decisions] == [Level.WARNING] * 6
    assert signals(decisions) == [(Level.WARNING, "crossed")]


def test_rearm_after_falling_below_warning_minus_hysteresis_signals_again():
    decisions = run([(0, 80), (1, 69.9), (2, 76)])
    assert [d.level for d in decisions] == [Level.WARNING, Level.OK, Level.WARNING]
    assert signals(decisions) == [(Level.WARNING, "crossed"), (Level.WARNING, "crossed")]


def test_rearm_of_critical_signals_critical_again():
    decisions = run([(0, 95), (1, 80), (2, 93)])
    assert signals(decisions) == [(Level.CRITICAL, "jumped"), (Level.CRITICAL, "crossed")]


def test_warning_repeats_resume_a_cooldown_after_leaving_critical():
    # Leaving critical at t=10 restarts the warning cooldown from then, not at once.
    decisions = run([(0, 95), (10, 80), (20, 80), (39, 80), (40, 80)])
    assert [d.reason for d in decisions] == ["jumped", "fell", "", "", "repeat"]
    assert decisions[4].signal is Level.WARNING


def test_zero_hysteresis_rearms_right_below_the_threshold():
    thresholds = Thresholds(75, 90, hysteresis=0, cooldown=0)
    decisions = run([(0, 75), (1, 74.99), (2, 75)], thresholds)
    assert signals(decisions) == [(Level.WARNING, "crossed"), (Level.WARNING, "crossed")]


def test_grow_shrink_grow_gives_exactly_the_expected_signals():
    samples = [
        (0, 10),
        (1, 50),
        (2, 76),  # warning crossed
        (3, 78),
        (4, 91),  # critical crossed
        (5, 95),
        (6, 88),  # critical band: nothing
        (7, 80),  # fell to warning
        (8, 60),  # fell to ok
        (9, 40),
        (10, 77),  # warning crossed again
        (11, 99),  # critical crossed again
        (41, 99),  # critical repeat after cooldown
        (42, 20),  # fell to ok
        (43, 96),  # jumped
    ]
    decisions = run(samples)
    got = [(samples[i][0], d.signal.label, d.reason) for i, d in enumerate(decisions) if d.signal]
    assert got == [
        (2, "warning", "crossed"),
        (4, "critical", "crossed"),
        (10, "warning", "crossed"),
        (11, "critical", "crossed"),
        (41, "critical", "repeat"),
        (43, "critical", "jumped"),
    ]
    assert [d.level.label for d in decisions] == [
        "ok",
        "ok",
        "warning",
        "warning",
        "critical",
        "critical",
        "critical",
        "warning",
        "ok",
        "ok",
        "warning",
        "critical",
        "critical",
        "ok",
        "critical",
    ]


def test_states_are_independent_per_target():
    first, second = PolicyState(), PolicyState()
    assert evaluate(T, first, 80, 0).signal is Level.WARNING
    assert evaluate(T, second, 80, 0).signal is Level.WARNING
    assert evaluate(T, first, 80, 1).signal is None


@pytest.mark.parametrize(("level", "label"), [(Level.OK, "ok"), (Level.CRITICAL, "critical")])
def test_level_labels(level, label):
    assert level.label == label


def test_threshold_of_each_level():
    assert T.threshold(Level.WARNING) == 75
    assert T.threshold(Level.CRITICAL) == 90
