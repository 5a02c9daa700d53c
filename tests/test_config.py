import signal

import pytest

from oomhero.config import (
    ConfigError,
    Setting,
    WatchSettings,
    build_watch_settings,
    parse_duration,
    parse_percent,
    parse_signal,
    parse_size,
)

MIB = 1024**2


# -- parse_percent -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "expected"),
    [("75", 75.0), ("75%", 75.0), ("75.5", 75.5), ("100", 100.0)],
)
def test_parse_percent_accepts_numbers_and_a_percent_sign(raw, expected):
    assert parse_percent("WARNING", raw) == expected


@pytest.mark.parametrize("raw", ["0", "0%", "101", "100.5"])
def test_parse_percent_rejects_out_of_range_naming_the_setting(raw):
    with pytest.raises(ConfigError, match=r"^WARNING=.* must be above 0 and at most 100"):
        parse_percent("WARNING", raw)


# Unicode digits, underscores, exponents, signs, spaces: float() and str.isdigit() take them all.
NOT_ASCII_DECIMAL = [
    "٥٠",
    "５０",
    "1_0",
    "1e2",
    "-5",
    "+50",
    "nan",
    "inf",
    " 90",
    "90 ",
    "50%%",
    "50\n",
]


@pytest.mark.parametrize("raw", NOT_ASCII_DECIMAL)
def test_parse_percent_takes_ascii_decimals_only(raw):
    with pytest.raises(ConfigError, match=r"^WARNING=.* is not a number \(a percent of the limit"):
        parse_percent("WARNING", raw)


def test_parse_percent_rejects_text_naming_the_setting_and_value():
    with pytest.raises(ConfigError) as info:
        parse_percent("CRITICAL", "abc")
    assert str(info.value).startswith("CRITICAL='abc' is not a number")


# -- parse_duration ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("500ms", 0.5),
        ("1s", 1.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("30", 30.0),  # OOMHero's legacy COOLDOWN: whole seconds
        ("0", 0.0),
        ("1.5s", 1.5),
        ("250us", 0.00025),
    ],
)
def test_parse_duration_units(raw, seconds):
    assert parse_duration("COOLDOWN", raw) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "raw", ["soon", "", "1d", "-1s", "1 s 2", "ms", "1.s", "1e30", "1_0s", "٣s", " 10s", "10 s"]
)
def test_parse_duration_rejects_garbage_naming_the_setting(raw):
    with pytest.raises(ConfigError) as info:
        parse_duration("COOLDOWN", raw)
    assert str(info.value).startswith(f"COOLDOWN={raw!r} is not a duration")


# -- parse_size ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "size"),
    [
        ("256M", 256 * MIB),
        ("1G", 1024 * MIB),
        ("1g", 1024 * MIB),
        ("512MiB", 512 * MIB),
        ("64mb", 64 * MIB),
        ("4096", 4096),
        ("8k", 8192),
        ("1.5G", 1536 * MIB),
    ],
)
def test_parse_size_binary_units(raw, size):
    assert parse_size("--memory", raw) == size


def test_parse_size_zero_is_an_error():
    with pytest.raises(ConfigError, match=r"^--memory='0' must be from 1 byte to 1024T"):
        parse_size("--memory", "0")


@pytest.mark.parametrize("raw", ["12X", "", "M", "-5M", "1.2.3G", "ten", "1_0M", "٥M", " 1G"])
def test_parse_size_rejects_unknown_units_naming_the_setting(raw):
    with pytest.raises(ConfigError) as info:
        parse_size("--memory", raw)
    assert str(info.value).startswith(f"--memory={raw!r} is not a size")


# -- parse_signal --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("SIGUSR1", signal.SIGUSR1),
        ("usr1", signal.SIGUSR1),
        ("USR2", signal.SIGUSR2),
        ("sigterm", signal.SIGTERM),
        (str(int(signal.SIGUSR1)), signal.SIGUSR1),  # "10" on x86 and arm
    ],
)
def test_parse_signal_by_name_or_number(raw, expected):
    assert parse_signal("WARNING_SIGNAL", raw) is expected


@pytest.mark.parametrize(
    "raw", ["SIGFOO", "0", "999", "", "-1", "SIG", "SIGUSR1 ", " usr1", "١٠", "1_0", "SIGUSR1\n"]
)
def test_parse_signal_rejects_unknown_naming_the_setting(raw):
    with pytest.raises(ConfigError) as info:
        parse_signal("WARNING_SIGNAL", raw)
    assert str(info.value).startswith(f"WARNING_SIGNAL={raw!r} is not a signal")


# -- build_watch_settings ------------------------------------------------------------------------
def test_build_watch_settings_without_settings_gives_the_defaults():
    settings = build_watch_settings({})
    assert settings == WatchSettings()
    assert (settings.warning, settings.critical, settings.hysteresis) == (75.0, 90.0, 5.0)
    assert settings.cooldown == 30.0
    assert settings.warning_signal is signal.SIGUSR1
    assert settings.critical_signal is signal.SIGUSR2
    assert (settings.metric, settings.signal_target) == ("usage", "all")
    # Adaptive polling between 10 ms and 1 s, with every kernel source, unless told otherwise.
    assert (settings.interval, settings.poll_floor, settings.poll_ceiling) == (None, 0.01, 1.0)
    # The eBPF probe too, but by default never through bcc's compile.
    assert settings.sources == ("inotify", "psi", "eventfd", "ebpf") and not settings.bcc
    assert settings.psi.text() == "some 150000 1000000"


@pytest.mark.parametrize(
    ("given", "bcc"),
    [
        ({"sources": Setting("--sources", "all")}, True),
        ({"sources": Setting("--sources", "psi,ebpf")}, True),
        ({"sources": Setting("--sources", "inotify,psi")}, False),
        ({"bpf_signal": Setting("--bpf-signal", "1")}, True),
    ],
)
def test_the_bcc_fallback_is_allowed_only_where_ebpf_is_asked_for(given, bcc):
    assert build_watch_settings(given).bcc is bcc


def test_build_watch_settings_parses_every_key():
    raw = {
        "warning": Setting("WARNING", "60"),
        "critical": Setting("CRITICAL", "80%"),
        "hysteresis": Setting("OOMHERO_HYSTERESIS", "2.5"),
        "cooldown": Setting("COOLDOWN", "10"),
        "warning_signal": Setting("WARNING_SIGNAL", "usr2"),
        "critical_signal": Setting("CRITICAL_SIGNAL", "SIGTERM"),
        "interval": Setting("OOMHERO_INTERVAL", "250ms"),
        "metric": Setting("OOMHERO_METRIC", "working-set"),
        "signal_target": Setting("OOMHERO_SIGNAL_TARGET", "main"),
    }
    assert build_watch_settings(raw) == WatchSettings(
        warning=60.0,
        critical=80.0,
        hysteresis=2.5,
        cooldown=10.0,
        warning_signal=signal.SIGUSR2,
        critical_signal=signal.SIGTERM,
        interval=0.25,
        metric="working-set",
        signal_target="main",
    )


def test_warning_not_below_critical_names_both_settings():
    raw = {"warning": Setting("WARNING", "95"), "critical": Setting("CRITICAL", "90")}
    with pytest.raises(ConfigError) as info:
        build_watch_settings(raw)
    message = str(info.value)
    assert "WARNING='95'" in message
    assert "CRITICAL='90'" in message
    assert "\n" not in message


def test_warning_equal_to_critical_is_an_error():
    raw = {"warning": Setting("--warning", "90"), "critical": Setting("--critical", "90")}
    with pytest.raises(ConfigError, match=r"--warning='90' must be below --critical='90'"):
        build_watch_settings(raw)


def test_warning_above_default_critical_names_the_default():
    with pytest.raises(ConfigError) as info:
        build_watch_settings({"warning": Setting("WARNING", "95")})
    assert "WARNING='95'" in str(info.value)
    assert "critical (default 90" in str(info.value)


def test_hysteresis_not_below_warning_is_an_error_naming_both():
    raw = {"warning": Setting("WARNING", "40"), "hysteresis": Setting("OOMHERO_HYSTERESIS", "40")}
    with pytest.raises(ConfigError) as info:
        build_watch_settings(raw)
    assert "OOMHERO_HYSTERESIS='40'" in str(info.value)
    assert "WARNING='40'" in str(info.value)


@pytest.mark.parametrize("raw", ["-1", "100", "lots"])
def test_hysteresis_out_of_range_is_an_error(raw):
    with pytest.raises(ConfigError, match=r"^OOMHERO_HYSTERESIS="):
        build_watch_settings({"hysteresis": Setting("OOMHERO_HYSTERESIS", raw)})


def test_hysteresis_zero_is_allowed():
    assert build_watch_settings({"hysteresis": Setting("H", "0")}).hysteresis == 0.0


def test_zero_interval_is_an_error():
    with pytest.raises(ConfigError, match=r"OOMHERO_INTERVAL='0' must be from 10ms to 10m"):
        build_watch_settings({"interval": Setting("OOMHERO_INTERVAL", "0")})


@pytest.mark.parametrize(
    ("key", "name", "raw", "message"),
    [
        ("cooldown", "COOLDOWN", "2h", "must be 0 or from 100ms to 1h"),
        ("cooldown", "COOLDOWN", "10ms", "must be 0 or from 100ms to 1h"),
        ("cooldown", "COOLDOWN", "1" + "0" * 30, "must be 0 or from 100ms to 1h"),
        ("interval", "OOMHERO_INTERVAL", "11m", "must be from 10ms to 10m"),
        ("poll_floor", "OOMHERO_POLL_FLOOR", "100us", "must be from 1ms to 1s"),
        ("poll_ceiling", "OOMHERO_POLL_CEILING", "1h", "must be from 10ms to 1m"),
        ("safety_net", "OOMHERO_SAFETY_NET", "11m", "must be from 10ms to 10m"),
        ("safety_net", "OOMHERO_SAFETY_NET", "0", "must be from 10ms to 10m"),
        ("poll_burst", "OOMHERO_POLL_BURST", "1" + "0" * 30, "must be 0 or from 1 byte/s to 1T/s"),
        ("poll_burst", "OOMHERO_POLL_BURST", "2T/s", "must be 0 or from 1 byte/s to 1T/s"),
    ],
)
def test_durations_and_rates_are_bounded_and_the_error_says_the_range(key, name, raw, message):
    with pytest.raises(ConfigError) as info:
        build_watch_settings({key: Setting(name, raw)})
    assert str(info.value) == f"{name}={raw!r} {message}"


@pytest.mark.parametrize(
    ("key", "name", "raw"),
    [
        ("poll_floor", "--poll-floor", "5ms"),
        ("safety_net", "OOMHERO_SAFETY_NET", "2s"),
    ],
)
def test_an_adaptive_polling_setting_with_fixed_polling_is_refused(key, name, raw):
    given = {"interval": Setting("--interval", "1s"), key: Setting(name, raw)}
    with pytest.raises(ConfigError) as info:
        build_watch_settings(given)
    assert str(info.value) == (
        f"--interval='1s' asks for fixed polling, and {name}={raw!r} applies only to adaptive "
        "polling: give one or the other"
    )


def test_the_safety_net_defaults_to_5s_and_takes_a_duration():
    assert WatchSettings().safety_net == 5.0
    raw = {"safety_net": Setting("--safety-net", "500ms")}
    assert build_watch_settings(raw).safety_net == 0.5


def test_bounds_are_inclusive():
    raw = {
        "cooldown": Setting("COOLDOWN", "1h"),
        "poll_floor": Setting("OOMHERO_POLL_FLOOR", "1ms"),
        "poll_ceiling": Setting("OOMHERO_POLL_CEILING", "1m"),
        "poll_burst": Setting("OOMHERO_POLL_BURST", "1T/s"),
    }
    settings = build_watch_settings(raw)
    assert (settings.cooldown, settings.poll_floor, settings.poll_ceiling) == (3600, 0.001, 60)
    assert settings.poll_burst == 1024**4
    assert build_watch_settings({"cooldown": Setting("COOLDOWN", "100ms")}).cooldown == 0.1


def test_sizes_are_bounded():
    with pytest.raises(ConfigError, match=r"^--memory='2048T' must be from 1 byte to 1024T$"):
        parse_size("--memory", "2048T")


@pytest.mark.parametrize("name", ["SIGKILL", "SIGSTOP", "SIGTSTP", "SIGTTIN", "SIGTTOU", "9"])
def test_uncatchable_and_stopping_signals_are_refused_unless_uncaught_signalling(name):
    with pytest.raises(ConfigError) as info:
        build_watch_settings({"critical_signal": Setting("CRITICAL_SIGNAL", name)})
    assert str(info.value).startswith(f"CRITICAL_SIGNAL={name!r} ")
    assert "refused, unless --signal-uncaught" in str(info.value)
    allowed = build_watch_settings(
        {
            "critical_signal": Setting("CRITICAL_SIGNAL", name),
            "signal_uncaught": Setting("OOMHERO_SIGNAL_UNCAUGHT", "1"),
        }
    )
    (caution,) = allowed.cautions()
    assert caution.startswith(f"the critical signal {allowed.critical_signal.name} ")


def test_the_same_signal_for_both_levels_is_a_caution():
    assert WatchSettings().cautions() == []
    same = build_watch_settings({"critical_signal": Setting("CRITICAL_SIGNAL", "usr1")})
    assert same.cautions() == [
        "warning and critical send the same signal (SIGUSR1): the app cannot tell them apart"
    ]


def test_zero_cooldown_is_allowed():
    assert build_watch_settings({"cooldown": Setting("COOLDOWN", "0")}).cooldown == 0.0


@pytest.mark.parametrize(
    ("key", "name"), [("metric", "OOMHERO_METRIC"), ("signal_target", "OOMHERO_SIGNAL_TARGET")]
)
def test_choices_reject_unknown_values_and_list_the_known(key, name):
    with pytest.raises(ConfigError) as info:
        build_watch_settings({key: Setting(name, "bogus")})
    assert str(info.value).startswith(f"{name}='bogus' must be one of:")


def test_custom_defaults_apply_where_nothing_is_given():
    defaults = WatchSettings(warning=65, critical=90, interval=0.1)
    assert build_watch_settings({}, defaults) == defaults
    settings = build_watch_settings({"warning": Setting("--warning", "70")}, defaults)
    assert settings.warning == 70.0
    assert settings.interval == 0.1
    assert settings.critical == 90.0


def test_custom_defaults_are_validated_against_given_settings():
    defaults = WatchSettings(warning=65, critical=70)
    with pytest.raises(ConfigError, match=r"--warning='80' must be below critical \(default 70"):
        build_watch_settings({"warning": Setting("--warning", "80")}, defaults)
