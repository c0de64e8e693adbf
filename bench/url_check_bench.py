"""Micro-benchmark of the URL proxy's decision: ns per blockd.http.decide.decide call.

    .venv/bin/python bench/url_check_bench.py      (--number 20000 --repeat 7)

A snapshot like the demo's (a plaintext URL list and a pre-hashed list with `url:` and
`route:` hashes on the same routed host) decides a passed URL, a listed URL, a hashed
listed URL and a deeper host. Best of --repeat runs; pin with taskset on a shared machine.
"""

from __future__ import annotations

import argparse
import sys
import timeit
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from blockd.feeds.authoring import hashed_entry  # noqa: E402
from blockd.http.decide import decide  # noqa: E402
from blockd.policy.compile import compile_snapshot  # noqa: E402
from tests.factories import indexed  # noqa: E402

CASES = {  # label: (authority, path)
    "pass, 10 KB file": ("partial.demo.test", "/data10k.bin"),
    "pass, deep path": ("partial.demo.test", "/a/b/c/d/page.html?x=1&y=2"),
    "listed (plain)": ("partial.demo.test", "/listed/page.html"),
    "listed (hashed)": ("partial.demo.test", "/hashed/page.html"),
    "pass, subdomain": ("www.cdn.partial.demo.test", "/img/logo.png"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--number", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args()
    snap = compile_snapshot(
        [
            indexed("urls", "urls", ["http://partial.demo.test/listed/page.html"]),
            indexed(
                "hashed",
                "sha256",
                [
                    hashed_entry("host", "hashed.demo.test"),
                    hashed_entry("url", "partial.demo.test/hashed/page.html"),
                    hashed_entry("route", "partial.demo.test"),
                ],
            ),
        ]
    )
    for label, (host, path) in CASES.items():
        outcome = decide(snap, host, path).outcome
        best = min(
            timeit.repeat(partial(decide, snap, host, path), number=a.number, repeat=a.repeat)
        )
        print(f"{label:20} {outcome:7} {best / a.number * 1e9:8,.0f} ns per decision")


if __name__ == "__main__":
    main()
