"""Rootful podman in the qemu guest, on the images deploy/build-image made on the host.

The host's buildah storage (.cache/containers/storage) is podman's read-only additional image
store, over the guest's 9p share: loading an archive costs ~30 s under TCG (test_archive.py does
it once, into a storage of its own), the shared store nothing. The guest's own storage
(containers, the pause image) lives in its tmpfs /tmp. No systemd in the guest: cgroupfs (the
systemd cgroup manager needs systemd's bus: "crun: cannot open sd-bus"), events to a file, crun.

A busy machine makes podman slow, not wrong: what podman documents as transient is retried
(``podman``), tests wait on states, and every container's log is saved whatever happens.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import subprocess
from pathlib import Path

import logfmtkv

from tests.conftest import guest_version
from tests.helpers import wait_until

REPO = Path(__file__).resolve().parents[2]
STORE = REPO / ".cache" / "containers" / "storage"
RESULTS = REPO / "test-results" / "image"  # every container's log, per test
ARCHIVES = REPO / ".cache" / "image"  # deploy/build-image's archives and sizes.txt
CONF = Path("/tmp/oomhero-podman")
# podman 4.3 reads its events back from the events file to learn how an exec session ended; on
# a busy machine the event may not be there yet: "exec died event for session ... not found",
# exit 255, while the command itself ran. Such a run is tried again (the probes are read-only).
TRANSIENT = ("exec died event for session", "not found")
TRIES = 3


def require_guest() -> None:
    if guest_version() != "v2":
        raise RuntimeError("refusing to run podman outside the oomhero qemu guest (cgroup v2)")


# The guest's init chroots into its overlay (/root of the initramfs) instead of moving it onto
# / as a real boot's switch_root does. A container started from there works, but `podman exec`
# (crun's setns into the container's mount namespace) lands at that namespace's root, the
# initramfs, where no image file exists: "crun: executable file ... not found in $PATH" for any
# path. So this process takes a mount namespace of its own and does what switch_root does, once,
# before podman runs: every container and exec then sees a root file system as on a real node.
INITRAMFS_ROOT = "/proc/1/root"  # PID 1 is the guest's init, outside the chroot
OVERLAY = "/root"  # where guest/init mounted the overlay it chroots into
CLONE_NEWNS, MS_REC, MS_PRIVATE, MS_MOVE = 0x20000, 0x4000, 0x40000, 0x2000


def switch_root() -> None:
    libc = ctypes.CDLL(None, use_errno=True)

    def check(ret: int, what: str) -> None:
        if ret != 0:
            raise OSError(ctypes.get_errno(), f"{what}: {os.strerror(ctypes.get_errno())}")

    cwd = os.getcwd()
    # Into the initramfs first: unshare then moves root and cwd to the new namespace's copies
    # (/proc/1/root would name a mount of the old one).
    os.chroot(INITRAMFS_ROOT)
    os.chdir(OVERLAY)
    check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
    check(libc.mount(b".", b"/", None, MS_MOVE, None), f"mount --move {OVERLAY} /")
    os.chroot(".")
    os.chdir(cwd)


@functools.cache
def configure() -> dict[str, str]:
    """podman's configuration files for the guest; returns the environment naming them."""
    require_guest()
    switch_root()
    if not (STORE / "overlay-images" / "images.json").exists():
        raise RuntimeError(f"no images in {STORE}: run deploy/build-image on the host first")
    CONF.mkdir(exist_ok=True)
    (CONF / "storage.conf").write_text(
        '[storage]\ndriver = "overlay"\ngraphroot = "/tmp/containers/storage"\n'
        'runroot = "/run/containers/storage"\n'
        f'[storage.options]\nadditionalimagestores = ["{STORE}"]\n'
    )
    (CONF / "containers.conf").write_text(
        '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\nruntime = "crun"\n'
    )
    # slirp4netns (the pods' ports need a network other than none) needs /dev/net/tun.
    subprocess.run(["modprobe", "tun"], check=True)
    return {
        "CONTAINERS_CONF": str(CONF / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(CONF / "storage.conf"),
    }


def transient(result: subprocess.CompletedProcess) -> bool:
    return result.returncode == 255 and all(part in result.stderr for part in TRANSIENT)


def podman(
    *args: str, check: bool = True, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """podman ARGS; a run that failed transiently (see TRANSIENT) is tried again."""
    env = {**os.environ, **configure(), **(env or {})}
    for attempt in range(1, TRIES + 1):
        result = subprocess.run(
            ["podman", *args], capture_output=True, text=True, env=env, timeout=timeout
        )
        if not transient(result) or attempt == TRIES:
            break
        print(f"podman {args[0]}: transient failure, try {attempt + 1}: {result.stderr[-300:]}")
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: exit {result.returncode}: {result.stderr}")
    return result


def allow_devices(pod: str) -> None:
    """podman 4.3 with cgroupfs on cgroup v2 attaches a deny-all device program to the pod's
    cgroup, so crun's mknod of /dev/null fails in every container of the pod ("crun: mknod
    `/dev/null`: Operation not permitted"); each container's own device program still applies
    below it. Detach the pod-level one, as systemd's cgroup manager never adds it."""
    cgroup = podman("pod", "inspect", pod, "--format", "{{.CgroupPath}}").stdout.strip()
    path = f"/sys/fs/cgroup{cgroup}"
    shown = subprocess.run(
        ["bpftool", "-j", "cgroup", "show", path], capture_output=True, text=True, check=True
    )
    for prog in json.loads(shown.stdout or "[]"):
        if prog["attach_type"] == "cgroup_device":
            detach = ["bpftool", "cgroup", "detach", path, "cgroup_device", "id", str(prog["id"])]
            subprocess.run(detach, check=True)


def play(manifest: Path, network: str = "slirp4netns", first: str | None = None) -> str:
    """podman kube play MANIFEST, started once its devices are allowed; returns the pod name.
    ``first``: that container is started alone, and the others once its /healthz answers (its
    first scan is done): a sidecar slowed down by a busy machine would otherwise see the app
    only once it has grown, which is what a native sidecar's startup probe prevents."""
    podman("kube", "play", "--start=false", "--network", network, str(manifest))
    (pod,) = podman("pod", "ps", "--format", "{{.Name}}").stdout.split()
    allow_devices(pod)
    if first is not None:
        podman("start", f"{pod}-{first}")
        wait_for(lambda: healthy(f"{pod}-{first}"), 180, f"{first}'s /healthz")
    podman("pod", "start", pod)
    return pod


def healthy(container: str, port: int = 9090, path: str = "/healthz") -> bool:
    """oomhero's /healthz answers 200 (asked from inside: the pod's network is its own)."""
    code = f"import urllib.request as u; u.urlopen('http://127.0.0.1:{port}{path}', timeout=2)"
    run = podman("exec", container, "/opt/oomhero/bin/python", "-c", code, check=False)
    return run.returncode == 0


def remove_pods() -> None:
    podman("pod", "rm", "--all", "--force", "--time", "0", check=False)
    podman("rm", "--all", "--force", "--time", "0", check=False)


def save_logs(directory: Path) -> None:
    """Every container's podman logs, one file each, and the pods' state beside them. Each
    step on its own: one that fails (a container gone meanwhile) leaves the others' files."""
    directory.mkdir(parents=True, exist_ok=True)
    names = podman("ps", "-a", "--format", "{{.Names}}", check=False).stdout.split()
    for name in names:
        try:
            text = "\n".join(logs(name, check=False)) + "\n"
        except Exception as exc:
            text = f"podman logs {name} failed: {exc!r}\n"
        (directory / f"{name}.log").write_text(text)
    try:
        text = state()
    except Exception as exc:
        text = f"state unknown: {exc!r}"
    (directory / "state.txt").write_text(text + "\n")


def wait_for(predicate, timeout: float, what: str, step: float = 1.0):
    """``wait_until`` at 1 s steps, the pods' state added to a failure."""
    return wait_until(predicate, what, timeout, step, explain=state)


def note(line: str) -> None:
    """A figure worth keeping from a passing run too (load times, memory peaks), printed and
    added to test-results/image/figures.txt."""
    print(line)
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "figures.txt", "a") as f:
        f.write(line + "\n")


def cgroup_of(container: str) -> Path:
    return Path("/sys/fs/cgroup" + inspect(container, "{{.State.CgroupPath}}"))


def memory_peak(container: str) -> int | None:
    """The container's peak memory (memory.peak, kernel 5.19+: page cache and every process
    that ran in it, a test's exec'd probe too)."""
    try:
        return int((cgroup_of(container) / "memory.peak").read_text())
    except (OSError, ValueError):
        return None


def peak_rss(container: str) -> int | None:
    """The peak resident memory of the container's main process (VmHWM): oomhero's own."""
    pid = inspect(container, "{{.State.Pid}}")
    with contextlib.suppress(OSError, ValueError, StopIteration):
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        return int(next(ln for ln in status if ln.startswith("VmHWM:")).split()[1]) * 1024
    return None


def logs(container: str, check: bool = True) -> list[str]:
    result = podman("logs", container, check=check)
    return (result.stdout + result.stderr).splitlines()


def text_records(lines: list[str]) -> list[dict[str, str]]:
    """oomhero's text log lines (logfmt, read as go-logfmt reads it): {"msg": ..., field: value}."""
    return [logfmtkv.parse(line, strict=True) for line in lines if line.startswith("time=")]


def json_records(lines: list[str]) -> list[dict]:
    return [json.loads(line) for line in lines if line.startswith("{")]


def inspect(container: str, template: str) -> str:
    return podman("inspect", container, "--format", template).stdout.strip()


def state() -> str:
    """What every container of the pods is doing: for a test's failure message."""
    lines = [podman("ps", "-a", "--format", "{{.Names}} {{.Status}}", check=False).stdout]
    for name in podman("ps", "--format", "{{.Names}}", check=False).stdout.split():
        pid = podman("inspect", name, "--format", "{{.State.Pid}}", check=False).stdout.strip()
        for task in Path(f"/proc/{pid}/task").glob("*"):
            with contextlib.suppress(OSError):
                stat = (task / "stat").read_text().split(") ")[-1].split()[0]
                wchan = (task / "wchan").read_text()
                comm = (task / "comm").read_text().strip()
                lines.append(f"{name} {pid}/{task.name} {comm} {stat} {wchan}")
    return "\n".join(lines)
