#!/usr/bin/env python3
"""Generates the benchmark tree: thousands of files, some MiB-sized, a 1 GiB sparse file, hard
links, symlinks, and a directory with several thousand entries. Deterministic (fixed seed)."""
import os
import random
import sys

root = sys.argv[1]
rng = random.Random(42)
os.makedirs(root, exist_ok=True)

def blob(n):
    # Incompressible-ish bytes without spending seconds in Python: repeat a random 64 KiB block
    # with a varying prefix.
    base = rng.randbytes(65536)
    out = bytearray()
    i = 0
    while len(out) < n:
        out += i.to_bytes(8, "little") + base[8:]
        i += 1
    return bytes(out[:n])

# ~4,000 small files across nested directories (0 B .. 64 KiB).
for d in range(40):
    sub = os.path.join(root, "usr", "share", f"pkg{d:02}", "data")
    os.makedirs(sub, exist_ok=True)
    for f in range(100):
        size = rng.choice([0, 100, 1000, 4096, 10000, 30000, 65536])
        with open(os.path.join(sub, f"file{f:03}.txt"), "wb") as fh:
            fh.write(blob(size))

# MiB-sized files: 40 files of 1..8 MiB (about 180 MiB).
big = os.path.join(root, "usr", "lib", "big")
os.makedirs(big, exist_ok=True)
for i in range(40):
    with open(os.path.join(big, f"lib{i:02}.so"), "wb") as fh:
        fh.write(blob((1 + i % 8) << 20))

# A 1 GiB sparse file with a few data islands.
with open(os.path.join(root, "var-disk.img"), "wb") as fh:
    fh.truncate(1 << 30)
    for off in (0, 256 << 20, 700 << 20, (1 << 30) - 4096):
        fh.seek(off)
        fh.write(blob(4096))

# A directory with 6,000 entries.
wide = os.path.join(root, "usr", "share", "wide")
os.makedirs(wide, exist_ok=True)
for i in range(6000):
    with open(os.path.join(wide, f"entry-{i:05}-{'x' * (i % 40)}"), "wb") as fh:
        fh.write(b"%d\n" % i)

# Hard links and symlinks.
links = os.path.join(root, "usr", "bin")
os.makedirs(links, exist_ok=True)
target = os.path.join(big, "lib00.so")
for i in range(50):
    os.link(target, os.path.join(links, f"hard{i:02}"))
    os.symlink(f"../lib/big/lib{i % 40:02}.so", os.path.join(links, f"sym{i:02}"))
os.symlink("/nonexistent/dangling", os.path.join(links, "dangling"))
print(root)
