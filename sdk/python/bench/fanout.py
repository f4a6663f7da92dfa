#!/usr/bin/env python3
"""Time full-fleet calls through the Python SDK (what `cc-perf --python`
runs beside the Go SDK's, on the same fleet in the same run).

    python sdk/python/bench/fanout.py --server nats://127.0.0.1:4222 \\
        --key cc-data/admin.nk --expect 1000 --reps 20

Prints one JSON object: {"reps", "expect", "p50_ms", "p99_ms", "min_ms",
"max_ms"}. Exits 1 when a call does not get every expected answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from commandcontrol import AsyncWorkbench


def quantile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


async def run(server: str, key: str, expect: int, reps: int, timeout: float) -> int:
    wb = await AsyncWorkbench.connect(server, key_file=key)
    try:
        took: list[float] = []
        await wb.call("current-load", timeout=timeout)  # warm up, untimed
        for _ in range(reps):
            start = time.perf_counter()
            res = await wb.call("current-load", timeout=timeout)
            took.append((time.perf_counter() - start) * 1000)
            if res.num_ok != expect:
                print(f"fanout: {res.num_ok} of {expect} answered ok: {res.summary}", file=sys.stderr)
                return 1
        print(json.dumps({"reps": reps, "expect": expect, "p50_ms": quantile(took, 0.5),
                          "p99_ms": quantile(took, 0.99), "min_ms": min(took), "max_ms": max(took)}))
        return 0
    finally:
        await wb.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", required=True)
    p.add_argument("--key", required=True, help="admin operator's seed file")
    p.add_argument("--expect", type=int, required=True, help="agents that must answer each call")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--timeout", type=float, default=60.0)
    a = p.parse_args()
    return asyncio.run(run(a.server, a.key, a.expect, a.reps, a.timeout))


if __name__ == "__main__":
    sys.exit(main())
