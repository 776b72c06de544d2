"""The `watchtower` command: run | oneshot | check-config | demo.

Parses arguments, loads the one Config object and hands it to the daemon. Exit codes: 0 ok,
2 invalid configuration or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from exporter import __version__
from exporter.config import ConfigError, load_config


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="watchtower", description="PowerMTA observability daemon.")
    p.add_argument("--version", action="version", version=f"watchtower {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="tail accounting files and serve /metrics until SIGTERM")
    run.add_argument("--config", required=True, type=Path, help="YAML config file")
    one = sub.add_parser("oneshot", help="read every matching file from byte 0, print the exposition, exit")
    one.add_argument("--config", required=True, type=Path, help="YAML config file")
    chk = sub.add_parser("check-config", help="validate a config file; exit 2 listing every problem")
    chk.add_argument("file", type=Path)
    demo = sub.add_parser("demo", help="simulated PMTA traffic + the exporter, on loopback")
    demo.add_argument("--scenario", default="gmail-throttle", help="scenario name or YAML file")
    demo.add_argument("--listen", default="127.0.0.1:9469", help="exporter listener host:port")
    demo.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second")
    demo.add_argument("--dir", type=Path, default=None, help="where logs and state go (default: a temp dir)")
    demo.add_argument("--duration", type=float, default=None, help="stop after this many real seconds")
    hub = sub.add_parser("hub", help="one /api/v1 and the /ui pages over many daemons (fan-out, docs/scaling.md)")
    hub.add_argument("--config", required=True, type=Path, help="hub YAML config file")
    return p


def _load(path: Path) -> object:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"{exc.path}: invalid configuration", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return None
    except OSError as exc:
        print(f"{path}: cannot read: {exc.strerror}", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        config = _load(args.file)
        if config is None:
            return 2
        print(f"{args.file}: ok")
        return 0
    if args.command == "demo":
        from simulator.demo import run_demo

        return run_demo(args)
    if args.command == "hub":
        from hub.app import run_hub

        return run_hub(args.config)
    config = _load(args.config)
    if config is None:
        return 2
    from exporter.daemon import Daemon, run_oneshot

    logging.basicConfig(
        level=getattr(logging, config.log_level.upper()),  # type: ignore[attr-defined]
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command == "oneshot":
        sys.stdout.write(run_oneshot(config))  # type: ignore[arg-type]
        return 0
    return asyncio.run(Daemon(config).serve())  # type: ignore[arg-type]
