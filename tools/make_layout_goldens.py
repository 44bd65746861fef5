#!/usr/bin/env python3
"""Writes tests/fixtures/layout/*.json: process groups from Megatron Core's own RankGenerator.

For a grid of world sizes, parallel sizes and order strings it builds the two generators exactly as
megatron.core.parallel_state.initialize_model_parallel does (attention: tp, cp, dp, pp with ep=1; MoE: etp as
tp, ep, edp as dp, pp with cp=1; the same order) and records the groups Megatron creates. Configurations that
Megatron rejects are skipped. Reference only: never needed at run time.

    pip install megatron-core   # needs torch
    python3 tools/make_layout_goldens.py [--out tests/fixtures/layout]
"""
import argparse
import itertools
import json
import os
import warnings

warnings.filterwarnings("ignore")
import megatron.core  # noqa: E402
from megatron.core.parallel_state import RankGenerator  # noqa: E402

ORDERS = ["tp-cp-ep-dp-pp", "tp-pp-dp", "tp-dp-pp", "tp-cp-ep-pp-dp", "tp-ep-cp-dp-pp", "tp-cp-dp-ep-pp"]
WORLDS = [1, 2, 4, 8, 16]
SIZES = [1, 2, 4]


def groups(world, tp, cp, pp, etp, ep, order):
    if world % (tp * cp * pp) or world % (etp * ep * pp):
        return None
    dp = world // (tp * cp * pp)
    edp = world // (etp * ep * pp)
    try:
        att = RankGenerator(tp=tp, ep=1, dp=dp, pp=pp, cp=cp, order=order, rank_offset=0)
        moe = RankGenerator(tp=etp, ep=ep, dp=edp, pp=pp, cp=1, order=order, rank_offset=0)
    except (RuntimeError, AssertionError, KeyError):
        return None
    # initialize_model_parallel's own checks.
    if not (order.endswith("pp") or pp == 1 or edp == dp):
        return None
    if att.get_ranks("pp") != moe.get_ranks("pp"):
        return None
    return {
        "world": world, "tp": tp, "cp": cp, "pp": pp, "etp": etp, "ep": ep, "order": order, "dp_size": dp, "edp_size": edp,
        "groups": {
            "tp": att.get_ranks("tp"), "cp": att.get_ranks("cp"), "dp": att.get_ranks("dp"), "pp": att.get_ranks("pp"),
            "tp_cp": att.get_ranks("tp-cp"), "dp_cp": att.get_ranks("dp-cp"), "tp_dp_cp": att.get_ranks("tp-dp-cp"),
            "tp_pp": att.get_ranks("tp-pp"),
            "ep": moe.get_ranks("ep"), "etp": moe.get_ranks("tp"), "edp": moe.get_ranks("dp"),
            "etp_ep": moe.get_ranks("tp-ep"), "etp_ep_pp": moe.get_ranks("tp-ep-pp"),
        },
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "layout"))
    args = ap.parse_args()
    cases, rejected, rejected_orders = [], [], []
    for world, order in itertools.product(WORLDS, ORDERS):
        for tp, cp, pp, etp, ep in itertools.product(SIZES, SIZES, SIZES, SIZES, SIZES):
            g = groups(world, tp, cp, pp, etp, ep, order)
            if g is not None:
                cases.append(g)
            else:
                rejected.append([world, tp, cp, pp, etp, ep])
                rejected_orders.append(order)
    os.makedirs(args.out, exist_ok=True)
    # One file per order keeps each small enough to read; the version of Megatron Core is recorded.
    for order in ORDERS:
        sel = [c for c in cases if c["order"] == order]
        rej = [r for r, o in zip(rejected, rejected_orders) if o == order]
        path = os.path.join(args.out, order.replace("-", "_") + ".json")
        with open(path, "w") as f:
            json.dump({"generator": "megatron-core " + megatron.core.__version__ + " RankGenerator",
                       "rejected_fields": ["world", "tp", "cp", "pp", "etp", "ep"], "rejected": rej,
                       "cases": sel}, f, separators=(",", ":"))
        print(f"{path}: {len(sel)} cases, {len(rej)} rejected")


if __name__ == "__main__":
    main()
