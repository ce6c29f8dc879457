#!/usr/bin/env python3
"""How long moving a process into a cgroup takes, by the time since the
last move (docs/benchmarks.md, "The two modes of CreateContainer").

Usage (root): scripts/cgroup-move-bench.py [HIERARCHY]
HIERARCHY is a cgroup directory to make two test cgroups under:
/sys/fs/cgroup/memory on a v1 or hybrid node (the default when it
exists), /sys/fs/cgroup on a v2 one. They are removed afterwards.
"""
import os
import statistics
import subprocess
import sys
import time

MOVES = 30


def main():
    default = "/sys/fs/cgroup/memory" if os.path.isdir("/sys/fs/cgroup/memory") else "/sys/fs/cgroup"
    top = os.path.join(sys.argv[1] if len(sys.argv) > 1 else default, "berth-move-bench")
    dirs = [os.path.join(top, n) for n in ("a", "b")]
    for d in dirs:
        os.makedirs(d, exist_ok=True)
    sleeper = subprocess.Popen(["sleep", "1000"])
    try:
        for gap in (0, 0.005, 0.02, 0.05, 0.2):
            took = []
            for i in range(MOVES):
                time.sleep(gap)
                t = time.perf_counter()
                with open(os.path.join(dirs[i % 2], "cgroup.procs"), "w") as f:
                    f.write(str(sleeper.pid))
                took.append((time.perf_counter() - t) * 1000)
            took.sort()
            print(
                "gap %3d ms: each move median %.3f ms, p90 %.3f, min %.3f, max %.3f"
                % (gap * 1000, statistics.median(took), took[int(MOVES * 0.9)], took[0], took[-1])
            )
    finally:
        sleeper.kill()
        sleeper.wait()
        for d in dirs + [top]:
            os.rmdir(d)


if __name__ == "__main__":
    main()
