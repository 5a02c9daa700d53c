"""Settings of the wake-up sources: PSI triggers and conditions, sources, polling."""

import pytest

from oomhero.config import (
    SOURCE_NAMES,
    ConfigError,
    Setting,
    build_watch_settings,
    parse_psi_condition,
    parse_psi_trigger,
    parse_sources,
)
from oomhero.policy import Level, PolicyState, Thresholds, evaluate, pressure_level


def test_psi_trigger_parses_stall_and_window_in_microseconds():
    spec = parse_psi_trigger("--psi", "some:150ms/1s")
    assert (spec.kind, spec.stall_us, spec.window_us) == ("some", 150_000, 1_000_000)
    assert spec.text() == "some 150000 1000000"
    assert parse_psi_trigger("--psi", "full:1s/2s").text() == "full 1000000 2000000"
    assert parse_psi_trigger("--psi", "off") is None


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ("some 150ms 1s", "not a PSI trigger"),
        ("any:1s/2s", "not a PSI trigger"),
        ("some:100ms/100ms", "500ms to 10s"),
        ("some:1s/20s", "500ms to 10s"),
        ("some:2s/1s", "within the window"),
    ],
)
def test_bad_psi_triggers_name_the_setting(raw, words):
    with pytest.raises(ConfigError) as error:
        parse_psi_trigger("OOMHERO_PSI", raw)
    assert "OOMHERO_PSI" in str(error.value) and words in str(error.value)


def test_psi_condition_holds_above_its_value_only():
    condition = parse_psi_condition("--critical-psi", "some_avg10>40")
    assert str(condition) == "some_avg10>40"
    assert condition.holds({"some": {"avg10": 40.5}})
    assert not condition.holds({"some": {"avg10": 40.0}})
    assert not condition.holds(None)
    with pytest.raises(ConfigError, match="--critical-psi"):
        parse_psi_condition("--critical-psi", "avg10>40")
    with pytest.raises(ConfigError, match="from 0 to below 100"):
        parse_psi_condition("--critical-psi", "full_avg60>100")


def test_sources_are_all_none_or_a_list():
    assert parse_sources("--sources", "all") == ("inotify", "psi", "eventfd", "ebpf")
    assert parse_sources("--sources", "none") == ()
    assert parse_sources("--sources", "psi,inotify,psi") == ("psi", "inotify")
    with pytest.raises(ConfigError, match="--sources='kprobe'"):
        parse_sources("--sources", "kprobe")


def test_fixed_interval_and_adaptive_bounds_together_are_refused():
    with pytest.raises(ConfigError) as error:
        build_watch_settings(
            {"interval": Setting("--interval", "1s"), "poll_floor": Setting("--poll-floor", "5ms")}
        )
    assert "--interval='1s'" in str(error.value) and "--poll-floor='5ms'" in str(error.value)


def test_a_psi_trigger_without_the_psi_source_is_refused():
    with pytest.raises(ConfigError, match="no effect"):
        build_watch_settings(
            {"psi": Setting("--psi", "some:1s/2s"), "sources": Setting("--sources", "inotify")}
        )


def test_floor_above_ceiling_is_refused():
    with pytest.raises(ConfigError, match="must not be above"):
        build_watch_settings(
            {
                "poll_floor": Setting("--poll-floor", "500ms"),
                "poll_ceiling": Setting("--poll-ceiling", "100ms"),
            }
        )


def test_pressure_alone_raises_the_level_and_says_so():
    thresholds = Thresholds(75, 90, 5, 0)
    state = PolicyState()
    critical = parse_psi_condition("--critical-psi", "some_avg10>40")
    level = pressure_level(None, critical, {"some": {"avg10": 55.0}})
    assert level is Level.CRITICAL
    decision = evaluate(thresholds, state, 20.0, 1.0, level)
    assert (decision.signal, decision.reason) == (Level.CRITICAL, "pressure")
    calm = evaluate(thresholds, state, 20.0, 2.0, pressure_level(None, critical, {"some": {}}))
    assert calm.level is Level.OK and calm.signal is None


def test_bpf_signal_brings_the_ebpf_source_unless_sources_exclude_it():
    settings = build_watch_settings({"bpf_signal": Setting("--bpf-signal", "1")})
    assert settings.bpf_signal and settings.sources == ("inotify", "psi", "eventfd", "ebpf")
    with pytest.raises(ConfigError, match="needs the ebpf source"):
        build_watch_settings(
            {"bpf_signal": Setting("--bpf-signal", "1"), "sources": Setting("--sources", "psi")}
        )
    with pytest.raises(ConfigError, match="yes/no"):
        build_watch_settings({"bpf_signal": Setting("OOMHERO_BPF_SIGNAL", "maybe")})


def test_every_source_config_names_is_declared_in_the_registry_in_its_order():
    from oomhero.sources import SOURCES

    assert tuple(SOURCES) == SOURCE_NAMES
    assert all(SOURCES[name].name == name and SOURCES[name].check for name in SOURCE_NAMES)
