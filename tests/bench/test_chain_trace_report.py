#!/usr/bin/env python3
"""bench/chain_trace_report.py on made-up traces: replay grouping, in-chain costs, rejected input."""
import sys

from report_harness import Checks, run_script


def run(lines, *args):
    return run_script("chain_trace_report.py", "".join(l + "\n" for l in lines), *args)


def kernel(start_ns, end_ns, name, node=7, grid=(4, 1, 1), block=256, cluster=1):
    return f"{start_ns} {end_ns} {grid[0]} {grid[1]} {grid[2]} {block} {cluster} {node} {name}"


def main():
    checks = Checks()
    check = checks.check

    # Three replays of a - b - c (each kernel starts early, as under programmatic launch), a 1 ms idle gap
    # between replays, and a host-launched kernel (node 0) that must be ignored.
    lines = [kernel(0, 500, "setup", node=0)]
    for r in range(3):
        t = 1_000_000 * (r + 1)
        lines += [kernel(t, t + 2000, "a"), kernel(t + 500, t + 5000, "b"), kernel(t + 1000, t + 6000, "c",
                                                                                     cluster=8)]
    # The graph kernels need not be listed in end order.
    lines = [lines[0]] + lines[:0:-1]
    res = run(lines, "--min-kernels", "3")
    check(res.returncode == 0, f"report failed: {res.stderr}")
    out = res.stdout
    check("3 replays of 3 kernels; mean replay 6.0 us" in out, f"replay summary wrong:\n{out}")
    # In-chain: a pays from its start (2 us), b 3 us after a's end, c 1 us after b's; durations 2, 4.5, 5.
    check("| a grid(4,1,1)x256 | 1 | 2.00 | 2.00 | 33.3% |" in out, f"a wrong:\n{out}")
    check("| b grid(4,1,1)x256 | 1 | 3.00 | 4.50 | 50.0% |" in out, f"b wrong:\n{out}")
    check("| c grid(4,1,1)x256 cluster 8 | 1 | 1.00 | 5.00 | 16.7% |" in out, f"c wrong:\n{out}")
    check("setup" not in out, "a host-launched kernel was counted")
    # Each kernel runs once per replay: no per-layer line.
    check("per layer" not in out, f"a per-layer line without repeated kernels:\n{out}")
    # Sorted by cost: b first.
    check(out.index("| b ") < out.index("| a ") < out.index("| c "), f"not sorted by in-chain cost:\n{out}")

    # A shorter replay (another graph) is left out: the most common length is reported.
    extra = [kernel(9_000_000, 9_001_000, "a"), kernel(9_000_100, 9_002_000, "b")]
    res = run(lines + extra, "--min-kernels", "2")
    check(res.returncode == 0 and "3 replays of 3 kernels" in res.stdout, f"mixed lengths:\n{res.stdout}{res.stderr}")

    # A long last kernel (an LM head: starts on time, ends 200 us after the kernel before it) stays in its
    # replay; only an idle gap splits replays.
    headed = []
    for r in range(2):
        t = 1_000_000 * (r + 1)
        headed += [kernel(t, t + 2000, "a"), kernel(t + 500, t + 5000, "b"), kernel(t + 4000, t + 205_000, "head")]
    res = run(headed, "--min-kernels", "3")
    check(res.returncode == 0 and "2 replays of 3 kernels; mean replay 205.0 us" in res.stdout,
          f"a long last kernel split its replay:\n{res.stdout}{res.stderr}")
    check("| head grid(4,1,1)x256 | 1 | 200.00 | 201.00 |" in res.stdout, f"head wrong:\n{res.stdout}")

    # Two "layers" of (x, y) and a once-per-replay head z: per layer = (x + y) in-chain costs.
    layered = []
    for r in range(2):
        t = 1_000_000 * (r + 1)
        layered += [kernel(t, t + 1000, "x"), kernel(t + 100, t + 3000, "y"), kernel(t + 3000, t + 4000, "x"),
                    kernel(t + 3100, t + 6000, "y"), kernel(t + 6000, t + 10000, "z")]
    res = run(layered, "--min-kernels", "5")
    check(res.returncode == 0 and "per layer (2 per replay): 3.0 us in chain; the rest of the replay 4.0 us"
          in res.stdout, f"per-layer line wrong:\n{res.stdout}{res.stderr}")

    # --eager: host-launched kernels only. g (2 us, 4 us), h (3 us) overlapping g's second run by 1 us, a 5 us
    # idle gap, g again (2 us): busy = 2 + (4 + 3 - 1) + 2 = 10 us of a 15 us span; the graph kernel is ignored.
    eager = [kernel(0, 2000, "g", node=0), kernel(2000, 6000, "g", node=0), kernel(5000, 8000, "h", node=0, grid=(2, 1, 1)),
             kernel(13_000, 15_000, "g", node=0), kernel(100, 200, "graphed")]
    res = run(eager, "--eager")
    check(res.returncode == 0, f"eager report failed: {res.stderr}")
    out = res.stdout
    check("4 kernels; busy 10.0 us of a 15.0 us span (66.7%)" in out, f"eager summary wrong:\n{out}")
    check("| g grid(4,1,1)x256 | 3 | 2.67 | 8.0 | 72.7% |" in out, f"eager g wrong:\n{out}")
    check("| h grid(2,1,1)x256 | 1 | 3.00 | 3.0 | 27.3% |" in out, f"eager h wrong:\n{out}")
    check("graphed" not in out, f"a graph kernel was counted as eager:\n{out}")
    res = run(lines[1:], "--eager")
    check(res.returncode != 0 and "no host-launched kernels" in res.stderr, f"eager without kernels: {res.stderr}")

    # Bad input: a malformed line, no graph kernels, no replay long enough: non-zero exit, a message.
    res = run(["1 2 3 name"])
    check(res.returncode != 0 and "expected 9 fields" in res.stderr, f"malformed line: {res.returncode} {res.stderr}")
    res = run([kernel(0, 10, "x", node=0)])
    check(res.returncode != 0 and "no kernels launched from CUDA graphs" in res.stderr, f"no graph: {res.stderr}")
    res = run(lines, "--min-kernels", "50")
    check(res.returncode != 0 and "no replay with at least 50 kernels" in res.stderr, f"short: {res.stderr}")
    res = run(["1 x 3 4 5 6 7 8 name"])
    check(res.returncode != 0 and "not a number" in res.stderr, f"non-numeric field: {res.returncode} {res.stderr}")

    return checks.finish()


if __name__ == "__main__":
    sys.exit(main())
