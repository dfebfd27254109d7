"""``dashbridged``: the head-unit daemon."""

from __future__ import annotations

import argparse
import asyncio
import sys

EX_CONFIG = 78  # sysexits.h: configuration error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dashbridged", description="dashbridge head-unit daemon")
    parser.add_argument("--config", metavar="PATH", help="config file (default /etc/dashbridge/config.yaml)")
    parser.add_argument("--check-config", action="store_true", help="validate the config and exit")
    args = parser.parse_args(argv)

    from . import config as config_mod

    try:
        cfg = config_mod.load(args.config)
    except config_mod.ConfigError as exc:
        print(f"dashbridged: {exc}", file=sys.stderr)
        return EX_CONFIG
    if args.check_config:
        print("config ok")
        return 0

    from . import logs

    logs.setup(cfg.log_level)
    from .app import serve
    from .store import NewerSchemaError, StoreUnavailable

    try:
        return asyncio.run(serve(cfg))
    except NewerSchemaError as exc:
        print(f"dashbridged: {exc}", file=sys.stderr)
        return EX_CONFIG
    except StoreUnavailable as exc:
        # Locked, disk full, read-only: may clear by itself, so not EX_CONFIG (systemd retries).
        print(f"dashbridged: cannot start: {exc}", file=sys.stderr)
        return 1
    except (OSError, TimeoutError) as exc:
        print(f"dashbridged: cannot start: {exc}", file=sys.stderr)
        return 1

if __name__ == "__main__":
    sys.exit(main())
