"""The command line, run as ``python -m oomhero`` subprocesses with a clean environment.

No test here runs status or a watcher against the machine's cgroups; ``run`` (and the demo in
test_demo.py) only run where the memory controller is bound to cgroup v1, so that oomhero falls
back to a soft limit and creates no cgroup."""

import json
import subprocess
import sys

import psutil
import pytest

import oomhero
from oomhero.commands.common import opt_in_cautions
from tests.helpers import REPO, clean_env, run_cli, soft_limit_only, wait_until

SIDECAR_ENV = ("WARNING", "CRITICAL", "COOLDOWN", "WARNING_SIGNAL", "CRITICAL_SIGNAL")
OOMHERO_ENV = (
    "OOMHERO_HYSTERESIS",
    "OOMHERO_INTERVAL",
    "OOMHERO_METRIC",
    "OOMHERO_SIGNAL_TARGET",
    "OOMHERO_LOG_FORMAT",
)
SUBCOMMANDS = ("sidecar", "watch", "node", "top", "status", "run", "doctor", "demo", "bloat")


def assert_one_line_error(result, *words):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("oomhero: error: ")
    for word in words:
        assert word in lines[0]
    assert result.stdout == ""


def test_warning_above_critical_from_env_exits_2_naming_both():
    result = run_cli(WARNING="95", CRITICAL="90")
    assert_one_line_error(result, "WARNING='95'", "CRITICAL='90'")


def test_warning_above_critical_from_flags_exits_2_naming_both():
    result = run_cli("--warning", "95", "--critical", "90")
    assert_one_line_error(result, "--warning='95'", "--critical='90'")


def test_flag_beats_env_var():
    # CRITICAL=50 alone would be below the default warning; the flag takes its place.
    result = run_cli("--critical", "70", "--warning", "95", CRITICAL="50")
    assert_one_line_error(result, "--warning='95'", "--critical='70'")
    assert "CRITICAL='50'" not in result.stderr


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"COOLDOWN": "soon"}, ["COOLDOWN='soon'", "not a duration"]),
        ({"WARNING_SIGNAL": "SIGFOO"}, ["WARNING_SIGNAL='SIGFOO'", "not a signal"]),
        ({"CRITICAL_SIGNAL": "0"}, ["CRITICAL_SIGNAL='0'"]),
        ({"WARNING": "abc"}, ["WARNING='abc'", "not a number"]),
        ({"OOMHERO_FOO": "1"}, ["unknown setting OOMHERO_FOO", "OOMHERO_METRIC"]),
        ({"OOMHERO_METRIC": "rss"}, ["OOMHERO_METRIC='rss'", "usage, working-set"]),
        ({"OOMHERO_LOG_FORMAT": "xml"}, ["OOMHERO_LOG_FORMAT='xml'"]),
        ({"OOMHERO_INTERVAL": "0"}, ["OOMHERO_INTERVAL='0'"]),
        ({"WARNING": "٥٠"}, ["WARNING='٥٠' is not a number"]),
        ({"CRITICAL": "9_0"}, ["CRITICAL='9_0' is not a number"]),
        ({"COOLDOWN": "1e30"}, ["COOLDOWN='1e30' is not a duration"]),
        ({"COOLDOWN": "2h"}, ["COOLDOWN='2h' must be 0 or from 100ms to 1h"]),
        ({"OOMHERO_POLL_CEILING": "1h"}, ["OOMHERO_POLL_CEILING='1h' must be from 10ms to 1m"]),
        ({"OOMHERO_SAFETY_NET": "forever"}, ["OOMHERO_SAFETY_NET='forever' is not a duration"]),
        ({"OOMHERO_POLL_BURST": "1" + "0" * 30}, ["OOMHERO_POLL_BURST=", "to 1T/s"]),
        ({"WARNING_SIGNAL": "SIGUSR1 "}, ["WARNING_SIGNAL='SIGUSR1 ' is not a signal"]),
        ({"CRITICAL_SIGNAL": "SIGKILL"}, ["CRITICAL_SIGNAL='SIGKILL' cannot be caught"]),
        ({"WARNING_SIGNAL": "SIGSTOP"}, ["WARNING_SIGNAL='SIGSTOP' cannot be caught"]),
        ({"CRITICAL_SIGNAL": "SIGTSTP"}, ["CRITICAL_SIGNAL='SIGTSTP' stops a process"]),
        ({"OOMHERO_SIGNAL_UNCAUGHT": "maybe"}, ["OOMHERO_SIGNAL_UNCAUGHT='maybe'"]),
    ],
)
def test_bad_env_setting_exits_2_with_one_line(env, words):
    assert_one_line_error(run_cli(**env), *words)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--metric", "bogus"], ["--metric='bogus'", "usage, working-set"]),
        (["--signal-target", "one"], ["--signal-target='one'", "all, main"]),
        (["--cooldown", "1d"], ["--cooldown='1d'"]),
        (["--log-format", "xml"], ["--log-format='xml'"]),
        (["run", "--memory", "64M"], ["run needs a command after --"]),
        (["run", "--memory", "64M", "--"], ["run needs a command after --"]),
        (["run", "--memory", "12X", "--", "true"], ["--memory='12X' is not a size"]),
        (["run", "--memory", "0", "--", "true"], ["--memory='0'"]),
        (["watch", "/nonexistent"], ["cannot watch '/nonexistent'", "not a memory cgroup"]),
        (["watch", "--warning", "99", "/nonexistent"], ["--warning='99'"]),  # settings first
        (["demo", "--memory", "lots"], ["--memory='lots'"]),
        (["demo", "--timeout", "forever"], ["--timeout='forever'"]),
    ],
)
def test_bad_argument_exits_2_with_one_line(args, words):
    assert_one_line_error(run_cli(*args), *words)


def test_unknown_oomhero_env_is_refused_even_for_other_commands():
    assert_one_line_error(run_cli("run", "--memory", "64M", "--", "true", OOMHERO_X="1"))


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"oomhero {oomhero.__version__}"


def test_top_level_help_mentions_the_sidecar_env_vars_and_commands():
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: oomhero")
    for name in SIDECAR_ENV:
        assert name in result.stdout
    for command in SUBCOMMANDS:
        assert command in result.stdout


@pytest.mark.parametrize("command", ["sidecar", "watch", "run"])
def test_engine_command_help_names_every_env_var(command):
    result = run_cli(command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: oomhero {command}")
    for name in SIDECAR_ENV + OOMHERO_ENV:
        assert f"(env {name})" in " ".join(result.stdout.split()), name


@pytest.mark.parametrize("command", ["status", "doctor", "demo", "bloat"])
def test_other_command_help(command):
    result = run_cli(command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: oomhero {command}")
    assert "(env " not in result.stdout  # these take no settings from the environment


def test_demo_help_shows_its_own_defaults():
    result = run_cli("demo", "--help")
    assert "(default 65)" in result.stdout
    assert "default: adaptive polling" in result.stdout


@soft_limit_only
def test_run_passes_the_exit_code_through_and_says_soft_limit():
    result = run_cli("run", "--memory", "64M", "--", "sh", "-c", "exit 7")
    assert result.returncode == 7, result.stderr
    assert "SOFT LIMIT" in result.stderr
    assert "Traceback" not in result.stderr


@soft_limit_only
def test_run_reports_death_by_signal_as_128_plus_the_signal():
    result = run_cli("run", "--memory", "64M", "--", "sh", "-c", "kill -TERM $$")
    assert result.returncode == 128 + 15, result.stderr


@soft_limit_only
def test_run_passes_the_command_output_and_json_logs():
    result = run_cli(
        "run", "--memory", "64M", "--log-format", "json", "--", "sh", "-c", "echo hello"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello\n"
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert records[0]["msg"].startswith("SOFT LIMIT")
    assert records[0]["level"] == "warning"


@soft_limit_only
def test_run_of_a_missing_command_exits_127():
    result = run_cli("run", "--memory", "64M", "--", "/nonexistent/command")
    assert result.returncode == 127
    assert "command not found: /nonexistent/command" in result.stderr
    assert "Traceback" not in result.stderr


def test_doctor_prints_check_lines_and_ends_with_one_verdict():
    # Reads (never writes) this machine's cgroup mounts and /proc; exit 0 or 1 depends on it.
    result = run_cli("doctor", timeout=60)
    assert result.returncode in (0, 1), result.stderr
    assert "Traceback" not in result.stderr
    *lines, verdict = result.stdout.splitlines()
    assert lines
    assert all(line.startswith(("ok ", "missing ", "n/a ")) for line in lines), lines
    memory = [line for line in lines if line.split()[1:3] == ["memory", "controller"]]
    assert len(memory) == 1
    for name in ("cgroup v2", "PSI", "kprobes"):
        assert any(name in line for line in lines), name
    assert verdict.startswith("verdict: on this machine oomhero will wake on: ")
    assert "polling" in verdict
    assert ("NOT READY" in verdict) == (result.returncode == 1)
    if not memory[0].startswith("ok "):
        assert result.returncode == 1


@pytest.mark.parametrize(
    ("target", "said"),
    [
        ("999999999", "999999999 (pid 999999999 is gone or has no memory cgroup)"),
        ("/nonexistent/cgroup", "/nonexistent/cgroup ("),
        ("relative\n\x1b[2J", "is not a memory cgroup"),
    ],
)
def test_doctor_exits_1_for_a_target_that_does_not_exist(target, said):
    result = run_cli("doctor", target, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    verdict = result.stdout.splitlines()[-1]
    assert "it cannot watch: " in verdict and said in verdict, verdict
    assert verdict.endswith("NOT READY (exit 1)")
    assert all(line.isprintable() for line in result.stdout.splitlines()), result.stdout
    assert "Traceback" not in result.stderr


# A node agent's per-container opt-in, as a container that runs this image carries it (the
# agent's own, or an app's: the bloat app of a node-mode pod).
OPT_IN = {
    "OOMHERO_WARNING": "60",
    "OOMHERO_CRITICAL": "85",
    "OOMHERO_COOLDOWN": "5s",
    "OOMHERO_WARNING_SIGNAL": "SIGUSR1",
    "OOMHERO_CRITICAL_SIGNAL": "SIGTERM",
}


@pytest.mark.parametrize(
    ("command", "codes"),
    [(["status", "--json"], (0,)), (["doctor"], (0, 1)), (["bloat", "--rate", "x"], (2,))],
)
def test_cli_commands_work_in_a_container_that_opts_in_to_a_node_agent(command, codes):
    result = run_cli(*command, timeout=60, **OPT_IN)
    assert "unknown setting" not in result.stderr, result.stderr
    assert result.returncode in codes, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    if command[0] == "bloat":  # its own error about --rate, not oomhero's about the env
        assert result.stderr.startswith("oomhero bloat: error:"), result.stderr


def test_an_engine_says_the_opt_in_variables_in_its_own_env_set_nothing_for_it():
    said = opt_in_cautions({**OPT_IN, "OOMHERO_HYSTERESIS": "3"})
    assert len(said) == len(OPT_IN)  # OOMHERO_HYSTERESIS is the engine's own setting too
    assert any("OOMHERO_WARNING is a container's opt-in" in s and "WARNING (--warning)" in s
               for s in said)  # fmt: skip
    result = run_cli("status", "--json", OOMHERO_WARNNG="60")  # status ignores the env
    assert result.returncode == 0, result.stderr
    result = run_cli("doctor", OOMHERO_WARNNG="60")  # doctor reads it: a typo is refused
    assert result.returncode == 2 and "unknown setting OOMHERO_WARNNG" in result.stderr


@soft_limit_only
def test_run_with_a_soft_limit_stops_the_children_it_saw_when_it_stops(tmp_path):
    """Without a group, the processes seen in the command's tree are what run stops: here a
    child the command started and left running when it exited."""
    log = tmp_path / "run.log"
    argv = [sys.executable, "-m", "oomhero", "run", "--memory", "64M", "--interval", "50ms"]
    argv += ["--log-format", "json", "--log-level", "debug", "--"]
    argv += ["sh", "-c", "sleep 1000 & echo $!; read line"]
    with open(log, "w") as err:
        run = subprocess.Popen(
            argv, cwd=REPO, env=clean_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=err, text=True,
        )  # fmt: skip
    child = psutil.Process(int(run.stdout.readline()))
    seen = log.read_text().count('"sampled"')
    wait_until(lambda: log.read_text().count('"sampled"') > seen + 1, "a sample of the tree")
    run.stdin.write("exit\n")  # the command exits; its sleep is left running
    run.stdin.close()
    assert run.wait(timeout=60) == 0
    run.stdout.close()
    stopped = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["processes"] for r in stopped if r["msg"] == "stopped what the command left"] == [1]

    def ended() -> bool:
        try:
            return not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_until(ended, "the child's end")
