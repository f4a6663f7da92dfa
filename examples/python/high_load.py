#!/usr/bin/env python3
"""List every ONLINE server whose load average is above a threshold.

The seed's example (issue #14), on the commandcontrol Python SDK:

    pip install ./sdk/python
    python3 examples/python/high_load.py --key cc-data/admin.nk --where role=web

It asks every ONLINE server the --where selector chooses for its
current-load, waits until each has answered (or --timeout), and prints the
servers whose 1-minute load is above --threshold, highest first. Servers
that answered with an error or not at all are listed on stderr.

Exit status: 0 no server is above the threshold and every server answered;
1 at least one server is above the threshold; 2 the example could not run
(bad arguments, no key, no broker, the call refused); 3 none is above the
threshold but some servers did not answer or answered an error, so the
answer is incomplete.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

EXIT_OK, EXIT_HIGH, EXIT_FAILED, EXIT_INCOMPLETE = 0, 1, 2, 3


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="List every ONLINE server whose load average (load1) is above --threshold.",
        epilog="exit status: 0 none above the threshold, 1 some above it, 2 could not run (no ONLINE server matches, too), "
               "3 none above it but some servers did not answer (incomplete). "
               "Example: %(prog)s --key cc-data/admin.nk --where 'role=web,location=New-Brunswick'",
    )
    p.add_argument("--server", default="nats://127.0.0.1:4222",
                   help="the broker's URL (default %(default)s; tls://… for a remote broker)")
    p.add_argument("--key", default="cc-data/admin.nk",
                   help="the operator's nkey seed file (default %(default)s)")
    p.add_argument("--tls-ca", default=None, help="CA certificate (PEM) to verify a tls:// broker against")
    p.add_argument("--threshold", type=float, default=10.0,
                   help="report servers whose load1 is above this (default %(default)s)")
    p.add_argument("--where", default="",
                   help="which servers: the CLI's selector, e.g. role=web,location=New-Brunswick "
                        "(default: every ONLINE server)")
    p.add_argument("--timeout", type=float, default=5.0,
                   help="seconds to wait for the servers' answers (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object for scripts")
    args = p.parse_args(argv)
    if args.timeout <= 0:
        p.error(f"--timeout {args.timeout}: want a number of seconds above 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        from commandcontrol import Workbench
        from commandcontrol.errors import CCError, ConnectError, NoMatch
    except ImportError as e:
        print(f"high_load: {e}: install the SDK with: pip install ./sdk/python", file=sys.stderr)
        return EXIT_FAILED
    try:
        with Workbench.connect(args.server, key_file=args.key, tls_ca=args.tls_ca) as wb:
            res = wb.call("current-load", where=args.where or None, timeout=args.timeout)
    except NoMatch:
        where = f"--where {args.where!r}" if args.where else "the fleet"
        print(f"high_load: no ONLINE server in {where}: check the selector with cc-bench servers", file=sys.stderr)
        return EXIT_FAILED
    except (CCError, ConnectError, OSError, ValueError) as e:
        print(f"high_load: {e}", file=sys.stderr)
        return EXIT_FAILED

    high: list[tuple[str, float]] = []
    unreadable: list[tuple[str, str]] = []
    for r in res.ok:
        load = r.result.get("load1") if isinstance(r.result, dict) else None
        if not isinstance(load, (int, float)):
            unreadable.append((r.machine, f"no load1 in its answer {r.result!r}"))
        elif load > args.threshold:
            high.append((r.machine, float(load)))
    high.sort(key=lambda h: (-h[1], h[0]))
    failed = [(r.machine, f"error {r.error}") for r in res.errors]
    failed += [(m, "no response") for m in res.no_response]
    failed += unreadable

    if args.json:
        out: dict[str, Any] = {
            "threshold": args.threshold,
            "high": [{"machine": m, "load1": load} for m, load in high],
            "failed": [{"machine": m, "why": why} for m, why in failed],
            "summary": res.summary,
        }
        print(json.dumps(out, indent=2))
    else:
        for m, load in high:
            print(f"{m}\t{load:.2f}")
        for m, why in failed:
            print(f"high_load: {m}: {why}", file=sys.stderr)
        print(f"high_load: {len(high)} above {args.threshold:g}; {res.summary}", file=sys.stderr)

    if high:
        return EXIT_HIGH
    if failed:
        return EXIT_INCOMPLETE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
