#!/usr/bin/env python3
"""Small-file phases in DIR: create (4 KiB, O_EXCL), cold stat, cold read,
delete, N files each; prints files/s per phase. Needs root (drop_caches).
Usage: smallfiles.py DIR N [SIZE]"""
import os, sys, time
d, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 4096
os.makedirs(d, exist_ok=True)
data = os.urandom(size)
def phase(name, fn):
    t = time.perf_counter()
    for i in range(n): fn(os.path.join(d, f"f{i:06d}"))
    dt = time.perf_counter() - t
    print(f"{name:8s} {n/dt:10.0f} files/s")
def create(p):
    fd = os.open(p, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644); os.write(fd, data); os.close(fd)
def read(p):
    with open(p, 'rb') as f: assert len(f.read()) == size
phase("create", create)
os.system("sync; echo 3 > /proc/sys/vm/drop_caches")
phase("stat", os.stat)
os.system("echo 3 > /proc/sys/vm/drop_caches")
phase("read", read)
phase("delete", os.unlink)
os.rmdir(d)
