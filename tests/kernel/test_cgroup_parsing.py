"""cgroup file parsing and reading, on synthetic cgroup trees in tmp_path only."""

import errno
import os

import pytest

from oomhero.kernel.cgroup import CgroupDir, CgroupError, MemorySample
from oomhero.kernel.cgroup_parse import parse_flat_keyed, parse_limit, parse_pressure
from oomhero.kernel.locate import (
    Membership,
    Mount,
    host_view_path,
    membership_of,
    memory_membership,
    memory_mount,
    open_for_pid,
    open_path,
    open_root_view,
    parse_mountinfo,
    parse_proc_cgroup,
)
from oomhero.targets.cgroups import CgroupScanner
from tests.helpers import V1_UNLIMITED, v1_dir, v2_dir, write_files

# Synthetic cgroup trees under the temp dir (parsing and policy), taken for cgroupfs.
pytestmark = pytest.mark.usefixtures("synthetic_cgroupfs")

MIB = 1024**2


@pytest.fixture
def opened():
    dirs = []

    def open_dir(*args, **kwargs):
        cgroup = CgroupDir.open(*args, **kwargs)
        dirs.append(cgroup)
        return cgroup

    yield open_dir
    for cgroup in dirs:
        cgroup.close()


# -- small parsers -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "limit"),
    [
        (b"max\n", None),
        (b"134217728\n", 134217728),
        (V1_UNLIMITED.encode() + b"\n", None),
        (b"9223372036854775807", None),
        (str(1 << 40).encode(), 1 << 40),
    ],
)
def test_parse_limit(text, limit):
    assert parse_limit(text) == limit


@pytest.mark.parametrize(
    "data", [b"lots", b"", b"1_0", b"1e2", b"-5", b" 12 34", "\u0661".encode(), b"12\x00"]
)
def test_parse_limit_takes_ascii_digits_only_and_never_echoes(data):
    with pytest.raises(CgroupError) as info:
        parse_limit(data, "memory.max")
    assert info.value.strerror == "memory.max does not hold a number"


def test_parse_flat_keyed_keeps_integer_pairs_only():
    text = b"anon 123\ninactive_file 456\nnegative -3\nbroken\nthree fields here\nword word\n"
    text += b"\xff\xfe 7\npopulated \xd9\xa1\n"  # non-UTF-8, non-ASCII digits: skipped
    assert parse_flat_keyed(text) == {"anon": 123, "inactive_file": 456, "negative": -3}


def test_parse_pressure():
    text = (
        b"some avg10=1.50 avg60=0.25 avg300=0.00 total=12345\n"
        b"full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
        b"some avg10=\xd9\xa1.00 avg60=0 avg300=0 total=0\n"  # malformed: skipped
    )
    pressure = parse_pressure(text)
    assert pressure["some"] == {"avg10": 1.5, "avg60": 0.25, "avg300": 0.0, "total": 12345.0}
    assert pressure["full"]["total"] == 0.0
    assert set(pressure) == {"some", "full"}


def test_parse_proc_cgroup_v2_only():
    assert parse_proc_cgroup("0::/a/b\n") == {"": "/a/b"}


def test_parse_proc_cgroup_hybrid_v1():
    text = "5:name=systemd:/s\n4:memory:/x\n2:cpu,cpuacct:/y\n0::/z\n"
    assert parse_proc_cgroup(text) == {
        "name=systemd": "/s",
        "memory": "/x",
        "cpu": "/y",
        "cpuacct": "/y",
        "": "/z",
    }


def test_parse_proc_cgroup_keeps_colons_in_the_path():
    assert parse_proc_cgroup("0::/a:b/c\n") == {"": "/a:b/c"}


def test_memory_membership_v1_memory_line_wins_over_v2():
    membership = memory_membership(parse_proc_cgroup("4:memory:/x\n0::/a/b\n"))
    assert membership == Membership(1, "/x")
    assert membership.key == "v1:/x"


def test_memory_membership_v2():
    assert memory_membership(parse_proc_cgroup("0::/a/b\n")) == Membership(2, "/a/b")


def test_memory_membership_none_without_memory_or_v2():
    assert memory_membership(parse_proc_cgroup("2:cpu,cpuacct:/y\n")) is None


def test_membership_of_reads_a_synthetic_proc(tmp_path):
    write_files(tmp_path / "42", {"cgroup": "4:memory:/kube/pod\n0::/\n"})
    assert membership_of(42, proc=str(tmp_path)) == Membership(1, "/kube/pod")
    assert membership_of(43, proc=str(tmp_path)) is None  # no such process


MOUNTINFO = """\
22 1 0:21 / /proc rw,nosuid - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 /kube/pod1 /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory
33 31 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:3 master:1 - cgroup2 cgroup2 rw,nsdelegate
50 22 0:40 / /mnt/with\\040space\\011tab rw - tmpfs tmpfs rw
"""


def test_parse_mountinfo_fields_and_optional_fields():
    mounts = parse_mountinfo(MOUNTINFO)
    assert [m.mount_point for m in mounts] == [
        "/proc",
        "/sys/fs/cgroup",
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/cpu,cpuacct",
        "/sys/fs/cgroup/unified",
        "/mnt/with space\ttab",
    ]
    memory = mounts[2]
    assert memory == Mount("/sys/fs/cgroup/memory", "/kube/pod1", "cgroup", ("rw", "memory"))
    assert mounts[4].fstype == "cgroup2"
    assert mounts[4].super_options == ("rw", "nsdelegate")


def test_parse_mountinfo_skips_malformed_lines():
    assert parse_mountinfo("garbage\n\n1 2 3 - x\n") == []


def test_parse_mountinfo_unescapes_non_ascii_paths():
    # The kernel escapes only space, tab, newline and backslash; other bytes come through as is.
    line = "50 22 0:40 / /mnt/données\\040x rw - cgroup2 cgroup2 rw\n"
    assert parse_mountinfo(line)[0].mount_point == "/mnt/données x"


def test_memory_mount_picks_cgroup2_or_the_v1_memory_hierarchy():
    mounts = parse_mountinfo(MOUNTINFO)
    assert memory_mount(mounts, 2).mount_point == "/sys/fs/cgroup/unified"
    assert memory_mount(mounts, 1).mount_point == "/sys/fs/cgroup/memory"
    assert memory_mount(mounts[:2], 1) is None
    assert memory_mount(mounts[:3], 2) is None


# -- host_view_path ------------------------------------------------------------------------------
V2_MOUNT = Mount("/sys/fs/cgroup", "/", "cgroup2", ("rw",))


def test_host_view_path_joins_onto_the_mount_point():
    assert host_view_path(Membership(2, "/a/b"), [V2_MOUNT]) == "/sys/fs/cgroup/a/b"
    assert host_view_path(Membership(2, "/"), [V2_MOUNT]) == "/sys/fs/cgroup"


def test_host_view_path_strips_the_mount_root():
    mounts = parse_mountinfo(MOUNTINFO)
    path = host_view_path(Membership(1, "/kube/pod1/ctr"), mounts)
    assert path == "/sys/fs/cgroup/memory/ctr"


def test_host_view_path_outside_the_namespace_is_an_error():
    with pytest.raises(CgroupError, match="outside this cgroup namespace") as info:
        host_view_path(Membership(2, "/../x"), [V2_MOUNT])
    assert info.value.errno == errno.ENOENT


def test_host_view_path_not_under_the_mount_root_is_an_error():
    mounts = parse_mountinfo(MOUNTINFO)
    with pytest.raises(CgroupError, match="not under the mounted part /kube/pod1"):
        host_view_path(Membership(1, "/other/pod"), mounts)


def test_host_view_path_without_a_mount_is_an_error():
    with pytest.raises(CgroupError, match="no cgroup v1 memory hierarchy"):
        host_view_path(Membership(1, "/x"), [V2_MOUNT])


# -- MemorySample ----------------------------------------------------------------------------------
def test_memory_sample_working_set_and_metric():
    sample = MemorySample(current=100, limit=200, inactive_file=30)
    assert sample.working_set == 70
    assert sample.value("working-set") == 70
    assert sample.value("usage") == 100
    assert MemorySample(10, None, 50).working_set == 0


# -- CgroupDir on synthetic trees ----------------------------------------------------------------
def test_cgroup_dir_v2_sample_events_pressure_pids(tmp_path, opened):
    directory = v2_dir(tmp_path / "pod" / "ctr", pids=(11, 12))
    cgroup = opened(str(directory), 2)
    sample = cgroup.sample()
    assert sample == MemorySample(96 * MIB, 128 * MIB, 16 * MIB)
    assert sample.working_set == 80 * MIB
    assert cgroup.events() == {
        "low": 0,
        "high": 3,
        "max": 7,
        "oom": 1,
        "oom_kill": 1,
        "oom_group_kill": 0,
    }
    assert cgroup.pressure()["some"]["avg10"] == 1.5
    assert cgroup.pressure()["full"]["total"] == 678.0
    assert cgroup.pids() == [11, 12]
    assert cgroup.has("memory.current")
    assert not cgroup.has("memory.usage_in_bytes")


def test_cgroup_dir_v2_unlimited(tmp_path, opened):
    cgroup = opened(str(v2_dir(tmp_path / "g", limit="max")), 2)
    assert cgroup.sample().limit is None


def test_cgroup_dir_reads_fresh_values(tmp_path, opened):
    directory = v2_dir(tmp_path / "g")
    cgroup = opened(str(directory), 2)
    assert cgroup.sample().current == 96 * MIB
    (directory / "memory.current").write_text(f"{100 * MIB}\n")
    assert cgroup.sample().current == 100 * MIB


def test_cgroup_dir_keeps_reading_after_a_rename(tmp_path, opened):
    # It holds a directory fd: reads do not walk the path again.
    directory = v2_dir(tmp_path / "g")
    cgroup = opened(str(directory), 2)
    directory.rename(tmp_path / "moved")
    assert cgroup.sample().current == 96 * MIB


def test_cgroup_dir_v1_limit_from_hierarchical_memory_limit(tmp_path, opened):
    cgroup = opened(str(v1_dir(tmp_path / "memory" / "x", pids=(5,))), 1)
    sample = cgroup.sample()
    assert sample.limit == 64 * MIB  # own limit unlimited, a parent's applies
    assert sample.current == 200 * MIB
    assert sample.inactive_file == 50 * MIB  # total_inactive_file, not the local inactive_file
    assert sample.working_set == 150 * MIB
    assert cgroup.events() == {"under_oom": 1, "oom_kill": 4, "failcnt": 17}
    assert cgroup.pressure() is None  # no memory.pressure on v1
    assert cgroup.pids() == [5]


def test_cgroup_dir_v1_own_limit_smaller_than_the_parents(tmp_path, opened):
    directory = v1_dir(tmp_path / "x", hierarchical=64 * MIB)
    (directory / "memory.limit_in_bytes").write_text(f"{32 * MIB}\n")
    assert opened(str(directory), 1).sample().limit == 32 * MIB


def test_cgroup_dir_v1_unlimited_everywhere(tmp_path, opened):
    directory = v1_dir(tmp_path / "x", hierarchical=int(V1_UNLIMITED))
    assert opened(str(directory), 1).sample().limit is None


def test_cgroup_dir_v1_events_without_oom_control(tmp_path, opened):
    directory = v1_dir(tmp_path / "x")
    (directory / "memory.oom_control").unlink()
    assert opened(str(directory), 1).events() == {"failcnt": 17}


def test_cgroup_dir_missing_file_is_a_cgroup_error_naming_it(tmp_path, opened):
    directory = v2_dir(tmp_path / "g")
    (directory / "memory.max").unlink()
    cgroup = opened(str(directory), 2)
    with pytest.raises(CgroupError, match=r"memory\.max") as info:
        cgroup.sample()
    assert info.value.errno == errno.ENOENT


def test_cgroup_dir_unparsable_file_is_an_error_that_does_not_echo_it(tmp_path, opened):
    directory = v2_dir(tmp_path / "g")
    (directory / "memory.current").write_bytes(b"token-s3cret\xff")
    with pytest.raises(CgroupError) as info:
        opened(str(directory), 2).sample()
    assert "s3cret" not in str(info.value) and "memory.current" in str(info.value)


def test_cgroup_dir_pressure_none_when_missing(tmp_path, opened):
    directory = v2_dir(tmp_path / "g")
    (directory / "memory.pressure").unlink()
    assert opened(str(directory), 2).pressure() is None


def test_cgroup_dir_open_missing_directory_is_a_cgroup_error(tmp_path):
    with pytest.raises(CgroupError, match="cannot open") as info:
        CgroupDir.open(str(tmp_path / "nope"), 2)
    assert info.value.errno == errno.ENOENT


def test_cgroup_dir_close_releases_the_fd(tmp_path):
    cgroup = CgroupDir.open(str(v2_dir(tmp_path / "g")), 2)
    fd = cgroup._fd
    os.fstat(fd)
    cgroup.close()
    with pytest.raises(OSError):
        os.fstat(fd)
    cgroup.close()  # twice is harmless


def test_subtree_pids_includes_child_cgroups(tmp_path, opened):
    top = v2_dir(tmp_path / "pod", pids=(1,))
    v2_dir(top / "a", pids=(2, 3))
    v2_dir(top / "a" / "deep", pids=(4,))
    v2_dir(top / "b", pids=())
    assert sorted(opened(str(top), 2).subtree_pids()) == [1, 2, 3, 4]


def test_cgroup_scanner_members_are_the_live_processes_of_the_subtree(tmp_path, opened):
    top = v2_dir(tmp_path / "pod", pids=(os.getpid(),))
    v2_dir(top / "child", pids=(os.getppid(),))
    found = CgroupScanner([opened(str(top), 2)]).scan()
    assert list(found) == [str(top)]
    assert sorted(info.pid for info in found[str(top)].members) == sorted(
        [os.getpid(), os.getppid()]
    )


# -- open_path -----------------------------------------------------------------------------------
def test_open_path_absolute_v2_dir(tmp_path):
    directory = v2_dir(tmp_path / "a" / "b")
    cgroup = open_path(str(directory) + "/", [])
    try:
        assert cgroup.version == 2
        assert cgroup.path == str(directory)
        assert cgroup.view == "host"
        assert cgroup.sample().limit == 128 * MIB
    finally:
        cgroup.close()


def test_open_path_absolute_v1_dir(tmp_path):
    cgroup = open_path(str(v1_dir(tmp_path / "x")), [])
    try:
        assert cgroup.version == 1
        assert cgroup.sample().limit == 64 * MIB
    finally:
        cgroup.close()


def test_open_path_relative_to_the_memory_mount(tmp_path):
    v2_dir(tmp_path / "mnt" / "my.slice")
    mount = Mount(str(tmp_path / "mnt"), "/", "cgroup2", ("rw",))
    cgroup = open_path("my.slice", [mount])
    try:
        assert cgroup.path == str(tmp_path / "mnt" / "my.slice")
    finally:
        cgroup.close()


def test_open_path_non_cgroup_dir_is_an_error(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(CgroupError, match="is not a memory cgroup"):
        open_path(str(tmp_path / "plain"), [])


# -- finding a pid's cgroup through its root view (synthetic /proc) ------------------------------
def fake_proc(tmp_path, pid, proc_cgroup, version=2):
    proc = tmp_path / "proc"
    write_files(proc / str(pid), {"cgroup": proc_cgroup})
    base = proc / str(pid) / "root" / "sys" / "fs" / "cgroup"
    return proc, (base / "memory" if version == 1 else base)


def test_root_view_with_a_cgroup_namespace_is_the_base(tmp_path):
    proc, base = fake_proc(tmp_path, 42, "0::/\n")
    v2_dir(base, pids=(42,))
    cgroup = open_root_view(42, Membership(2, "/"), proc=str(proc))
    try:
        assert cgroup.path == str(base)
        assert cgroup.view == "root"
    finally:
        cgroup.close()


def test_root_view_without_namespace_finds_the_nested_group_holding_the_pid(tmp_path):
    proc, base = fake_proc(tmp_path, 42, "0::/kubepods/pod1/ctr\n")
    v2_dir(base, pids=(1, 2))
    v2_dir(base / "ctr", pids=(7,))  # a same-named group elsewhere that does not hold 42
    v2_dir(base / "kubepods" / "pod1" / "ctr", pids=(41, 42))
    cgroup = open_root_view(42, Membership(2, "/kubepods/pod1/ctr"), proc=str(proc))
    try:
        assert cgroup.path == str(base / "kubepods" / "pod1" / "ctr")
    finally:
        cgroup.close()


def test_root_view_v1_looks_under_memory(tmp_path):
    proc, base = fake_proc(tmp_path, 42, "4:memory:/x\n0::/\n", version=1)
    v1_dir(base / "x", pids=(42,))
    write_files(base, {"cgroup.procs": ""})
    cgroup = open_for_pid(42, prefer_root_view=True, proc=str(proc))
    try:
        assert (cgroup.version, cgroup.view, cgroup.path) == (1, "root", str(base / "x"))
    finally:
        cgroup.close()


def test_root_view_that_does_not_list_the_pid_is_an_error(tmp_path):
    proc, base = fake_proc(tmp_path, 42, "0::/a\n")
    v2_dir(base, pids=(1,))
    v2_dir(base / "a", pids=(2,))
    with pytest.raises(CgroupError, match="pid 42 is not in any cgroup below"):
        open_root_view(42, Membership(2, "/a"), proc=str(proc))


def test_root_view_missing_is_an_error(tmp_path):
    proc, _ = fake_proc(tmp_path, 42, "0::/a\n")
    with pytest.raises(CgroupError, match="cannot open") as info:
        open_root_view(42, Membership(2, "/a"), proc=str(proc))
    assert info.value.errno == errno.ENOENT


def test_open_for_pid_of_a_gone_process_is_an_error(tmp_path):
    (tmp_path / "proc").mkdir()
    with pytest.raises(CgroupError, match="pid 42 is gone") as info:
        open_for_pid(42, prefer_root_view=True, proc=str(tmp_path / "proc"))
    assert info.value.errno == errno.ESRCH


def test_cgroup_dir_keeps_the_sampled_files_open(tmp_path, opened):
    # A sample is a pread on descriptors opened once: no open per sample, and the value read
    # is the file's as it is now.
    directory = v2_dir(tmp_path / "g")
    cgroup = opened(str(directory), 2)
    cgroup.sample()
    kept = set(cgroup._kept)
    assert kept == {"memory.current", "memory.max", "memory.stat"}
    (directory / "memory.max").write_text(f"{200 * MIB}\n")
    assert cgroup.sample().limit == 200 * MIB
    assert set(cgroup._kept) == kept
    cgroup.close()
    assert cgroup._kept == {}


def test_cgroup_dir_v2_sample_without_the_page_cache_skips_memory_stat(tmp_path, opened):
    directory = v2_dir(tmp_path / "g")
    (directory / "memory.stat").unlink()
    cgroup = opened(str(directory), 2)
    assert cgroup.sample(inactive_file=False) == MemorySample(96 * MIB, 128 * MIB, 0)
    with pytest.raises(CgroupError):
        cgroup.sample()
