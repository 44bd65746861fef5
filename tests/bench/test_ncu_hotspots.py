#!/usr/bin/env python3
"""bench/ncu_hotspots.py on made-up source-page CSVs: ranking and shares per kernel, rejected input."""
import sys

from report_harness import Checks, run_script

HEADER = ('"Address","Source","Warp Stall Sampling (All Samples)","Warp Stall Sampling (Not-issued Samples)",'
          '"Instructions Executed"')


def run(text, *args):
    return run_script("ncu_hotspots.py", text, *args, suffix=".csv")


def table(name, rows):
    lines = [f'"Kernel Name","{name}",', HEADER]
    lines += [f'"{a}","{src}","{s}","0","{ex}"' for a, src, s, ex in rows]
    return "\n".join(lines) + "\n"


def main():
    checks = Checks()
    check = checks.check

    text = ("program output first\n==PROF== lines\n" +
            table("void gemm<(bool)1>(Problem, long)", [("0x10", "HGMMA.64x256x16", "30", "100"),
                                                          ("0x20", "@!P0  BRA 0x10", "60", "1,000"),
                                                          ("0x30", "NOP", "10", "100")]) +
            table("void other()", [("0x40", "LDG.E", "5", "7"), ("0x50", "EXIT", "0", "1")]))
    r = run(text, "--top", "2")
    check(r.returncode == 0, f"a valid CSV is accepted (rc {r.returncode}: {r.stderr})")
    out = r.stdout
    check("100 samples over 3 instructions" in out, "the first kernel's total")
    check(out.find("60.0%") < out.find("30.0%") and out.find("60.0%") >= 0, "largest share first")
    check("10.0%" not in out, "--top 2 leaves the third instruction out")
    check("| 1000 |" in out, "thousands separators are read")
    check("5 samples over 2 instructions" in out and "100.0%" in out, "the second kernel on its own")

    r = run("no kernel here\n")
    check(r.returncode != 0 and "Kernel Name" in r.stderr, "input without a kernel table is refused")
    r = run('"Kernel Name","k",\n"Address","Source"\n"0x1","NOP"\n')
    check(r.returncode != 0 and "SourceCounters" in r.stderr, "a table without stall samples is refused")
    r = run(table("k", [("0x1", "NOP", "x", "1")]))
    check(r.returncode != 0 and "not a number" in r.stderr, "a sample count that is not a number is refused")
    r = run(table("k", [("0x1", "NOP", "1", "1")]), "--top", "0")
    check(r.returncode != 0, "--top 0 is refused")

    return checks.finish()


if __name__ == "__main__":
    sys.exit(main())
