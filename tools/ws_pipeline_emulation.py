#!/usr/bin/env python3
"""Randomised-interleaving emulation of the producer/consumer protocol of grouped_gemm_sm90_ws_kernel in
src/kernels/cuda/grouped_gemm_sm90_ws.cu: the stage ring, the `full` and `empty` mbarriers, their phase
parities, the cp.async arrivals and the wgmma groups, with the kernel's own bookkeeping (stage, phase,
`previous`), checked over many random schedules without a GPU (written 2026-12-05, when the kernel was new and
no device could be had; GpuGrouped.Sm90WarpSpecializedEqualsOneTilePerBlock is the real check). The operand
arithmetic is the one-tile-per-block kernel's, which tools/wgmma_gemm_emulation.py checks. Usage: python3
tools/ws_pipeline_emulation.py (standard library only, seconds; exit 0 = no schedule deadlocks or reads a stage
that does not hold the k tile it expects or overwrites a stage that products still read, the producer's staging
map (cp.async rows and TMA boxes) fills every slot of a stage once with the right weight row, and every
deliberately broken variant is caught). Keep it in step with the kernel.

Model (NVIDIA PTX ISA, "mbarrier" and "cp.async"):
  * An mbarrier has an expected arrival count and a phase; the count's last arrival completes the phase and
    re-arms it. try_wait.parity(P) succeeds once the phase of parity P has completed, i.e. when the phase now
    running has the other parity (a fresh barrier runs phase 0, so try_wait.parity(1) succeeds at once).
  * cp.async.mbarrier.arrive.noinc: one arrival, made when the thread's earlier cp.async copies have landed
    (at a time of the scheduler's choosing, after they were issued), counted against the expected arrivals.
  * A wgmma group reads its stage from the moment it is issued until wgmma.wait_group retires it; wait_group(1)
    retires all but the newest group (the scheduler may retire groups earlier).
  * TMA (the kTmaB variant): mbarrier.arrive.expect_tx adds the box's bytes to the phase's transaction count
    with its arrival; the box lands later and counts them down; a phase completes when both its arrivals and
    its transaction count are done.
  * Threads interleave arbitrarily; producer threads are modelled by PRODUCERS agents (the kernel: 128, count
    128) and consumer warps by WARPS agents (the kernel: 8; `empty` counts 8, or 4 in ping-pong, where each
    `turn` barrier counts the 4 warps of one warpgroup).
"""
import random
import sys

PRODUCERS, WARPS = 3, 4


class Barrier:
    def __init__(self, count):
        self.count, self.pending, self.phase, self.tx = count, count, 0, 0

    def arrive(self, errors, what, expect_tx=0):
        if self.pending <= 0:
            errors.append(f"{what}: arrival on a completed phase")
            return
        self.tx += expect_tx
        self.pending -= 1
        self.settle()

    def complete_tx(self, n):
        self.tx -= n
        self.settle()

    def settle(self):  # a phase completes once its arrivals are in and its transaction count is back at 0
        if self.pending == 0 and self.tx == 0:
            self.phase += 1
            self.pending = self.count

    def done(self, parity):
        return self.phase % 2 != parity


def run(tiles, k_tiles, stages, seed, broken=None, tma=False, pingpong=False):
    """One block: `tiles` tiles of `k_tiles` k tiles each over a ring of `stages`; tma: the weight half of each
    stage comes by TMA (producer 0 arrives with expect_tx, the box lands later and counts its bytes down).
    pingpong: the consumer warps form two warpgroups that take alternate tiles, each warpgroup's stages freed by
    its warps alone, the stage and parity of tile j's k step kt from ring position j * k_tiles + kt, tile j's k
    loop started after tile j - 1's has finished (the `turn` barriers, one per direction).
    Returns a list of errors."""
    rng = random.Random(seed)
    errors = []
    full = [Barrier(PRODUCERS + (1 if tma and broken != "tma_count" else 0)) for _ in range(stages)]
    weights = [None] * stages  # what the stage's TMA half holds
    frees = WARPS // 2 if pingpong and broken != "pingpong_count" else WARPS
    # Ping-pong: turn[c] completes a phase each time the other warpgroup's k loop of a tile is done ("shared_turn":
    # one barrier for both directions).
    turn = [Barrier(WARPS // 2), Barrier(WARPS // 2)]
    empty = [Barrier(frees if broken != "empty_count" else frees + 1) for _ in range(stages)]
    # What each stage's slots hold: per producer thread, the (tile, kt) its last landed copies wrote.
    slots = [[None] * PRODUCERS for _ in range(stages)]
    in_flight_copies = []  # (producer, stage, (tile, kt)): issued, not landed; the arrival follows the landing
    readers = [set() for _ in range(stages)]  # (warp, group id) of wgmma groups reading the stage
    reads = [0]  # k tiles multiplied, all warps

    def producer(p):
        stage, phase = 0, 0
        for t in range(tiles):
            for kt in range(k_tiles):
                parity = phase ^ 1 if broken != "producer_parity" else phase
                while not empty[stage].done(parity):
                    yield "wait"
                if tma and p == 0:  # arrive.expect_tx, then the box
                    full[stage].arrive(errors, "TMA issuer", 0 if broken == "tma_no_expect" else 1)
                    in_flight_copies.append(("tma", stage, (t, kt)))
                in_flight_copies.append((p, stage, (t, kt)))  # the copies, then the noinc arrival
                stage += 1
                if stage == stages:
                    stage, phase = 0, phase ^ (1 if broken != "no_phase_flip" else 0)
                yield "step"

    def consumer(w):
        stage, phase = 0, 0
        groups = []  # (group id, stage) not yet retired, oldest first
        gid = 0
        group_of_warp = w * 2 // WARPS  # the warpgroup (ping-pong)
        turn_phase = 0
        for t in range(tiles):
            if pingpong and t % 2 != group_of_warp:
                continue
            if pingpong and t > 0 and broken != "pingpong_unordered":
                if broken == "shared_turn":
                    bar, parity = turn[0], (t - 1) % 2
                else:
                    bar, parity = turn[group_of_warp], turn_phase
                    turn_phase ^= 1
                while not bar.done(parity):
                    yield "wait"
            previous = 0
            for kt in range(k_tiles):
                if pingpong:
                    position = t * k_tiles + kt if broken != "pingpong_position" else (t // 2) * k_tiles + kt
                    stage, phase = position % stages, (position // stages) % 2
                while not full[stage].done(phase):
                    yield "wait"
                if any(slots[stage][p] != (t, kt) for p in range(PRODUCERS)) or (tma and weights[stage] != (t, kt)):
                    errors.append(f"warp {w}: tile {t} k {kt} read from stage {stage} holding {slots[stage]}")
                readers[stage].add((w, gid))
                reads[0] += 1
                groups.append((gid, stage))
                gid += 1
                yield "step"
                keep = 1 if broken != "free_unretired" else 2
                while len(groups) > keep:  # wgmma.wait_group(1)
                    g, s = groups.pop(0)
                    readers[s].discard((w, g))
                if broken == "free_current":
                    empty[stage].arrive(errors, f"warp {w}")
                elif kt > 0:
                    empty[previous].arrive(errors, f"warp {w}")
                previous = stage
                if not pingpong:
                    stage += 1
                    if stage == stages:
                        stage, phase = 0, phase ^ 1
                yield "step"
            if pingpong:
                turn[0 if broken == "shared_turn" else 1 - group_of_warp].arrive(errors, f"warp {w}")
            while groups:  # wgmma.wait_group(0)
                g, s = groups.pop(0)
                readers[s].discard((w, g))
            if k_tiles > 0 and broken != "free_current" and broken != "no_final_free":
                empty[previous].arrive(errors, f"warp {w}")
            yield "step"  # the epilogue

    agents = [producer(p) for p in range(PRODUCERS)] + [consumer(w) for w in range(WARPS)]
    alive = list(range(len(agents)))
    stuck = {}
    while alive or in_flight_copies:
        # Land a random issued copy now and then (copies of one thread land in order).
        if in_flight_copies and rng.random() < 0.4:
            firsts = {}
            for i, (p, _, _) in enumerate(in_flight_copies):
                firsts.setdefault(p, i)
            p, stage, what = in_flight_copies.pop(rng.choice(list(firsts.values())))
            if readers[stage]:
                errors.append(f"producer {p}: {what} lands in stage {stage} while groups {sorted(readers[stage])} read it")
            if p == "tma":
                weights[stage] = what
                full[stage].complete_tx(1)
            else:
                slots[stage][p] = what
                full[stage].arrive(errors, f"producer {p}")
            stuck.clear()
            continue
        if not alive:
            continue
        i = rng.choice(alive)
        try:
            state = next(agents[i])
        except StopIteration:
            alive.remove(i)
            stuck.clear()
            continue
        if state == "wait":
            stuck[i] = True
            if len(stuck) == len(alive) and not in_flight_copies:
                errors.append(f"deadlock: every agent waits ({len(alive)} alive)")
                return errors
        else:
            stuck.clear()
        if errors:
            return errors
    expected = (WARPS // 2) * tiles * k_tiles if pingpong else WARPS * tiles * k_tiles
    if reads[0] != expected:
        errors.append(f"{reads[0]} k tiles multiplied, not {expected}")
    return errors


def producer_maps(tile_n, swiglu, tma, broken=None):
    """The producer's staging map, as the kernel computes it: for every (thread, i) of the 128 producer threads
    (chunk t % 8, row t / 8 + 16 i) and, with TMA, every 64-row box j at byte offset j * 8192, what lands in each
    (operand, tile row, chunk) slot of a stage. Returns errors: a slot written twice or never, or a B row holding
    another weight row than the tile's column n_first + r (SwiGLU: gate rows n_first + r for r < tile_n / 2, the
    same up rows after)."""
    errors = []
    n_first = 0  # a column tile's first weight row; the map is relative to it
    slots = {}

    def put(key, value):
        if key in slots:
            errors.append(f"slot {key} written twice")
        slots[key] = value

    b_rows_per_thread = tile_n // 16
    half = b_rows_per_thread // 2 if swiglu else b_rows_per_thread
    for t in range(128):
        chunk, row_base = t & 7, t >> 3
        for i in range(8):  # kARowsPerThread
            put(("A", row_base + 16 * i, chunk), ("x row of tile row", row_base + 16 * i))
        if tma:
            continue
        for i in range(b_rows_per_thread):
            r = row_base + 16 * i
            matrix = "up" if swiglu and i >= half else ("gate" if swiglu else "w")
            weight_row = n_first + row_base + 16 * (i % half if broken != "b_row" else i)
            put(("B", r, chunk), (matrix, weight_row))
    if tma:
        boxes = tile_n // 64
        half_boxes = boxes // 2 if swiglu else boxes
        for j in range(boxes):
            offset = j * 64 * 128  # bytes into the B stage
            row0 = n_first + 64 * (j % half_boxes if broken != "box_row" else j)
            matrix = "up" if swiglu and j >= half_boxes else ("gate" if swiglu else "w")
            for r in range(64):
                for chunk in range(8):
                    put(("B", offset // 128 + r, chunk), (matrix, row0 + r))
    for r in range(128):
        for chunk in range(8):
            if ("A", r, chunk) not in slots:
                errors.append(f"A row {r} chunk {chunk} never staged")
    for r in range(tile_n):
        want = ("up", n_first + r - tile_n // 2) if swiglu and r >= tile_n // 2 else (
            ("gate" if swiglu else "w"), n_first + r)
        for chunk in range(8):
            got = slots.get(("B", r, chunk))
            if got != want:
                errors.append(f"B row {r} chunk {chunk}: {got}, want {want}")
    return errors


def main():
    failures = 0
    for tile_n in (128, 256):
        for swiglu in (False, True):
            for tma in (False, True):
                bad = producer_maps(tile_n, swiglu, tma)
                failures += bool(bad)
                print(f"staging map, {tile_n} columns, {'SwiGLU' if swiglu else 'plain'}, "
                      f"{'TMA' if tma else 'cp.async'} weights: {'ok' if not bad else 'FAILED: ' + bad[0]}")
    for broken, tma in (("b_row", False), ("box_row", True)):
        caught = bool(producer_maps(256, True, tma, broken))
        print(f"broken staging map {broken}: {'caught' if caught else 'NOT CAUGHT'}")
        failures += not caught
    # (tiles, k tiles, stages): the kernel's rings are 6 stages (128 columns) and 4 (256); k_tiles 0 is k = 0.
    shapes = [(1, 1, 4), (3, 5, 4), (4, 12, 4), (2, 32, 5), (5, 3, 5), (0, 4, 4), (6, 1, 4), (2, 9, 4), (3, 0, 6),
              (7, 8, 6), (9, 3, 6), (8, 1, 6), (5, 13, 4), (10, 2, 2)]
    for tma, pingpong in ((False, False), (True, False), (False, True), (True, True)):
        for tiles, k_tiles, stages in shapes:
            bad = [run(tiles, k_tiles, stages, seed, tma=tma, pingpong=pingpong) for seed in range(60)]
            bad = [e for e in bad if e]
            status = "ok" if not bad else f"FAILED: {bad[0][:2]}"
            failures += bool(bad)
            print(f"{'TMA weights, ' if tma else ''}{'ping-pong, ' if pingpong else ''}{tiles} tiles x {k_tiles} k "
                  f"tiles, {stages} stages, 60 schedules: {status}")
    for broken in ("producer_parity", "no_phase_flip", "free_current", "free_unretired", "no_final_free",
                   "empty_count", "tma_count", "tma_no_expect", "pingpong_count", "pingpong_position",
                   "pingpong_unordered", "shared_turn"):
        caught = any(run(tiles, k_tiles, stages, seed, broken, tma=broken.startswith("tma"),
                         pingpong=broken.startswith("pingpong") or broken == "shared_turn")
                     for tiles, k_tiles, stages in shapes for seed in range(20))
        print(f"broken variant {broken}: {'caught' if caught else 'NOT CAUGHT'}")
        failures += not caught
    print("all checks passed" if failures == 0 else f"{failures} checks failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
