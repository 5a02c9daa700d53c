"""What the commands share: settings from flags and env, logging, targets, the engine's run."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from oomhero import log
from oomhero.config import (
    ConfigError,
    WatchSettings,
    build_watch_settings,
    parse_address,
    parse_choice,
    parse_count,
    parse_duration,
    parse_port,
    parse_url,
)
from oomhero.config.table import LOG_FLAGS, OUTPUT_FLAGS, WATCH_FLAGS, given
from oomhero.engine import Engine
from oomhero.kernel.cgroup import CgroupDir, CgroupError
from oomhero.targets import Scanner
from oomhero.targets.cgroups import resolve_cgroup


def gather_settings(args: argparse.Namespace, use_env: bool) -> WatchSettings:
    """Flags first, then (if allowed) env vars; every present value is validated."""
    raw = given(args, WATCH_FLAGS, use_env)
    return build_watch_settings(raw, getattr(args, "watch_defaults", WatchSettings()))


def setup_logging(args: argparse.Namespace, use_env: bool) -> None:
    """--log-format / --log-level, else their env vars (where allowed), else text / info."""
    raw = given(args, LOG_FLAGS, use_env)
    chosen = {}
    for key, choices in (("log_format", ("text", "json")), ("log_level", ("info", "debug"))):
        setting = raw.get(key)
        chosen[key] = parse_choice(setting.name, setting.raw, choices) if setting else choices[0]
    log.setup(chosen["log_format"], debug=chosen["log_level"] == "debug")


def resolve_targets(specs: list[str]) -> list[CgroupDir]:
    """CLI targets (cgroup paths or PIDs); one that cannot be watched is a usage error."""
    cgroups = []
    for spec in specs:
        try:
            cgroups.append(resolve_cgroup(spec))
        except CgroupError as exc:
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


def default_metrics_address(command: str) -> str:
    """In a pod, Prometheus scrapes the pod's IP from outside: every interface. A command run by
    hand (watch, top, run) is often on a laptop: this machine only."""
    return "0.0.0.0" if command in ("sidecar", "node") else "127.0.0.1"


def parse_outputs(args: argparse.Namespace) -> Outputs:
    raw = {key: (s.name, s.raw) for key, s in given(args, OUTPUT_FLAGS, use_env=True).items()}
    outputs = Outputs(metrics_address=default_metrics_address(args.command))
    if "metrics_port" in raw:
        outputs = replace(outputs, metrics_port=parse_port(*raw["metrics_port"]))
        if "metrics_address" in raw:
            outputs = replace(outputs, metrics_address=parse_address(*raw["metrics_address"]))
    elif "metrics_address" in raw:
        raise ConfigError(f"{raw['metrics_address'][0]} needs a metrics port (--metrics-port)")
    if "webhook" in raw:
        timeout = raw.get("webhook_timeout", ("--webhook-timeout", "2s"))
        retries = raw.get("webhook_retries", ("--webhook-retries", "3"))
        outputs = replace(
            outputs,
            webhook=parse_url(*raw["webhook"]),
            webhook_timeout=parse_duration(*timeout, 0.1, 60),
            webhook_retries=parse_count(*retries, most=10),
        )
    else:
        for key in ("webhook_timeout", "webhook_retries"):
            if key in raw:
                raise ConfigError(f"{raw[key][0]} needs a webhook URL (--webhook)")
    return outputs


def start_outputs(outputs: Outputs, engine: Engine) -> list[Callable[[], None]]:
    """Attach metrics and webhook to the engine; returns what needs closing."""
    closers = []
    if outputs.metrics_port is not None:
        # Imported when asked for: prometheus_client and http.server are a good part of the
        # start-up of every oomhero, seconds under emulation.
        from oomhero.actions.metrics import Metrics
        from oomhero.actions.metrics import serve as serve_metrics

        address, port = outputs.metrics_address, outputs.metrics_port
        metrics = Metrics()
        try:
            server = serve_metrics(metrics, lambda: engine.watchlist.scanned_once, address, port)
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on {address}:{port}: {exc.strerror}") from None
        engine.listeners.append(metrics)
        closers.append(server.shutdown)
        log.event(
            logging.INFO, "serving metrics", address=address, port=port, paths="/metrics /healthz"
        )
    if outputs.webhook is not None:
        from oomhero.actions.webhook import Webhook

        webhook = Webhook(outputs.webhook, outputs.webhook_timeout, outputs.webhook_retries)
        engine.listeners.append(webhook)
        closers.append(webhook.close)
    return closers


def say_cautions(settings: WatchSettings) -> None:
    for caution in settings.cautions():
        log.event(logging.WARNING, "caution", why=caution)


def run_engine(args: argparse.Namespace, scanner_factory: Callable[[], Scanner]) -> int:
    """sidecar, watch and node: the engine until SIGTERM/SIGINT/SIGHUP, with its outputs.
    Every setting is checked before anything is logged, opened or scanned."""
    settings = gather_settings(args, use_env=True)
    outputs = parse_outputs(args)
    setup_logging(args, use_env=True)
    engine = Engine(scanner_factory(), settings)
    closers = []
    try:
        closers = start_outputs(outputs, engine)  # a port in use fails before the start line
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
            warning_signal=settings.warning_signal.name,
            critical_signal=settings.critical_signal.name,
        )
        say_cautions(settings)
        engine.run()
    finally:
        engine.close()
        for close in closers:
            close()
    log.event(
        logging.INFO,
        "oomhero stopped",
        by=engine.stopped_by,
        samples_by_wakeup=dict(engine.wakeups),
    )
    return 0


def plain_table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows as lines of text, each column padded to its widest cell (the CLI's tables where
    rich is not installed, and the ones meant to be read by a script too)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
