"""What the commands share: settings from flags and env, logging, targets, the engine's run."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from oomhero import log
from oomhero.config import (
    ConfigError,
    Setting,
    WatchSettings,
    build_watch_settings,
    parse_address,
    parse_choice,
    parse_count,
    parse_duration,
    parse_headers,
    parse_port,
    parse_token,
    parse_url,
    parse_watch_value,
    read_token_file,
)
from oomhero.config.table import (
    LOG_FLAGS,
    OUTPUT_FLAGS,
    POD_ENV,
    WATCH_FLAGS,
    WEBHOOK_TOKEN_ENV,
    Flag,
    given,
    overridden,
)
from oomhero.engine import Engine
from oomhero.kernel.cgroup import CgroupDir, CgroupError
from oomhero.targets import Scanner
from oomhero.targets.cgroups import resolve_cgroup
from oomhero.targets.node import CONTAINER_ENV


def gather_settings(args: argparse.Namespace, use_env: bool) -> WatchSettings:
    """Flags first, then (if allowed) env vars; every present value is validated, an env var
    that a flag overrides too."""
    check_overridden(args, WATCH_FLAGS, use_env, parse_watch_value)
    raw = given(args, WATCH_FLAGS, use_env)
    return build_watch_settings(raw, getattr(args, "watch_defaults", WatchSettings()))


def check_overridden(
    args: argparse.Namespace,
    flags: tuple[Flag, ...],
    use_env: bool,
    parse: Callable[[str, Setting], object],
    environ: Mapping[str, str] = os.environ,
) -> None:
    """An env var that a flag overrides is unused, but a bad value is still an error: it is a
    broken deployment, waiting for the day the flag goes."""
    for key, (setting, flag) in overridden(args, flags, use_env, environ).items():
        try:
            parse(key, setting)
        except ConfigError as exc:
            raise ConfigError(f"{exc} ({flag.flag} overrides it, but fix or remove it)") from None


# The modes that run in a pod. They log to stdout: log agents (GKE's, among others) mark every
# stderr line as an error. Commands run by hand log to stderr, the CLI's convention, which
# keeps stdout for what they show (top's view).
CONTAINER_MODES = ("sidecar", "node")


LOG_CHOICES = {"log_format": ("text", "json"), "log_level": ("info", "debug")}


def setup_logging(args: argparse.Namespace, use_env: bool) -> None:
    """--log-format / --log-level, else their env vars (where allowed), else text / info."""

    def parse(key: str, setting: Setting) -> str:
        return parse_choice(setting.name, setting.raw, LOG_CHOICES[key])

    check_overridden(args, LOG_FLAGS, use_env, parse)
    raw = given(args, LOG_FLAGS, use_env)
    chosen = {
        key: parse(key, raw[key]) if key in raw else choices[0]
        for key, choices in LOG_CHOICES.items()
    }
    stream = sys.stdout if args.command in CONTAINER_MODES else sys.stderr
    log.setup(chosen["log_format"], stream, debug=chosen["log_level"] == "debug")


def resolve_targets(specs: list[str]) -> list[CgroupDir]:
    """CLI targets (cgroup paths or PIDs); one that cannot be watched is a usage error: every
    file oomhero may use in it is checked, and a first sample read, before anything starts."""
    cgroups: list[CgroupDir] = []
    for spec in specs:
        try:
            cgroups.append(resolve_cgroup(spec))
            trial = cgroups[-1].duplicate()  # keeps no file open once read
            try:
                trial.verify()  # a file mounted over is refused now, not once watching
                trial.sample()
            finally:
                trial.close()
        except CgroupError as exc:
            for cgroup in cgroups:
                cgroup.close()
            raise ConfigError(f"cannot watch {spec!r}: {exc.strerror}") from None
    return cgroups


@dataclass(frozen=True)
class Outputs:
    """The metrics and webhook settings, parsed and checked before anything starts."""

    metrics_port: int | None = None
    metrics_address: str = "127.0.0.1"
    webhook: str | None = None
    webhook_timeout: float = 2.0
    webhook_retries: int = 3
    webhook_headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    webhook_token: str | None = field(default=None, repr=False)
    webhook_token_file: str | None = None
    pod: tuple[str, ...] = ("", "", "")  # sidecar: its pod's namespace, name and UID


def default_metrics_address(command: str) -> str:
    """In a pod, Prometheus scrapes the pod's IP from outside: every interface. A command run by
    hand (watch, top, run) is often on a laptop: this machine only."""
    return "0.0.0.0" if command in CONTAINER_MODES else "127.0.0.1"


# Each output setting's parser; a setting that needs another (the webhook's need --webhook) is
# refused without it.
_OUTPUT_PARSERS: dict[str, Callable[[str, str], object]] = {
    "metrics_port": parse_port,
    "metrics_address": parse_address,
    "webhook": parse_url,
    "webhook_timeout": lambda n, r: parse_duration(n, r, 0.1, 60),
    "webhook_retries": lambda n, r: parse_count(n, r, most=10),
    "webhook_header": parse_headers,
    "webhook_token_file": read_token_file,  # read now: a missing Secret fails the start
}
_NEEDS = {"metrics_address": "metrics_port"} | {
    key: "webhook" for key in _OUTPUT_PARSERS if key.startswith("webhook_")
}


def parse_outputs(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> Outputs:
    check_overridden(
        args, OUTPUT_FLAGS, True, lambda key, s: _OUTPUT_PARSERS[key](s.name, s.raw), environ
    )
    raw = given(args, OUTPUT_FLAGS, use_env=True, environ=environ)
    values = {key: _OUTPUT_PARSERS[key](s.name, s.raw) for key, s in raw.items()}
    for key, needed in _NEEDS.items():
        if key in raw and needed not in raw:
            flag = next(f for f in OUTPUT_FLAGS if f.key == needed)
            raise ConfigError(f"{raw[key].name} needs {flag.flag} ({flag.env})")
    token = environ.get(WEBHOOK_TOKEN_ENV)
    if token is not None:
        if "webhook" not in raw:
            raise ConfigError(f"{WEBHOOK_TOKEN_ENV} needs --webhook (OOMHERO_WEBHOOK)")
        if "webhook_token_file" in raw:
            raise ConfigError(
                f"{WEBHOOK_TOKEN_ENV} and {raw['webhook_token_file'].name} both give the "
                "webhook's token: keep one"
            )
        token = parse_token(WEBHOOK_TOKEN_ENV, token)
    headers = values.pop("webhook_header", ())
    if (token is not None or "webhook_token_file" in raw) and any(
        name.lower() == "authorization" for name, _ in headers
    ):
        raise ConfigError(
            f"{raw['webhook_header'].name} gives an Authorization header, and a token gives "
            "another: keep one"
        )
    pod = ("", "", "")
    if args.command == "sidecar":  # a node agent's targets are in other pods than its own
        pod = tuple(parse_pod_field(name, environ.get(name, "")) for name in POD_ENV)
    values.pop("webhook_token_file", None)  # the path is kept, the token read at each delivery
    return Outputs(
        **{"metrics_address": default_metrics_address(args.command), **values},
        pod=pod,
        webhook_headers=headers,
        webhook_token=token,
        webhook_token_file=raw["webhook_token_file"].raw if "webhook_token_file" in raw else None,
    )


_POD_FIELD = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


def parse_pod_field(name: str, raw: str) -> str:
    """A Kubernetes namespace, pod name or UID (DNS-1123 characters, at most 253), or unset."""
    if raw and not _POD_FIELD.fullmatch(raw):
        raise ConfigError(
            f"{name}={raw!r} is not a Kubernetes name or UID (lower-case letters, digits, '-' "
            "and '.', at most 253): set it from the downward API (metadata.namespace, "
            "metadata.name, metadata.uid)"
        )
    return raw


def start_outputs(outputs: Outputs, engine: Engine) -> None:
    """Attach metrics and webhook to the engine, which closes them with itself."""
    closers = engine.outputs
    if outputs.metrics_port is not None:
        # Imported when asked for: prometheus_client is a good part of the start-up of every
        # oomhero, seconds under emulation.
        from oomhero.actions.endpoint import Liveness, serve, stalled_after
        from oomhero.actions.metrics import Metrics, PodIdentity

        address, port = outputs.metrics_address, outputs.metrics_port
        metrics = Metrics(PodIdentity(*outputs.pod))
        liveness = Liveness(
            lambda: engine.watchlist.scanned_once,
            stalled_after(engine.settings.poll_ceiling, engine.rescan_interval),
        )
        try:
            server = serve(metrics.registry, liveness, address, port)
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on {address}:{port}: {exc.strerror}") from None
        engine.listeners.extend((metrics, liveness))
        closers.append(server.shutdown)
        log.event(
            logging.INFO, "serving metrics", address=address, port=port, paths="/metrics /healthz"
        )
    if outputs.webhook is not None:
        from oomhero.actions.webhook import Webhook

        webhook = Webhook(
            outputs.webhook,
            outputs.webhook_timeout,
            outputs.webhook_retries,
            outputs.webhook_headers,
            _authorization(outputs),
        )
        engine.listeners.append(webhook)
        closers.append(webhook.close)


def _authorization(outputs: Outputs) -> Callable[[], str] | None:
    """The webhook's Authorization value at each delivery: the file is read every time, so a
    rotated Secret is picked up without a restart."""
    if outputs.webhook_token is not None:
        return lambda: f"Bearer {outputs.webhook_token}"
    path = outputs.webhook_token_file
    if path is not None:
        return lambda: f"Bearer {read_token_file('--webhook-token-file', path)}"
    return None


def say_cautions(settings: WatchSettings) -> None:
    for caution in [*settings.cautions(), *opt_in_cautions(os.environ)]:
        log.event(logging.WARNING, "caution", why=caution)


def opt_in_cautions(environ: Mapping[str, str]) -> list[str]:
    """A node agent's per-container opt-in in this process's own env: it sets nothing here."""
    said = []
    for name, key in CONTAINER_ENV.items():
        flag = next(f for f in WATCH_FLAGS if f.key == key)
        if name in environ and flag.env != name:
            said.append(
                f"{name} is a container's opt-in that a node agent reads from that container's "
                f"environment; this command's setting is {flag.env} ({flag.flag})"
            )
    return said


def run_engine(args: argparse.Namespace, scanner_factory: Callable[[], Scanner]) -> int:
    """sidecar, watch and node: the engine until SIGTERM/SIGINT/SIGHUP, with its outputs.
    Every setting is checked before anything is logged, opened or scanned."""
    settings = gather_settings(args, use_env=True)
    outputs = parse_outputs(args)
    setup_logging(args, use_env=True)
    with Engine(scanner_factory(), settings) as engine:
        start_outputs(outputs, engine)  # a port in use fails before the start line
        log.event(
            logging.INFO,
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
            dry_run=settings.dry_run,
            warning_signal=settings.warning_signal.name,
            critical_signal=settings.critical_signal.name,
        )
        say_cautions(settings)
        engine.run()
    log.event(
        logging.INFO,
        "oomhero stopped",
        by=engine.stopped_by,
        samples_by_wakeup=dict(engine.samples_by_wakeup),
    )
    return 0


def plain_table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows as lines of text, each column padded to its widest cell (the CLI's tables where
    rich is not installed, and the ones meant to be read by a script too)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
