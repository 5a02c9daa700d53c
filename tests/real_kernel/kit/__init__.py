"""The guest tests' kit, split by concern. Everything here that writes to /sys/fs/cgroup first
checks that this is the oomhero qemu guest and refuses otherwise."""

from tests.real_kernel.kit.cgroups import (
    TEST_ROOT,
    Cgroup,
    cgroup_base,
    make_cgroup,
    remove_test_cgroups,
)
from tests.real_kernel.kit.guest import MIB, REPO, log_time, read_jsonl, require_guest, wait_for
from tests.real_kernel.kit.pod import Container, Pod, oomhero_container
from tests.real_kernel.kit.processes import (
    WORKLOAD,
    Workload,
    bloat_argv,
    oomhero,
    signals_handled,
)
from tests.real_kernel.kit.watcher import Watcher

__all__ = [
    "MIB",
    "REPO",
    "TEST_ROOT",
    "WORKLOAD",
    "Cgroup",
    "Container",
    "Pod",
    "Watcher",
    "Workload",
    "bloat_argv",
    "cgroup_base",
    "log_time",
    "make_cgroup",
    "oomhero",
    "oomhero_container",
    "read_jsonl",
    "remove_test_cgroups",
    "require_guest",
    "signals_handled",
    "wait_for",
]
