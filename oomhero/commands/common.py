"""What the commands share: settings from flags and env, logging, targets, the engine's run."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable

from oomhero import log
from oomhero.actions.metrics import Metrics
from oomhero.actions.metrics import serve as serve_metrics
from oomhero.actions.webhook import Webhook
from oomhero.config import (
    ConfigError,
    WatchSettings,
    build_watch_settings,
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


def start_outputs(args: argparse.Namespace, engine: Engine) -> list[Callable[[], None]]:
    """Attach metrics and webhook to the engine as configured; returns what needs closing."""
    raw = {key: (s.name, s.raw) for key, s in given(args, OUTPUT_FLAGS, use_env=True).items()}
    closers = []
    if "metrics_port" in raw:
        port = parse_port(*raw["metrics_port"])
        address = raw.get("metrics_address", (None, "0.0.0.0"))[1]
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
    elif "metrics_address" in raw:
        raise ConfigError(f"{raw['metrics_address'][0]} needs a metrics port (--metrics-port)")
    if "webhook" in raw:
        url = parse_url(*raw["webhook"])
        timeout = parse_duration(*raw.get("webhook_timeout", ("--webhook-timeout", "2s")))
        retries = parse_count(*raw.get("webhook_retries", ("--webhook-retries", "3")))
        webhook = Webhook(url, timeout, retries)
        engine.listeners.append(webhook)
        closers.append(webhook.close)
    else:
        for key in ("webhook_timeout", "webhook_retries"):
            if key in raw:
                raise ConfigError(f"{raw[key][0]} needs a webhook URL (--webhook)")
    return closers


def run_engine(args: argparse.Namespace, scanner_factory: Callable[[], Scanner]) -> int:
    """sidecar, watch and node: the engine until SIGTERM/SIGINT, with its outputs."""
    settings = gather_settings(args, use_env=True)
    setup_logging(args, use_env=True)
    scanner = scanner_factory()
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
    log.event(logging.INFO, "oomhero stopped", samples_by_wakeup=dict(engine.wakeups))
    return 0
