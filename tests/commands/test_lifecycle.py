"""Start and stop of the engine commands: every setting checked before anything starts, the
cautions said at start, SIGHUP a clean stop. ``watch`` runs on a synthetic cgroup directory."""

import json
import signal
import subprocess

import pytest

from tests.commands.test_cli import assert_one_line_error
from tests.helpers import REPO, SYNTHETIC_CLI, clean_env, run_cli, v2_dir, wait_until


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"METRICS_PORT": "70000"}, ["METRICS_PORT='70000' is not a TCP port"]),
        (
            {"METRICS_PORT": "9090", "OOMHERO_METRICS_ADDRESS": "everywhere"},
            ["OOMHERO_METRICS_ADDRESS='everywhere' is not an IP address"],
        ),
        (
            {"OOMHERO_WEBHOOK": "ftp://x/y"},
            ["OOMHERO_WEBHOOK='ftp://x/y' is not a usable webhook URL"],
        ),
        (
            {"OOMHERO_WEBHOOK": "http://127.0.0.1:9/x", "OOMHERO_WEBHOOK_RETRIES": "1_0"},
            ["OOMHERO_WEBHOOK_RETRIES='1_0' is not a whole number from 0 to 10"],
        ),
    ],
)
@pytest.mark.parametrize("command", [[], ["node", "--cgroup-root", "/nonexistent"]])
def test_output_settings_are_checked_before_anything_is_logged_or_opened(command, env, words):
    # Before: sidecar mode logged "oomhero started", then failed on the port.
    result = run_cli(*command, OOMHERO_LOG_FORMAT="json", **env)
    assert_one_line_error(result, *words)


def test_run_honours_or_refuses_the_output_settings():
    # Before: run ignored OOMHERO_WEBHOOK and ran the command unwatched by it.
    result = run_cli("run", "--memory", "64M", "--", "true", OOMHERO_WEBHOOK="ftp://x/y")
    assert_one_line_error(result, "OOMHERO_WEBHOOK='ftp://x/y'")
    help_text = " ".join(run_cli("run", "--help").stdout.split())
    for name in ("METRICS_PORT", "OOMHERO_WEBHOOK", "OOMHERO_SIGNAL_UNCAUGHT"):
        assert f"(env {name})" in help_text


def test_sighup_stops_cleanly_after_the_cautions_were_said(tmp_path):
    directory = v2_dir(tmp_path / "cg")
    log = tmp_path / "oomhero.log"
    watcher = subprocess.Popen(
        [*SYNTHETIC_CLI, "watch", str(directory), "--sources", "none"],
        env=clean_env(OOMHERO_LOG_FORMAT="json", CRITICAL_SIGNAL="usr1"),
        cwd=REPO,
        stderr=open(log, "w"),
    )

    def records():
        return [json.loads(line) for line in log.read_text().splitlines()]

    try:
        wait_until(lambda: any(r["msg"] == "watching target" for r in records()), "the target")
        watcher.send_signal(signal.SIGHUP)
        code = watcher.wait(timeout=30)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    assert code == 0  # before: 129, killed by the signal, no stop line
    messages = [r["msg"] for r in records()]
    assert messages[0] == "oomhero started" and messages[-1] == "oomhero stopped"
    assert records()[-1]["by"] == "SIGHUP"
    (caution,) = [r for r in records() if r["msg"] == "caution"]
    assert "same signal (SIGUSR1)" in caution["why"]
