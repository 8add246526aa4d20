#!/usr/bin/env python3
"""Side-by-side markdown table from `cairn bench --output` JSON reports.
Usage: bench-table.py LABEL=report.json [LABEL=report.json ...]"""
import json, sys

runs = []
for arg in sys.argv[1:]:
    label, path = arg.split("=", 1)
    with open(path) as f:
        runs.append((label, json.load(f)))

def phases(report):
    return {p["name"]: p for p in report["phases"]}

def cell(p):
    if p is None:
        return "–"
    if p["status"] != "measured":
        return "skipped"
    if p.get("iozone"):
        return "; ".join(f'{t["test"]} {t["kb_per_s"] / 1024:.0f} MiB/s' for t in p["iozone"])
    # Small-file phases are counted in files, whatever bytes they move.
    if p.get("mb_per_s") and p.get("group") != "smallfile":
        rate = f'{p["mb_per_s"]:.0f} MB/s'
    else:
        rate = f'{p["ops_per_s"]:.0f} ops/s'
    lat = p.get("latency_us")
    if lat:
        rate += f' (p50 {lat["p50"]:.0f} µs, p99 {lat["p99"]:.0f} µs)'
    return rate

def cpu(p):
    if p is None or not p.get("processes"):
        return None
    total = sum(x["cpu_s"] for x in p["processes"])
    rss = max((x["peak_rss_mib"] for x in p["processes"]), default=0)
    return f"{total:.1f} s / {rss:.0f} MiB"

names = []
for _, r in runs:
    for p in r["phases"]:
        if p["name"] not in names:
            names.append(p["name"])
print("| phase | " + " | ".join(label for label, _ in runs) + " |")
print("|---" * (len(runs) + 1) + "|")
for n in names:
    print(f"| {n} | " + " | ".join(cell(phases(r).get(n)) for _, r in runs) + " |")
print()
print("CPU seconds and peak RSS of the file system's own processes per phase:")
print()
print("| phase | " + " | ".join(label for label, _ in runs) + " |")
print("|---" * (len(runs) + 1) + "|")
for n in names:
    cells = [cpu(phases(r).get(n)) or "–" for _, r in runs]
    print(f"| {n} | " + " | ".join(cells) + " |")
