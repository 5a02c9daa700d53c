"""Command line: wires settings, scanners, the engine and the reports together."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable

from rich.console import Console

from oomhero import __version__, bloat, demo, doctor, log, node, runner, status
from oomhero.cgroup import CgroupError
from oomhero.config import (
    METRICS,
    SIGNAL_TARGETS,
    ConfigError,
    Setting,
    WatchSettings,
    build_watch_settings,
    parse_choice,
    parse_count,
    parse_duration,
    parse_port,
    parse_size,
    parse_url,
)
from oomhero.engine import Engine
from oomhero.metrics import Metrics
from oomhero.metrics import serve as serve_metrics
from oomhero.targets import CgroupScanner, PodScanner, resolve_cgroup
from oomhero.webhook import Webhook

# Setting → environment variable. The first five are OOMHero's, so its pod.yaml works unchanged.
ENV_NAMES = {
    "warning": "WARNING",
    "critical": "CRITICAL",
    "cooldown": "COOLDOWN",
    "warning_signal": "WARNING_SIGNAL",
    "critical_signal": "CRITICAL_SIGNAL",
    "hysteresis": "OOMHERO_HYSTERESIS",
    "interval": "OOMHERO_INTERVAL",
    "poll_floor": "OOMHERO_POLL_FLOOR",
    "poll_ceiling": "OOMHERO_POLL_CEILING",
    "poll_burst": "OOMHERO_POLL_BURST",
    "sources": "OOMHERO_SOURCES",
    "bpf_signal": "OOMHERO_BPF_SIGNAL",
    "psi": "OOMHERO_PSI",
    "warning_psi": "OOMHERO_WARNING_PSI",
    "critical_psi": "OOMHERO_CRITICAL_PSI",
    "metric": "OOMHERO_METRIC",
    "signal_target": "OOMHERO_SIGNAL_TARGET",
    "signal_uncaught": "OOMHERO_SIGNAL_UNCAUGHT",
}
LOG_FORMAT_ENV = "OOMHERO_LOG_FORMAT"
LOG_LEVEL_ENV = "OOMHERO_LOG_LEVEL"
KNOWN_ENV = set(ENV_NAMES.values()) | {
    LOG_FORMAT_ENV,
    LOG_LEVEL_ENV,
    "OOMHERO_METRICS_ADDRESS",
    "OOMHERO_NODE_CGROUP_ROOT",
    "OOMHERO_WEBHOOK",
    "OOMHERO_WEBHOOK_TIMEOUT",
    "OOMHERO_WEBHOOK_RETRIES",
}

DESCRIPTION = """\
oomhero watches memory cgroups and signals their processes before the OOM killer does:
SIGUSR1 when usage crosses the warning share of the limit, SIGUSR2 at the critical share.

With no command it runs as a Kubernetes sidecar (pod with shareProcessNamespace: true),
configured by the env vars WARNING, CRITICAL, COOLDOWN, WARNING_SIGNAL, CRITICAL_SIGNAL."""

EPILOG = """\
examples:
  oomhero demo                                  see it work, on any Linux
  oomhero                                       sidecar mode (env vars or flags)
  WARNING=65 CRITICAL=90 COOLDOWN=10s oomhero   OOMHero's settings, unchanged
  oomhero status                                memory cgroups of this machine
  oomhero watch /sys/fs/cgroup/my.slice 1234    watch a cgroup and a PID's cgroup
  oomhero run --memory 256M -- python app.py    run a command under a limit, watched
  oomhero top /sys/fs/cgroup/my.slice           the same, as a live view
  oomhero node --all                            node agent: every container under kubepods
  oomhero doctor                                what this kernel supports"""


def _add_watch_flags(parser: argparse.ArgumentParser, defaults: WatchSettings, env: bool) -> None:
    from_env = " (env {})" if env else ""
    group = parser.add_argument_group(
        "thresholds and signals" + (" (flags beat env vars)" if env else "")
    )

    def flag(key: str, *names: str, help: str, metavar: str | None = None) -> None:
        text = help + (from_env.format(ENV_NAMES[key]) if env else "")
        group.add_argument(*names, dest=key, metavar=metavar, help=text)

    flag(
        "warning",
        "--warning",
        metavar="PCT",
        help=f"warning threshold, percent of the limit (default {defaults.warning:g})",
    )
    flag(
        "critical",
        "--critical",
        metavar="PCT",
        help=f"critical threshold, percent of the limit (default {defaults.critical:g})",
    )
    flag(
        "cooldown",
        "--cooldown",
        metavar="DUR",
        help="repeat the signal this often while usage stays above (500ms, 10s, 2m, or "
        "whole seconds; 0: once per crossing; default 30s)",
    )
    flag(
        "hysteresis",
        "--hysteresis",
        metavar="PTS",
        help="re-arm a level only below its threshold minus this many points (default 5)",
    )
    flag(
        "warning_signal",
        "--warning-signal",
        metavar="SIG",
        help="signal at warning: a name (SIGUSR1, usr1) or number (default SIGUSR1)",
    )
    flag(
        "critical_signal",
        "--critical-signal",
        metavar="SIG",
        help="signal at critical (default SIGUSR2)",
    )
    wake = parser.add_argument_group("wake-ups" + (" (flags beat env vars)" if env else ""))

    def wake_flag(key: str, *names: str, help: str, metavar: str | None = None) -> None:
        text = help + (from_env.format(ENV_NAMES[key]) if env else "")
        wake.add_argument(*names, dest=key, metavar=metavar, help=text)

    wake_flag(
        "interval",
        "--interval",
        metavar="DUR",
        help="fixed polling every DUR, as OOMHero does (1s); default: adaptive polling",
    )
    wake_flag(
        "poll_floor",
        "--poll-floor",
        metavar="DUR",
        help="adaptive polling: never sample more often than this (default 10ms)",
    )
    wake_flag(
        "poll_ceiling",
        "--poll-ceiling",
        metavar="DUR",
        help="adaptive polling: sample at least this often (default 1s)",
    )
    wake_flag(
        "poll_burst",
        "--poll-burst",
        metavar="RATE",
        help="adaptive polling: assume a target may start growing this fast (bytes/s) unseen, "
        "and sample a small one often enough to catch that (default 1G; 0: follow only the "
        "measured rate, one sample per ceiling while idle)",
    )
    wake_flag(
        "sources",
        "--sources",
        metavar="LIST",
        help="kernel event sources: a list of inotify (v2 memory.events), psi (memory.pressure "
        "trigger), eventfd (v1 thresholds), ebpf (a probe on the charge path: needs bcc, kernel "
        "headers, root), or all, or none (default inotify,psi,eventfd)",
    )
    wake.add_argument(
        "--bpf-signal",
        dest="bpf_signal",
        action="store_const",
        const="1",
        help="the eBPF probe sends the critical signal itself, to the process whose allocation "
        "crosses the threshold, before that allocation returns (implies the ebpf source)"
        + (from_env.format(ENV_NAMES["bpf_signal"]) if env else ""),
    )
    wake_flag(
        "psi",
        "--psi",
        metavar="TRIGGER",
        help="the PSI trigger, some|full:STALL/WINDOW (default some:150ms/1s), or off",
    )
    wake_flag(
        "warning_psi",
        "--warning-psi",
        metavar="COND",
        help="memory pressure that counts as warning too, e.g. some_avg10>20",
    )
    wake_flag(
        "critical_psi",
        "--critical-psi",
        metavar="COND",
        help="memory pressure that counts as critical too, e.g. some_avg10>40",
    )
    flag(
        "metric",
        "--metric",
        metavar="|".join(METRICS),
        help="usage: memory.current; working-set: usage minus inactive_file, as kubelet "
        "counts it (default usage)",
    )
    flag(
        "signal_target",
        "--signal-target",
        metavar="|".join(SIGNAL_TARGETS),
        help="all: every process of the container; main: its topmost process (default all)",
    )
    group.add_argument(
        "--signal-uncaught",
        dest="signal_uncaught",
        action="store_const",
        const="1",
        help="also signal processes that have no handler for the signal, as OOMHero does "
        "(SIGUSR1/SIGUSR2 then terminate them); default: only those whose /proc/PID/status "
        "SigCgt catches it" + (from_env.format(ENV_NAMES["signal_uncaught"]) if env else ""),
    )
    group.add_argument(
        "--log-format",
        metavar="text|json",
        help="log line format (default text)" + (f" (env {LOG_FORMAT_ENV})" if env else ""),
    )
    group.add_argument(
        "--log-level",
        metavar="info|debug",
        help="debug adds a line per sample, with what woke it and when the next is due "
        "(default info)" + (f" (env {LOG_LEVEL_ENV})" if env else ""),
    )


OUTPUT_ENV = {
    "metrics_port": "METRICS_PORT",
    "metrics_address": "OOMHERO_METRICS_ADDRESS",
    "webhook": "OOMHERO_WEBHOOK",
    "webhook_timeout": "OOMHERO_WEBHOOK_TIMEOUT",
    "webhook_retries": "OOMHERO_WEBHOOK_RETRIES",
}


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("metrics and webhook (flags beat env vars)")
    group.add_argument(
        "--metrics-port",
        metavar="PORT",
        help="serve Prometheus /metrics and readiness /healthz on this port "
        "(default: off) (env METRICS_PORT)",
    )
    group.add_argument(
        "--metrics-address",
        metavar="ADDR",
        help="address to serve them on (default: 0.0.0.0 in sidecar and node mode, scraped "
        "from outside the pod; 127.0.0.1 for the commands run by hand) "
        "(env OOMHERO_METRICS_ADDRESS)",
    )
    group.add_argument(
        "--webhook",
        metavar="URL",
        help="POST a JSON body (target, level, usage, limit, time) for every "
        "crossing, beside the signals (env OOMHERO_WEBHOOK)",
    )
    group.add_argument(
        "--webhook-timeout",
        metavar="DUR",
        help="per attempt (default 2s) (env OOMHERO_WEBHOOK_TIMEOUT)",
    )
    group.add_argument(
        "--webhook-retries",
        metavar="N",
        help="retries after a failed attempt, with backoff 0.5s, 1s, 2s… "
        "(default 3) (env OOMHERO_WEBHOOK_RETRIES)",
    )


def default_metrics_address(command: str) -> str:
    """In a pod, Prometheus scrapes the pod's IP from outside: every interface. A command run by
    hand (watch, top) is often on a laptop: this machine only."""
    return "0.0.0.0" if command in ("sidecar", "node") else "127.0.0.1"


def start_outputs(args: argparse.Namespace, engine: Engine) -> list:
    """Attach metrics and webhook to the engine as configured; returns what needs closing."""
    raw = {}
    for key, env_name in OUTPUT_ENV.items():
        if getattr(args, key, None) is not None:
            raw[key] = ("--" + key.replace("_", "-"), getattr(args, key))
        elif env_name in os.environ:
            raw[key] = (env_name, os.environ[env_name])
    closers = []
    if "metrics_port" in raw:
        port = parse_port(*raw["metrics_port"])
        address = raw.get("metrics_address", (None, default_metrics_address(args.command)))[1]
        metrics = Metrics()
        try:
            server = serve_metrics(metrics, lambda: engine.scanned_once, address, port)
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on {address}:{port}: {exc.strerror}") from None
        engine.listeners.append(metrics)
        closers.append(server.shutdown)
        log.event(20, "serving metrics", address=address, port=port, paths="/metrics /healthz")
    elif "metrics_address" in raw:
        raise ConfigError(f"{raw['metrics_address'][0]} needs a metrics port (--metrics-port)")
    if "webhook" in raw:
        url = parse_url(*raw["webhook"])
        timeout = parse_duration(*raw.get("webhook_timeout", ("--webhook-timeout", "2s")), 0.1, 60)
        retries = parse_count(*raw.get("webhook_retries", ("--webhook-retries", "3")), most=10)
        webhook = Webhook(url, timeout, retries)
        engine.listeners.append(webhook)
        closers.append(webhook.close)
    else:
        for key in ("webhook_timeout", "webhook_retries"):
            if key in raw:
                raise ConfigError(f"{raw[key][0]} needs a webhook URL (--webhook)")
    return closers


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oomhero",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"oomhero {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    defaults = WatchSettings()

    p = sub.add_parser(
        "sidecar",
        help="watch every other container of the pod (the default)",
        description="Watch every process of this PID namespace except oomhero's own "
        "container and the pause process, one target per memory cgroup, read through "
        "/proc/<pid>/root/sys/fs/cgroup.",
    )
    _add_watch_flags(p, defaults, env=True)
    add_output_flags(p)

    p = sub.add_parser(
        "watch",
        help="watch chosen cgroups or PIDs (host view)",
        description="Watch cgroups (a path, absolute or below the memory hierarchy's "
        "mount) or the memory cgroup of PIDs, with the sidecar's engine.",
    )
    p.add_argument("targets", nargs="+", metavar="CGROUP|PID")
    _add_watch_flags(p, defaults, env=True)
    add_output_flags(p)

    p = sub.add_parser(
        "top",
        help="watch as watch does, with a live view instead of log lines",
        description="The watch engine (it signals, as watch does) with a live view: usage "
        "against the limit and its marks, the last minute, level, last signal, wake-up sources, "
        "PSI. Keys: s sort, r reverse, q quit. Targets default to what sidecar mode would watch.",
    )
    p.add_argument("targets", nargs="*", metavar="CGROUP|PID")
    _add_watch_flags(p, defaults, env=True)
    add_output_flags(p)

    p = sub.add_parser(
        "node",
        help="one agent per node: every opted-in container under kubepods",
        description=node.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--cgroup-root",
        metavar="PATH",
        help="where the host's cgroup tree is mounted (default /sys/fs/cgroup) "
        "(env OOMHERO_NODE_CGROUP_ROOT)",
    )
    p.add_argument(
        "--all",
        action="store_true",
        dest="watch_all",
        help="watch every container, not only those that opt in by env",
    )
    p.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="GLOB",
        help="also watch containers whose cgroup path (below the root) matches",
    )
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="never watch containers whose cgroup path matches (beats the rest)",
    )
    _add_watch_flags(p, defaults, env=True)
    add_output_flags(p)

    p = sub.add_parser(
        "status",
        help="table of memory cgroups: usage, limit, events, PSI",
        description="Usage, limit, percent, working set, memory.events counters and "
        "PSI avg10 of the given cgroups/PIDs, or of every process's cgroup.",
    )
    p.add_argument("targets", nargs="*", metavar="CGROUP|PID")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser(
        "run",
        help="run a command under a memory limit, watched",
        description=runner.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--memory", required=True, metavar="SIZE", help="the limit: 256M, 1G, 512MiB")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")
    _add_watch_flags(p, defaults, env=True)

    p = sub.add_parser(
        "doctor",
        help="what this machine supports, and can oomhero read/signal targets",
        description="Each line: ok or missing, and why. Targets default to what sidecar "
        "mode would watch.",
    )
    p.add_argument("targets", nargs="*", metavar="CGROUP|PID")

    demo_defaults = WatchSettings(warning=65, critical=90)
    p = sub.add_parser(
        "demo",
        help="see it work: the bloat app under a limit, end to end",
        description=demo.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--memory", default="128M", metavar="SIZE", help="the app's limit (default 128M)"
    )
    p.add_argument(
        "--rate", default="32M", metavar="SIZE", help="app growth per second (default 32M)"
    )
    p.add_argument("--timeout", default="60s", metavar="DUR", help="give up after (default 60s)")
    _add_watch_flags(p, demo_defaults, env=False)
    p.set_defaults(watch_defaults=demo_defaults)

    p = sub.add_parser(
        "bloat",
        help="the example app: grows, frees on SIGUSR1, fails /healthz on SIGUSR2",
        description=bloat.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bloat.build_parser(p)
    return parser


def gather_settings(args: argparse.Namespace, use_env: bool) -> WatchSettings:
    """Flags first, then (if allowed) env vars; every present value is validated."""
    raw: dict[str, Setting] = {}
    for key, env_name in ENV_NAMES.items():
        flag_value = getattr(args, key, None)
        if flag_value is not None:
            raw[key] = Setting("--" + key.replace("_", "-"), flag_value)
        elif use_env and env_name in os.environ:
            raw[key] = Setting(env_name, os.environ[env_name])
    return build_watch_settings(raw, getattr(args, "watch_defaults", WatchSettings()))


def setup_logging(args: argparse.Namespace, use_env: bool) -> None:
    """--log-format / --log-level, else their env vars (where allowed), else text / info."""
    chosen = {}
    for flag, env_name, choices in (
        ("log_format", LOG_FORMAT_ENV, ("text", "json")),
        ("log_level", LOG_LEVEL_ENV, ("info", "debug")),
    ):
        if getattr(args, flag) is not None:
            chosen[flag] = parse_choice("--" + flag.replace("_", "-"), getattr(args, flag), choices)
        elif use_env and env_name in os.environ:
            chosen[flag] = parse_choice(env_name, os.environ[env_name], choices)
        else:
            chosen[flag] = choices[0]
    log.setup(chosen["log_format"], debug=chosen["log_level"] == "debug")


def check_unknown_env() -> None:
    # OOMHERO_GUEST_* belong to the test harness (guest/run), not to oomhero.
    unknown = sorted(
        k
        for k in os.environ
        if k.startswith("OOMHERO_") and not k.startswith("OOMHERO_GUEST_") and k not in KNOWN_ENV
    )
    if unknown:
        raise ConfigError(
            f"unknown setting {', '.join(unknown)} (known: {', '.join(sorted(KNOWN_ENV))})"
        )


def cmd_engine(args: argparse.Namespace, scanner_factory: Callable) -> int:
    settings = gather_settings(args, use_env=True)
    setup_logging(args, use_env=True)
    scanner = scanner_factory()
    log.event(
        20,
        "oomhero started",
        mode=args.command,
        warning=settings.warning,
        critical=settings.critical,
        cooldown=settings.cooldown,
        polling="fixed" if settings.interval else "adaptive",
        interval=settings.interval,
        sources=",".join(settings.sources) or "none",
        psi=settings.psi.text() if settings.psi else "off",
        metric=settings.metric,
        signal_target=settings.signal_target,
        signal_uncaught=settings.signal_uncaught,
        warning_signal=settings.warning_signal.name,
        critical_signal=settings.critical_signal.name,
    )
    engine = Engine(scanner, settings)
    closers = []
    try:
        closers = start_outputs(args, engine)
        engine.run()
    finally:
        engine.close()
        for close in closers:
            close()
    log.event(20, "oomhero stopped", samples_by_wakeup=dict(engine.wakeups))
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    gather_settings(args, use_env=True)  # bad settings are reported before bad targets
    cgroups = []
    for spec in args.targets:
        try:
            cgroups.append(resolve_cgroup(spec))
        except CgroupError as exc:
            raise ConfigError(f"cannot watch {spec!r}: {exc.strerror}") from None
    return cmd_engine(args, lambda: CgroupScanner(cgroups))


def cmd_top(args: argparse.Namespace) -> int:
    from oomhero import top

    settings = gather_settings(args, use_env=True)
    cgroups = []
    for spec in args.targets:
        try:
            cgroups.append(resolve_cgroup(spec))
        except CgroupError as exc:
            raise ConfigError(f"cannot watch {spec!r}: {exc.strerror}") from None
    setup_logging(args, use_env=True)
    engine = Engine(CgroupScanner(cgroups) if cgroups else PodScanner(), settings)
    closers = []
    try:
        closers = start_outputs(args, engine)
        return top.run(engine)
    finally:
        engine.close()
        for close in closers:
            close()


def cmd_node(args: argparse.Namespace) -> int:
    settings = gather_settings(args, use_env=True)
    root = args.cgroup_root or os.environ.get("OOMHERO_NODE_CGROUP_ROOT", "/sys/fs/cgroup")
    try:
        scanner = node.NodeScanner(root, settings, args.watch_all, args.include, args.exclude)
    except CgroupError as exc:
        raise ConfigError(f"--cgroup-root: {exc.strerror}") from None
    return cmd_engine(args, lambda: scanner)


def cmd_run(args: argparse.Namespace) -> int:
    command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not command:
        raise ConfigError(
            "run needs a command after --, e.g. oomhero run --memory 256M -- python app.py"
        )
    limit = parse_size("--memory", args.memory)
    settings = gather_settings(args, use_env=True)
    setup_logging(args, use_env=True)
    try:
        placement = runner.start(command, limit)
    except FileNotFoundError:
        print(f"oomhero: error: command not found: {command[0]}", file=sys.stderr)
        return 127
    if placement.enforced:
        log.event(
            20, "running under a cgroup v2 limit", pid=placement.process.pid, how=placement.why
        )
    else:
        log.event(
            30,
            "SOFT LIMIT: watching the process tree's RSS, the kernel does not enforce it",
            pid=placement.process.pid,
            why=placement.why,
        )
    engine = Engine(placement.scanner, settings)
    try:
        engine.run(until=lambda: placement.process.poll() is not None)
    finally:
        engine.close()
        if placement.process.poll() is None:  # oomhero was told to stop: pass it on
            placement.process.terminate()
        try:
            code = placement.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            placement.process.kill()
            code = placement.process.wait()
        placement.cleanup()
    return code if code >= 0 else 128 - code


def cmd_status(args: argparse.Namespace) -> int:
    rows = status.collect(args.targets)
    if args.json:
        print(status.to_json(rows))
    else:
        # Piped output has no terminal width to wrap to: keep paths on one line.
        status.render(rows, Console(width=None if sys.stdout.isatty() else 200))
    return 1 if any(row.error for row in rows) and args.targets else 0


def cmd_doctor(args: argparse.Namespace) -> int:
    checks = doctor.machine_checks()
    if args.targets:
        cgroups = []
        for spec in args.targets:
            try:
                cgroups.append(resolve_cgroup(spec))
            except CgroupError as exc:
                checks.append(doctor.Check(f"target {spec}", False, exc.strerror))
        found = CgroupScanner(cgroups).scan()
    else:
        found = PodScanner().scan()
    checks += doctor.target_checks(found, gather_settings(args, use_env=True))
    if not found:
        checks.append(doctor.Check("targets", False, "none found to watch"))
    for check in checks:
        print(check.line())
    memory = next(c for c in checks if c.name == "memory controller")
    return 0 if memory.ok else 1


def cmd_demo(args: argparse.Namespace) -> int:
    settings = gather_settings(args, use_env=False)
    memory = parse_size("--memory", args.memory)
    rate = parse_size("--rate", args.rate)
    timeout = parse_duration("--timeout", args.timeout, 1, 3600)
    setup_logging(args, use_env=False)
    return demo.run_demo(memory, rate, settings, timeout)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv.insert(0, "sidecar")
    args = build_parser().parse_args(argv)
    handlers = {
        "sidecar": lambda a: cmd_engine(a, PodScanner),
        "watch": cmd_watch,
        "node": cmd_node,
        "top": cmd_top,
        "run": cmd_run,
        "status": cmd_status,
        "doctor": cmd_doctor,
        "demo": cmd_demo,
        "bloat": bloat.run_from_args,
    }
    try:
        check_unknown_env()
        return handlers[args.command](args)
    except ConfigError as exc:
        print(f"oomhero: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
