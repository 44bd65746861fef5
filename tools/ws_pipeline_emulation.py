#!/usr/bin/env python3
"""Randomised-interleaving emulation of the producer/consumer protocol of grouped_gemm_sm90_ws_kernel in
src/kernels/cuda/grouped_gemm_sm90_ws.cu: the stage ring, the `full` and `empty` mbarriers, their phase
parities, the cp.async arrivals and the wgmma groups, with the kernel's own bookkeeping (stage, phase,
`previous`), checked over many random schedules without a GPU (written 2026-12-05, when the kernel was new and
no device could be had; GpuGrouped.Sm90WarpSpecializedEqualsOneTilePerBlock is the real check). The operand
arithmetic is the one-tile-per-block kernel's, which tools/wgmma_gemm_emulation.py checks. The block-pair form
(kPair, two blocks of a cluster sharing each weight tile by TMA multicast) is modelled too (run_pair, written
2026-12-06 before the form first ran on an H100, where it passed its tests). Usage: python3 tools/ws_pipeline_emulation.py (standard library only, seconds;
exit 0 = no schedule deadlocks or reads a stage that does not hold the k tile it expects or overwrites a stage
that products still read, the same for block pairs with the checks listed under "Block pairs" below, the
producer's staging map (cp.async rows and TMA boxes, a pair's from both blocks) fills every slot of a stage once
with the right weight row, and every deliberately broken variant is caught). Keep it in step with the kernel.

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
  * Idle halves (kSkipIdleHalves, split tiles; run(rows=...), written 2026-12-06 after the form passed its GPU
    tests): the second warpgroup of a tile of at most 64 rows waits on each stage's `full` and frees it at once,
    reading nothing; the first warpgroup multiplies as usual. (Ping-pong's skip changes which wgmma a warpgroup
    issues, not the protocol.)

Block pairs (kPair: TMA weights, no ping-pong; run_pair), from the PTX ISA's clusters, "mapa", "mbarrier" and
"cp.async.bulk.tensor" (.multicast::cluster):
  * Blocks 0 and 1 of a cluster run the same sequence of pair tiles; at each, block r takes row tile
    2 (seq / n_tiles) + r of one expert (the row-tile table pads an expert's odd tile count with a tile of 0 rows,
    and both blocks reach the table's end, expert -1, at the same pair tile). Consumer warpgroup c is active when
    the block's tile has more than 64 c rows. Each block: PRODUCERS producer agents and WARPS consumer agents.
  * Thread 0 of each block initialises its barriers; every agent of both blocks then meets at a cluster barrier
    (barrier.cluster arrive + wait), and again at the end, the producers after cp.async.wait_all. A block exits
    when all its agents have; nothing may be issued into a block before its barriers are initialised, nor land
    in it after it exited.
  * full[s]: PRODUCERS + 1 arrivals (the noinc arrivals of the block's own A copies, thread 0's arrive.expect_tx
    of all the stage's boxes) and the transaction count. empty[s]: 2 WARPS arrivals, both blocks' warps.
  * Producer: waits on its own empty[stage] (parity phase ^ 1); thread 0 arrives with expect_tx and issues the
    boxes j with j % 2 == rank, each multicast: it lands in each block at its own time, writes the box into that
    block's stage and counts down that block's full[stage], possibly before that block's expect_tx of the phase
    (the count goes below 0 for a while, as the real mbarrier allows within a phase; the phase completes only with
    all arrivals in and the count back at 0).
  * Consumer: waits on its block's full[stage]; active: checks that the stage holds its block's A rows and every
    box (both blocks' halves) of the k tile it expects, with no write into it in flight, multiplies, then after
    wgmma.wait_group(1) frees the previous stage, and after the k loop wait_group(0) and frees the last; inactive:
    frees each stage at once after its full wait. A free is an arrival on empty[stage] of both blocks (mapa +
    mbarrier.arrive.shared::cluster, CTA-scope release as CUTLASS's cluster barrier), each in flight until it
    lands, at the latest at the warp's next cluster barrier (whose release covers it).
  * Every copy, box and arrival carries the ring lap it is for and must land in that phase of its barrier (a box
    for the next lap landing on a barrier still in the previous phase is an error, as is an arrival that would
    complete a phase early), every wait must pass with its barrier exactly one phase past the awaited one, no copy
    or box is issued into or lands in a stage that unretired wgmma groups of the destination block read, and at
    the end every full and empty barrier sits at a phase boundary, one phase per use of its stage.
  * A producer waiting on the partner's empty instead of its own (not expressible: try_wait is CTA-local) is
    checked to be as safe: no full phase of a lap completes before both producers passed their waits for it.
"""
import random
import sys

PRODUCERS, WARPS = 3, 4


class Barrier:
    def __init__(self, count):
        self.count, self.pending, self.phase, self.tx = count, count, 0, 0

    def arrive(self, errors, what, expect_tx=0, target=None):
        if self.pending <= 0:
            errors.append(f"{what}: arrival on a completed phase")
            return
        self.check_target(errors, what, target)
        self.tx += expect_tx
        self.pending -= 1
        self.settle()

    def complete_tx(self, n, errors=None, what="", target=None):
        self.check_target(errors, what, target)
        self.tx -= n  # may go below 0 for a while (bytes landed before the phase's expect_tx): no completion then
        self.settle()

    def check_target(self, errors, what, target):  # block pairs: each arrival and landing names the phase it is for
        if target is not None and target != self.phase:
            errors.append(f"{what}: meant for phase {target}, lands in phase {self.phase}")

    def settle(self):  # a phase completes once its arrivals are in and its transaction count is back at 0
        if self.pending == 0 and self.tx == 0:
            self.phase += 1
            self.pending = self.count

    def done(self, parity):
        return self.phase % 2 != parity


def schedule(rng, agents, in_flight, land_one, errors, on_exit=None, alive=None):
    """Interleaves the agents (generators that yield "wait" while blocked, anything else after a step) with the
    landing of what is in flight (land_one lands one item of the list in_flight), at random, until every agent
    has finished and nothing is in flight. A deadlock (every live agent waiting, nothing in flight) and any
    error an agent or a landing records end it. on_exit(i) runs when agent i finishes; `alive` (a list, filled
    here) lets it see the agents still running."""
    if alive is None:
        alive = []
    alive[:] = range(len(agents))
    stuck = {}
    while (alive or in_flight) and not errors:
        if in_flight and (not alive or rng.random() < 0.4):
            land_one()
            stuck.clear()
            continue
        i = rng.choice(alive)
        try:
            state = next(agents[i])
        except StopIteration:
            alive.remove(i)
            stuck.clear()
            if on_exit:
                on_exit(i)
            continue
        if state == "wait":
            stuck[i] = True
            if len(stuck) == len(alive) and not in_flight:
                errors.append(f"deadlock: every agent waits ({len(alive)} alive)")
        else:
            stuck.clear()


def run(tiles, k_tiles, stages, seed, broken=None, tma=False, pingpong=False, rows=None):
    """One block: `tiles` tiles of `k_tiles` k tiles each over a ring of `stages`; tma: the weight half of each
    stage comes by TMA (producer 0 arrives with expect_tx, the box lands later and counts its bytes down).
    rows (split tiles, kSkipIdleHalves): each tile's row count; the second warpgroup (warps WARPS / 2 on) of a
    tile of at most 64 rows is idle: it waits on each of the tile's stages' `full` and frees the stage at once,
    multiplying nothing (the kernel's branch outside the k loop).
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
            if not pingpong and rows is not None and rows[t] <= 64 * group_of_warp:  # an idle half
                for kt in range(k_tiles):
                    while broken != "skip_no_wait" and not full[stage].done(phase):
                        yield "wait"
                    if broken != "skip_silent":
                        empty[stage].arrive(errors, f"warp {w} (idle)")
                    stage += 1
                    if stage == stages:
                        stage, phase = 0, phase ^ 1
                    yield "step"
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

    def land_one():  # a random issued copy (copies of one thread land in order)
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

    schedule(rng, agents, in_flight_copies, land_one, errors)
    if errors:
        return errors
    if pingpong:
        expected = (WARPS // 2) * tiles * k_tiles
    elif rows is not None:
        expected = sum(WARPS if r > 64 else WARPS // 2 for r in rows[:tiles]) * k_tiles
    else:
        expected = WARPS * tiles * k_tiles
    if reads[0] != expected:
        errors.append(f"{reads[0]} k tiles multiplied, not {expected}")
    return errors


class Rendezvous:
    """barrier.cluster.arrive + wait (or __syncthreads within one block): each of `count` agents arrives once
    per use, and all of them go on once the last has arrived."""

    def __init__(self, count):
        self.count, self.arrived, self.generation = count, 0, 0

    def arrive(self):
        self.arrived += 1
        if self.arrived == self.count:
            self.arrived, self.generation = 0, self.generation + 1


ROWS = 128  # a row tile; consumer warpgroup c multiplies rows [64 c, 64 c + 64) of it


def run_pair(tiles, k_tiles, stages, boxes, seed, broken=None):
    """A cluster of two blocks (kPair): `tiles` lists the pair tiles of the cluster's sequence as (rows of block
    0's row tile, rows of block 1's), `k_tiles` k tiles each, a ring of `stages` in each block and `boxes` 64-row
    TMA boxes per stage (2 for 128-column tiles, 4 for 256), box j issued by block j % 2's thread 0 and multicast
    to both blocks. Every asynchronous effect is an item in flight that lands later, at the scheduler's choice:
    a producer thread's copies of A (then its noinc arrival; one thread's land in order), a box in one block (the
    two landings of one multicast are independent), a consumer warp's arrival on an `empty` barrier of either
    block (mapa + mbarrier.arrive.shared::cluster: performed before the warp's next cluster barrier, by its
    release). Returns a list of errors."""
    rng = random.Random(f"{seed} {tiles} {k_tiles} {stages} {boxes}")  # (str seeds are hashed the same every run)
    errors = []
    full = [[Barrier(PRODUCERS + 1) for _ in range(stages)] for _ in range(2)]  # + thread 0's arrive.expect_tx
    empty = [[Barrier(WARPS if broken == "pair_empty_count" else 2 * WARPS) for _ in range(stages)]
             for _ in range(2)]
    initialised, exited = [False, False], [False, False]
    a_slots = [[[None] * PRODUCERS for _ in range(stages)] for _ in range(2)]  # per producer thread: (block, seq, kt)
    b_boxes = [[[None] * boxes for _ in range(stages)] for _ in range(2)]  # per box: (seq, kt)
    readers = [[set() for _ in range(stages)] for _ in range(2)]  # (warp, group id) of unretired wgmma groups
    writing = [[0] * stages for _ in range(2)]  # copies and boxes issued into the stage, not landed
    in_flight = []
    agents_per_block = PRODUCERS + WARPS
    cluster = Rendezvous(2 * agents_per_block)
    block_sync = [Rendezvous(agents_per_block) for _ in range(2)]
    start = (lambda b: block_sync[b]) if broken == "pair_no_initial_sync" else (lambda b: cluster)
    reads = [0]
    # The rows of the row tile each block takes at each pair tile; the sequence ends where the table's entries
    # end (expert -1: break), for both blocks at once since the table pairs each expert's row tiles.
    sequence = [[rows[r] for rows in tiles] for r in range(2)]
    if broken == "pair_unpaired":  # block 1's row tile past the table's used entries one pair tile early
        sequence[1] = sequence[1][:-1]

    def issue(item):
        d, stage = item["dst"], item["stage"]
        if not initialised[d]:  # nothing would order the block's mbarrier.init before the landing
            errors.append(f"{item['who']}: {item['kind']} issued into block {d} before it initialised its barriers")
        if item["kind"] != "arrive":
            if readers[d][stage]:
                errors.append(f"{item['who']}: {item['kind']} issued into block {d} stage {stage} while groups "
                              f"{sorted(readers[d][stage])} read it")
            writing[d][stage] += 1
        in_flight.append(item)

    def land(item):
        kind, d, stage, lap = item["kind"], item["dst"], item["stage"], item["lap"]
        where = f"{item['who']}: {kind} into block {d} stage {stage} (ring lap {lap})"
        if not initialised[d]:
            errors.append(f"{where} lands before the block initialised its barriers")
            return
        if exited[d]:
            errors.append(f"{where} lands after the block exited")
            return
        if kind == "arrive":
            empty[d][stage].arrive(errors, where, target=lap)
            return
        writing[d][stage] -= 1
        if readers[d][stage]:
            errors.append(f"{where} lands while groups {sorted(readers[d][stage])} read it")
        if kind == "copy":
            a_slots[d][stage][item["p"]] = item["what"]
            full[d][stage].arrive(errors, where, target=lap)
        else:
            b_boxes[d][stage][item["j"]] = item["what"]
            full[d][stage].complete_tx(1, errors, where, target=lap)

    def rendezvous(bar, agent):
        # .release: the agent's own remote arrivals are performed before its arrival on the cluster barrier.
        for item in [x for x in in_flight if x["kind"] == "arrive" and x["src"] == agent]:
            in_flight.remove(item)
            land(item)
        generation = bar.generation
        bar.arrive()
        yield "step"  # (it may have let the others go)
        while bar.generation == generation:
            yield "wait"

    def wait(bar, parity, want, who):  # mbarrier_wait; want: the barrier's phase once the awaited one completed
        while not bar.done(parity):
            yield "wait"
        if bar.phase != want:  # a parity wait cannot tell phase want from want + 2
            errors.append(f"{who}: passes its wait with the barrier in phase {bar.phase}, not {want}")

    def producer(b, p, agent):
        if p == 0:
            initialised[b] = True  # thread 0: mbarrier.init of every full and empty, fence.mbarrier_init
        yield from rendezvous(start(b), agent)
        position = 0  # ring position: stage position % stages, parity bit (position / stages) & 1
        for seq in range(len(sequence[b])):
            for kt in range(k_tiles):
                stage, lap = position % stages, position // stages
                who = f"block {b} producer {p} (pair tile {seq}, k {kt})"

                def multicast():  # the boxes of this block's parity, each to both blocks
                    for j in range(boxes):
                        if j % 2 == (0 if broken == "pair_box_parity" else b):
                            for d in ((b,) if broken == "pair_no_multicast" else (0, 1)):
                                issue({"kind": "box", "dst": d, "stage": stage, "lap": lap, "j": j, "what": (seq, kt),
                                       "src": agent, "who": who})

                if p == 0 and broken == "pair_box_early":
                    multicast()
                waited = empty[1 - b if broken == "pair_wait_partner" else b][stage]
                yield from wait(waited, (lap & 1) ^ 1, lap, who)
                if p == 0:  # arrive.expect_tx on its own full barrier: the stage's B bytes, both halves
                    full[b][stage].arrive(errors, who, boxes // 2 if broken == "pair_expect_half" else boxes, lap)
                    if broken != "pair_box_early":
                        multicast()
                issue({"kind": "copy", "dst": b, "stage": stage, "lap": lap, "p": p, "what": (b, seq, kt),
                       "src": agent, "who": who})
                position += 1
                yield "step"
        while any(x["kind"] == "copy" and x["src"] == agent for x in in_flight):  # cp.async.wait_all
            yield "wait"
        if broken != "pair_no_final_sync":
            yield from rendezvous(cluster, agent)

    def consumer(b, w, agent):
        c = w * 2 // WARPS  # the warp's warpgroup
        yield from rendezvous(start(b), agent)
        position = 0
        groups = []  # (group id, stage) not yet retired, oldest first
        gid = 0

        def free(stage, lap):  # both blocks' empty[stage] (either block's refill writes into both)
            for d in ((b,) if broken == "pair_free_own" else (0, 1)):
                issue({"kind": "arrive", "dst": d, "stage": stage, "lap": lap, "src": agent,
                       "who": f"block {b} warp {w}"})

        for seq, rows in enumerate(sequence[b]):
            active = rows > c * (ROWS // 2)
            previous = None
            for kt in range(k_tiles):
                stage, lap = position % stages, position // stages
                who = f"block {b} warp {w} (pair tile {seq}, k {kt})"
                if active or broken != "pair_inactive_no_wait":
                    yield from wait(full[b][stage], lap & 1, lap + 1, who)
                if active:
                    if (any(a != (b, seq, kt) for a in a_slots[b][stage]) or
                            any(x != (seq, kt) for x in b_boxes[b][stage]) or writing[b][stage]):
                        errors.append(f"{who}: reads stage {stage} holding A {a_slots[b][stage]}, B boxes "
                                      f"{b_boxes[b][stage]}, {writing[b][stage]} writes in flight")
                    readers[b][stage].add((w, gid))
                    reads[0] += 1
                    groups.append((gid, stage))
                    gid += 1
                    yield "step"
                    while len(groups) > 1:  # wgmma.wait_group(1)
                        g, s = groups.pop(0)
                        readers[b][s].discard((w, g))
                    if kt > 0:
                        free(*previous)
                elif broken != "pair_inactive_silent":
                    free(stage, lap)  # nothing read it
                previous = (stage, lap)
                position += 1
                yield "step"
            if not active:
                continue
            while groups:  # wgmma.wait_group(0)
                g, s = groups.pop(0)
                readers[b][s].discard((w, g))
            if k_tiles > 0:
                free(*previous)
            yield "step"  # the epilogue
        if broken != "pair_no_final_sync":
            yield from rendezvous(cluster, agent)

    agents, block_of = [], []
    for b in range(2):
        for p in range(PRODUCERS):
            agents.append(producer(b, p, len(agents)))
            block_of.append(b)
        for w in range(WARPS):
            agents.append(consumer(b, w, len(agents)))
            block_of.append(b)

    def land_one():  # a random item in flight (a thread's copies land in order)
        copy_threads, choices = set(), []
        for index, item in enumerate(in_flight):
            if item["kind"] == "copy":
                if item["src"] in copy_threads:
                    continue
                copy_threads.add(item["src"])
            choices.append(index)
        land(in_flight.pop(rng.choice(choices)))

    def on_exit(i):  # a block has exited once all its agents have
        b = block_of[i]
        if not any(block_of[j] == b for j in live):
            exited[b] = True

    live = []
    schedule(rng, agents, in_flight, land_one, errors, on_exit, live)
    if errors:
        return errors
    expected = sum(k_tiles for b in range(2) for rows in sequence[b] for w in range(WARPS)
                   if rows > (w * 2 // WARPS) * (ROWS // 2))
    if reads[0] != expected:
        errors.append(f"{reads[0]} k tiles multiplied, not {expected}")
    for b in range(2):  # every barrier back at a phase boundary, one phase per use of its stage
        for s in range(stages):
            uses = len([q for q in range(len(sequence[b]) * k_tiles) if q % stages == s])
            for name, bar in (("full", full[b][s]), ("empty", empty[b][s])):
                if (bar.phase, bar.pending, bar.tx) != (uses, bar.count, 0):
                    errors.append(f"block {b} {name}[{s}] ends in phase {bar.phase} with {bar.pending} arrivals "
                                  f"and {bar.tx} tx pending, not phase {uses}")
    return errors


def producer_maps(tile_n, swiglu, tma, broken=None, pair=False):
    """The producer's staging map, as the kernel computes it: for every (thread, i) of the 128 producer threads
    (chunk t % 8, row t / 8 + 16 i) and, with TMA, every 64-row box j at byte offset j * 8192, what lands in each
    (operand, tile row, chunk) slot of a stage. Returns errors: a slot written twice or never, or a B row holding
    another weight row than the tile's column n_first + r (SwiGLU: gate rows n_first + r for r < tile_n / 2, the
    same up rows after). pair: the boxes of a block's stage are those both blocks of the cluster multicast, box j
    from block j % 2 (the A rows stay the block's own)."""
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
        issued = [(rank, j) for rank in range(2) for j in range(boxes)
                  if j % 2 == (0 if broken == "box_rank" else rank)] if pair else [(0, j) for j in range(boxes)]
        for _, j in issued:
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
    for tile_n in (128, 256):
        for swiglu in (False, True):
            bad = producer_maps(tile_n, swiglu, True, pair=True)
            failures += bool(bad)
            print(f"staging map, {tile_n} columns, {'SwiGLU' if swiglu else 'plain'}, TMA weights from both blocks "
                  f"of a pair: {'ok' if not bad else 'FAILED: ' + bad[0]}")
    for broken, tma, pair in (("b_row", False, False), ("box_row", True, False), ("box_rank", True, True)):
        caught = bool(producer_maps(256, True, tma, broken, pair))
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
    # Split tiles with idle halves (kSkipIdleHalves): rows per tile, the short ones an expert's last tile.
    for tiles, k_tiles, stages in shapes:
        if tiles == 0:
            continue
        bad = []
        for seed in range(60):
            rows = [random.Random(seed * 31 + t).choice((1, 20, 64, 65, 100, 128)) for t in range(tiles)]
            bad += [e for e in [run(tiles, k_tiles, stages, seed, tma=seed % 2 == 1, rows=rows)] if e]
        failures += bool(bad)
        print(f"idle halves, {tiles} tiles x {k_tiles} k tiles, {stages} stages, 60 schedules: "
              f"{'ok' if not bad else f'FAILED: {bad[0][:2]}'}")
    for broken in ("skip_silent", "skip_no_wait"):
        caught = next((e for tiles, k_tiles, stages in shapes if tiles > 0 and k_tiles > 0 for seed in range(20)
                       for e in [run(tiles, k_tiles, stages, seed, broken,
                                     rows=[64 if (t + seed) % 2 else 128 for t in range(tiles)])] if e), None)
        print(f"broken idle-half variant {broken}: {'caught: ' + caught[0] if caught else 'NOT CAUGHT'}")
        failures += not caught
    for broken in ("producer_parity", "no_phase_flip", "free_current", "free_unretired", "no_final_free",
                   "empty_count", "tma_count", "tma_no_expect", "pingpong_count", "pingpong_position",
                   "pingpong_unordered", "shared_turn"):
        caught = any(run(tiles, k_tiles, stages, seed, broken, tma=broken.startswith("tma"),
                         pingpong=broken.startswith("pingpong") or broken == "shared_turn")
                     for tiles, k_tiles, stages in shapes for seed in range(20))
        print(f"broken variant {broken}: {'caught' if caught else 'NOT CAUGHT'}")
        failures += not caught
    # Block pairs: each cluster's pair tiles as (rows of block 0's row tile, rows of block 1's). The table pads an
    # expert's odd row-tile count with a tile of 0 rows (block 1's); rows <= 64: warpgroup 2 idle. The rings:
    # 6 stages with 2 boxes (128 columns), 4 with 4 (256).
    pair_tiles = [
        [(128, 128)],
        [(128, 0)],
        [(128, 128), (128, 128), (128, 128)],
        [(128, 128), (40, 0), (128, 128)],
        [(128, 100), (128, 64), (0, 128), (70, 0)],
        [(64, 0), (128, 30), (128, 128), (100, 0), (128, 128), (1, 0)],
    ]
    pair_shapes = [(tiles, k_tiles, stages, 2 if stages == 6 else 4) for tiles in pair_tiles for stages in (6, 4)
                   for k_tiles in (0, 1, 3, 5, 8, 13)]
    for tiles in pair_tiles:
        for stages in (6, 4):
            boxes = 2 if stages == 6 else 4
            bad = [run_pair(tiles, k_tiles, stages, boxes, seed)
                   for k_tiles in (0, 1, 3, 5, 8, 13) for seed in range(30)]
            bad = [e for e in bad if e]
            failures += bool(bad)
            print(f"block pair, pair tiles (rows per block) {tiles}, {stages} stages, {boxes} boxes, k tiles "
                  f"0/1/3/5/8/13, 30 schedules each: {'ok' if not bad else f'FAILED: {bad[0][:2]}'}")
    # Not a bug: each producer waiting on the partner's `empty` instead of its own (which mbarrier.try_wait, CTA-local,
    # could not do anyway) is as safe, since no block's `full` phase of a ring lap completes before both producers
    # have passed their waits for that lap (each needs the other's boxes), and either wait covers all 16 warps.
    for harmless in ("pair_wait_partner",):
        bad = [e for shape in pair_shapes for seed in range(10) for e in [run_pair(*shape, seed, harmless)] if e]
        failures += bool(bad)
        print(f"equivalent pair variant {harmless}: {'ok' if not bad else f'FAILED: {bad[0][:2]}'}")
    for broken in ("pair_empty_count", "pair_free_own", "pair_box_early", "pair_no_final_sync",
                   "pair_inactive_silent", "pair_inactive_no_wait", "pair_expect_half", "pair_no_multicast",
                   "pair_box_parity", "pair_no_initial_sync", "pair_unpaired"):
        caught = next((e for shape in pair_shapes for seed in range(20) for e in [run_pair(*shape, seed, broken)]
                       if e), None)
        print(f"broken pair variant {broken}: {'caught: ' + caught[0] if caught else 'NOT CAUGHT'}")
        failures += not caught
    print("all checks passed" if failures == 0 else f"{failures} checks failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
