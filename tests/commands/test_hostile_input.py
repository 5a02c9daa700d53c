"""The hostile-input sweep as a table: every malformed argument, env var, URL, header, token
file and command gives one line on stderr and the documented exit status (2 for a setting or
argument; 126/127 for a command ``run`` cannot start, as a shell says it), never a traceback,
a hang, or a value taken for another (``١`` for PID 1, ``ſıgusr1`` for SIGUSR1)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from tests.helpers import run_cli, soft_limit_only

HOOK = ["--webhook", "http://127.0.0.1:9/hook"]

# (argv, env, exit status, words in the line); {tmp} is a directory with the files below.
TABLE = [
    # PIDs and signal names: ASCII only (int() and str.upper() take far more).
    (["watch", "١"], {}, 2, "cannot watch '١'"),
    (["watch", "５"], {}, 2, "cannot watch '５'"),
    (["watch", "--warning-signal", "ſıgusr1", "x"], {}, 2, "--warning-signal='ſıgusr1' is not a"),
    (["watch", "x"], {"WARNING_SIGNAL": "ſıgusr1"}, 2, "WARNING_SIGNAL='ſıgusr1' is not a signal"),
    (["watch", "--critical-signal", "ＳＩＧＵＳＲ２", "x"], {}, 2, "is not a signal"),
    (["watch", "--critical-signal", "١٢", "x"], {}, 2, "--critical-signal='١٢' is not a signal"),
    (["watch", "--critical-signal", "usr2\n", "x"], {}, 2, "is not a signal"),
    (["watch", "--signal-uncaught", "x"], {"OOMHERO_SIGNAL_UNCAUGHT": "ｏｎ"}, 2, "not a yes/no"),
    # Webhook URLs: checked at start.
    (["watch", "--webhook", "http://h:99999/", "x"], {}, 2, "port must be a number from 1"),
    (["watch", "--webhook", "http://h:0/", "x"], {}, 2, "port must be a number from 1"),
    (["watch", "--webhook", "http://h:/", "x"], {}, 2, "port must be a number from 1"),
    (["watch", "--webhook", "http://h:+80/", "x"], {}, 2, "port must be a number from 1"),
    (["watch", "--webhook", "http://[::1/", "x"], {}, 2, "Invalid IPv6 URL"),
    (["watch", "--webhook", "http://[zz]/", "x"], {}, 2, "--webhook='http://[zz]/' is not a"),
    (["watch", "--webhook", "ftp://h/x", "x"], {}, 2, "the scheme must be http:// or https://"),
    (["watch", "--webhook", "javascript:alert(1)", "x"], {}, 2, "the scheme must be http"),
    (["watch", "--webhook", "http:///x", "x"], {}, 2, "it names no host"),
    (["watch", "--webhook", "", "x"], {}, 2, "--webhook='' is not a usable webhook URL"),
    (["watch", "--webhook", "http://u:p@h/", "x"], {}, 2, "user:password@ in a URL is logged"),
    (["watch", "--webhook", "http://h x/", "x"], {}, 2, "must be percent-encoded"),
    (["watch", "--webhook", "http://hé.example/", "x"], {}, 2, "must be percent-encoded"),
    (["watch", "--webhook", "http://h/\n", "x"], {}, 2, "must be percent-encoded"),
    (["watch", "--webhook", "http://-h-/", "x"], {}, 2, "is not a host name or IP address"),
    (["watch", "--webhook", f"http://{'a' * 64}.example/", "x"], {}, 2, "labels of 1 to 63"),
    (["watch", "--webhook", "http://a..example/", "x"], {}, 2, "labels of 1 to 63"),
    # Webhook headers and tokens: the value is never shown.
    (["watch", "--webhook-header", "X-A: 1", "x"], {}, 2, "--webhook-header needs --webhook"),
    (["watch", *HOOK, "--webhook-header", "NoColon", "x"], {}, 2, "(header 1) is not 'Name:"),
    (["watch", *HOOK, "--webhook-header", "Bad Name: v", "x"], {}, 2, "is not 'Name: value'"),
    (["watch", *HOOK, "--webhook-header", "X-Key:", "x"], {}, 2, "the value of X-Key must be"),
    (["watch", *HOOK, "--webhook-header", "X-Key: sécret", "x"], {}, 2, "value of X-Key must"),
    (["watch", *HOOK, "--webhook-header", "Host: evil", "x"], {}, 2, "oomhero sets Host itself"),
    (
        ["watch", *HOOK, "--webhook-header", "X-A: 1", "--webhook-header", "x-a: 2", "x"],
        {},
        2,
        "x-a is given twice",
    ),
    (["watch", *HOOK, "x"], {"OOMHERO_WEBHOOK_HEADERS": "X: 1\r\nY: 2"}, 2, "value of X must"),
    (["watch", "x"], {"OOMHERO_WEBHOOK_TOKEN": "t"}, 2, "OOMHERO_WEBHOOK_TOKEN needs --webhook"),
    (["watch", *HOOK, "x"], {"OOMHERO_WEBHOOK_TOKEN": "a b"}, 2, "is not a bearer token"),
    (["watch", *HOOK, "x"], {"OOMHERO_WEBHOOK_TOKEN": ""}, 2, "is not a bearer token"),
    (
        ["watch", *HOOK, "--webhook-token-file", "{tmp}/token", "x"],
        {"OOMHERO_WEBHOOK_TOKEN": "t"},
        2,
        "both give the webhook's token",
    ),
    (
        ["watch", *HOOK, "--webhook-header", "Authorization: Basic eA==", "x"],
        {"OOMHERO_WEBHOOK_TOKEN": "t"},
        2,
        "gives an Authorization header, and a token gives another",
    ),
    (["watch", *HOOK, "--webhook-token-file", "{tmp}/missing", "x"], {}, 2, "cannot be read"),
    (["watch", *HOOK, "--webhook-token-file", "{tmp}", "x"], {}, 2, "is not a regular file"),
    (["watch", *HOOK, "--webhook-token-file", "{tmp}/fifo", "x"], {}, 2, "is not a regular file"),
    (["watch", *HOOK, "--webhook-token-file", "{tmp}/huge", "x"], {}, 2, "longer than a token"),
    (["watch", *HOOK, "--webhook-token-file", "{tmp}/latin1", "x"], {}, 2, "not ASCII"),
    (["watch", *HOOK, "--webhook-token-file", "{tmp}/empty", "x"], {}, 2, "not a bearer token"),
    (["watch", *HOOK, "--webhook-timeout", "0", "x"], {}, 2, "must be from 100ms to 1m"),
    # An env var that a flag overrides is still checked: it is a broken deployment.
    (["watch", "--warning", "50", "x"], {"WARNING": "abc"}, 2, "WARNING='abc' is not a number"),
    (["watch", "--cooldown", "1s", "x"], {"COOLDOWN": "soon"}, 2, "--cooldown overrides it"),
    (
        ["run", "--memory", "64M", "--log-format", "json", "--", "true"],
        {"OOMHERO_LOG_FORMAT": "xml"},
        2,
        "OOMHERO_LOG_FORMAT='xml' must be one of: text, json (--log-format overrides it",
    ),
    (["watch", "--metrics-port", "9", "x"], {"METRICS_PORT": "99999"}, 2, "METRICS_PORT='99999'"),
    (["watch", *HOOK, "x"], {"OOMHERO_WEBHOOK": "http://h:99999/"}, 2, "--webhook overrides it"),
    # Metrics settings.
    (["watch", "--metrics-port", "99999", "x"], {}, 2, "--metrics-port='99999' is not a TCP"),
    (["watch", "--metrics-port", "0", "x"], {}, 2, "--metrics-port='0' is not a TCP port"),
    (["watch", "--metrics-address", "127.0.0.1", "x"], {}, 2, "needs --metrics-port"),
    (["watch", "--metrics-port", "9", "--metrics-address", "::1::", "x"], {}, 2, "not an IP"),
    # Usage errors: one line too.
    (["watch", "--bogus", "x"], {}, 2, "unrecognized arguments: --bogus"),
    (["nosuch"], {}, 2, "invalid choice: 'nosuch'"),
    (["run", "--", "true"], {}, 2, "the following arguments are required: --memory"),
    # The bloat app.
    (["bloat", "--port", "99999"], {}, 2, "--port='99999' is not a TCP port"),
    (["bloat", "--port", "-1"], {}, 2, "--port='-1' is not a TCP port"),
    (["bloat", "--port", "١"], {}, 2, "--port='١' is not a TCP port"),
    (["bloat", "--events", "{tmp}"], {}, 2, "--events='{tmp}' cannot be opened: Is a directory"),
    (["bloat", "--events", "{tmp}/fifo"], {}, 2, "cannot be opened: No such device or address"),
    (["bloat", "--events", "{tmp}/no/such"], {}, 2, "cannot be opened: No such file"),
    (["bloat", "--rate", "0"], {}, 2, "--rate='0' must be from 1 byte"),
    (["bloat", "--rate", "1e9"], {}, 2, "--rate='1e9' is not a size"),
]


@pytest.fixture
def files(tmp_path):
    (tmp_path / "token").write_text("good-token\n")
    (tmp_path / "huge").write_text("a" * 20000)
    (tmp_path / "latin1").write_bytes(b"t\xe9\n")
    (tmp_path / "empty").write_text("")
    os.mkfifo(tmp_path / "fifo")  # no writer, no reader: an open that blocks would hang
    return tmp_path


def assert_one_line(result, code: int, words: str) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("oomhero") and "error: " in lines[0], lines[0]
    assert words in lines[0], lines[0]
    assert result.stdout == ""


@pytest.mark.parametrize(("argv", "env", "code", "words"), TABLE)
def test_malformed_input_gives_one_line_and_the_documented_status(files, argv, env, code, words):
    argv = [arg.replace("{tmp}", str(files)) for arg in argv]
    result = run_cli(*argv, timeout=30, **env)
    assert_one_line(result, code, words.replace("{tmp}", str(files)))


def test_secret_values_are_never_echoed(files):
    secret = "s3cr3t-value-é"
    for argv, env in (
        (["--webhook-header", f"X-Key: {secret}"], {}),
        ([], {"OOMHERO_WEBHOOK_TOKEN": f"Bearer {secret}"}),
        (["--webhook-token-file", str(files / "secret")], {}),
    ):
        (files / "secret").write_text(f"{secret} and more\n")
        result = run_cli("watch", *HOOK, *argv, "x", **env)
        assert result.returncode == 2 and "s3cr3t" not in result.stderr, result.stderr


@soft_limit_only
@pytest.mark.parametrize(
    ("command", "code", "words"),
    [
        ("{tmp}/not-executable", 126, "cannot run {tmp}/not-executable: Permission denied"),
        ("{tmp}/garbage", 126, "cannot run {tmp}/garbage: Exec format error"),
        ("{tmp}", 126, "cannot run {tmp}: Permission denied"),
        ("{tmp}/missing", 127, "command not found: {tmp}/missing"),
        ("", 127, "command not found: ''"),
        ("a\nb", 127, "command not found: 'a\\nb'"),
    ],
)
def test_run_of_a_command_that_cannot_start_exits_as_a_shell_does(files, command, code, words):
    (files / "not-executable").write_text("echo never\n")
    garbage = files / "garbage"
    garbage.write_bytes(b"\x00\x01\x02junk")
    garbage.chmod(garbage.stat().st_mode | stat.S_IXUSR)
    command = command.replace("{tmp}", str(files))
    result = run_cli("run", "--memory", "64M", "--", command)
    assert_one_line(result, code, words.replace("{tmp}", str(files)))


def test_status_and_doctor_do_not_take_an_arabic_indic_one_for_pid_1():
    status = run_cli("status", "--json", "١")
    assert status.returncode == 1, status.stderr
    (row,) = json.loads(status.stdout)
    assert row["cgroup"] == "١" and "is not a memory cgroup" in row["error"], row
    doctor = run_cli("doctor", "١")
    (line,) = [line for line in doctor.stdout.splitlines() if "target ١" in line]
    assert line.startswith("missing") and "is not a memory cgroup" in line, line
