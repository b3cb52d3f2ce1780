#!/usr/bin/env python3
"""Renders chart.png from latest.json: throughput and p99 per route at 1 and 32 connections,
with the pgbench rate for the same SQL beside each read route."""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src: str, dst: str) -> None:
    with open(src) as f:
        r = json.load(f)
    rows = []
    for x in r.get("reads", []):
        rows.append((x["route"], x["conns"], x["rps"], x["p99_ms"], x.get("pgbench_tps")))
    for x in r.get("ingest", []):
        rows.append(("POST " + x["workload"], x["conns"], x["rps"], x["p99_ms"], None))
    names = list(dict.fromkeys(n for n, *_ in rows))
    by = {(n, c): (rps, p99, pg) for n, c, rps, p99, pg in rows}

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(13, 9), sharex=True)
    w = 0.2
    xs = range(len(names))
    colors = {1: "#9ecae1", 32: "#3182bd"}
    for i, c in enumerate((1, 32)):
        off = (i - 1.5) * w
        ax1.bar([x + off for x in xs], [by.get((n, c), (0,))[0] for n in names], w,
                label=f"service, {c} conn", color=colors[c])
        ax1.bar([x + off + 2 * w for x in xs],
                [(by.get((n, c), (0, 0, None))[2] or 0) for n in names], w,
                label=f"pgbench same SQL, {c} conn", color="#fdae6b" if c == 1 else "#e6550d")
        ax2.bar([x + off + w for x in xs], [by.get((n, c), (0, 0))[1] for n in names], w * 1.5,
                label=f"{c} conn", color=colors[c])
    ax1.set_yscale("log")
    ax1.set_ylabel("requests/s (log)")
    ax1.legend(fontsize=8, ncol=4)
    ax1.grid(axis="y", alpha=0.3)
    m = r["meta"]
    ax1.set_title(f"medrobotics services, {m['mode']} run {m['started_utc']} "
                  f"({m['host']['cpus']} cores shared by wrk, PostgreSQL, S3 server, service)")
    ax2.set_yscale("log")
    ax2.set_ylabel("p99 latency ms (log)")
    ax2.axhline(25, color="red", linestyle="--", linewidth=0.8)
    ax2.text(len(names) - 0.5, 27, "25 ms read target", color="red", fontsize=8, ha="right")
    ax2.legend(fontsize=8)
    ax2.grid(axis="y", alpha=0.3)
    ax2.set_xticks(list(xs))
    ax2.set_xticklabels(names, rotation=30, ha="right", fontsize=9)
    fig.tight_layout()
    fig.savefig(dst, dpi=90)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
