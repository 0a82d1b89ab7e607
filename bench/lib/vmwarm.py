"""Warming a virtual machine's memory before a benchmark (bench/engine, bench/load).

A virtual machine's host backs guest memory only when it is first touched, at about
430 MB/s on the 2-core VMs here against GB/s afterwards, and every page cache lands on
such memory until all of it has been touched once: whatever writes first into fresh
memory pays for it, in CPU time the guest sees as its own. The host takes freed memory
back after a while, so a benchmark warms on every start.
"""
import subprocess
import sys
import time

MIB = 1 << 20

WARM = """
import mmap, sys
size, mib = int(sys.argv[1]), 1 << 20
m = mmap.mmap(-1, size)
chunk = b"\\x01" * mib
for off in range(0, size, mib):
    m[off:off + mib] = chunk
"""


def warm_memory():
    """Writes the memory available but a margin (a tenth of the RAM, at least 1 GiB), once,
    in a child process: a child forked from a process with a large peak RSS reports that
    peak as its own ru_maxrss, so this process must never hold the memory itself."""
    info = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":", 1)
            info[key] = int(value.split()[0]) * 1024
    margin = max(1 << 30, info.get("MemTotal", 0) // 10)
    size = max(0, info.get("MemAvailable", 0) - margin) // MIB * MIB
    t0 = time.monotonic()
    if size:
        subprocess.run([sys.executable, "-c", WARM, str(size)], check=True)
    return {"bytes": size, "seconds": time.monotonic() - t0}
