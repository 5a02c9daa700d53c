"""``oomhero demo``, the README's main command, end to end on this host (soft limit)."""

from tests.helpers import run_cli, soft_limit_only


@soft_limit_only
def test_demo_succeeds_with_a_soft_limit():
    result = run_cli("demo", "--timeout", "60s", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SOFT LIMIT" in result.stdout
    assert "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == "demo: done: both signals handled before the limit"
    assert any("bloat got SIGUSR1 and freed" in line for line in lines)
    assert any("its /healthz answered 500" in line for line in lines)
    assert any("SIGTERM → bloat exited 0" in line for line in lines)
    assert not any("✗" in line for line in lines)
    # The engine's log (stderr) shows both signals sent to the app.
    assert "signal=SIGUSR1" in result.stderr
    assert "signal=SIGUSR2" in result.stderr


@soft_limit_only
def test_demo_that_times_out_fails():
    # A limit it cannot reach in time: no signals, so the demo reports FAILED and exits 1.
    result = run_cli("demo", "--memory", "64G", "--rate", "1M", "--timeout", "1s", timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "demo: FAILED"
    assert "bloat never got SIGUSR1" in result.stdout
