"""``oomhero status`` rows from synthetic cgroup dirs only (never the machine's cgroups)."""

import io
import json
import subprocess
import sys

import pytest
from rich.console import Console

from oomhero.commands.status import Row, plain, render, row_for, to_json
from oomhero.kernel.cgroup import CgroupDir
from tests.helpers import REPO, clean_env, v1_dir, v2_dir

# Synthetic cgroup trees under the temp dir (parsing and policy), taken for cgroupfs.
pytestmark = pytest.mark.usefixtures("synthetic_cgroupfs")

MIB = 1024**2


def row_of(directory, version, processes=2):
    cgroup = CgroupDir.open(str(directory), version)
    try:
        return row_for(cgroup, processes)
    finally:
        cgroup.close()


def test_row_for_v2(tmp_path):
    row = row_of(v2_dir(tmp_path / "g"), 2)
    assert (row.usage, row.limit, row.working_set) == (96 * MIB, 128 * MIB, 80 * MIB)
    assert row.percent == 75.0
    assert row.events["max"] == 7
    assert (row.psi_some_avg10, row.psi_full_avg10) == (1.5, 0.75)
    assert row.error is None


def test_row_for_v1_has_no_psi(tmp_path):
    row = row_of(v1_dir(tmp_path / "g"), 1)
    assert row.limit == 64 * MIB
    assert row.percent == round(200 * 100 / 64, 1)
    assert row.events == {"under_oom": 1, "oom_kill": 4, "failcnt": 17}
    assert row.psi_some_avg10 is None


def test_row_for_unlimited_and_zero_limit_have_no_percent(tmp_path):
    assert row_of(v2_dir(tmp_path / "a", limit="max"), 2).percent is None
    assert row_of(v2_dir(tmp_path / "b", limit="0"), 2).percent is None


def test_row_for_an_unreadable_cgroup_says_why(tmp_path):
    directory = v2_dir(tmp_path / "g")
    (directory / "memory.current").unlink()
    row = row_of(directory, 2)
    assert "memory.current" in row.error
    assert row.usage is None


def test_to_json_round_trips(tmp_path):
    rows = [row_of(v2_dir(tmp_path / "g"), 2), Row("v2:/gone", 2, 1, error="pid 9 is gone")]
    data = json.loads(to_json(rows))
    assert [r["cgroup"] for r in data] == [str(tmp_path / "g"), "v2:/gone"]
    assert data[0]["limit"] == 128 * MIB
    assert data[0]["events"]["oom_kill"] == 1
    assert data[1]["error"] == "pid 9 is gone"


def test_render_shows_every_row(tmp_path):
    rows = [
        row_of(v2_dir(tmp_path / "limited"), 2),
        row_of(v2_dir(tmp_path / "free", limit="max"), 2),
        Row("v2:/broken", 2, None, error="cannot read"),
    ]
    out = io.StringIO()
    render(rows, Console(file=out, width=300, color_system=None))
    text = out.getvalue()
    assert str(tmp_path / "limited") in text
    assert "no limit" in text
    assert "cannot read" in text
    assert "high=3 max=7 oom=1 oom_kill=1" in text  # zero counters left out
    assert "1.5/0.75" in text


def test_plain_table_without_rich(tmp_path):
    rows = [
        row_of(v2_dir(tmp_path / "limited"), 2),
        Row("v2:/broken[red]", 2, None, error="cannot read [bold]x"),
    ]
    lines = plain(rows).splitlines()
    assert lines[0] == "memory cgroups (MiB)"
    header, limited, broken = lines[1:4]
    assert header.split("  ")[0] == "cgroup" and "wake-ups" in header
    # Columns line up: each cell starts where its header does.
    assert limited.index("128.0") == header.index("limit")
    assert limited.startswith(str(tmp_path / "limited"))
    assert broken.split() == ["v2:/broken[red]", "2", "-", "cannot", "read", "[bold]x"]


# The image has no rich: an import of it fails as there.
BLOCK_RICH = (
    "import sys; sys.modules['rich'] = None; from oomhero.cli import main; sys.exit(main())"
)


def test_top_without_rich_says_what_to_install():
    run = subprocess.run(
        [sys.executable, "-c", BLOCK_RICH, "top", "1"],
        env=clean_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert run.returncode == 2, run.stderr
    assert "pip install 'oomhero[cli]'" in run.stderr and "Traceback" not in run.stderr
