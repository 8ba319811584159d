"""Collectives over the chip-to-chip links: per-step decomposition, a simpy event simulation with link
contention, a contention-free analytical evaluator, and closed forms.

Modules
-------
* :mod:`.closed_form` -- closed forms on uniform rings and paths;
* :mod:`.schedule` -- a collective decomposed into per-step transfers, and their contention-free time;
* :mod:`.network` -- the event simulation: links as shared resources, :class:`CollectiveModel` for simpy
  processes (contention between collectives in flight);
* :mod:`.standalone` -- one or several collectives simulated on their own (``infsim collective``).

The engine and both analytical fidelities time collectives through their own interface
(:mod:`infsim.engine.collectives`), whose ``link`` model (:mod:`infsim.engine.collectives.link`) is the
contention-free time of this package's schedules.

Operations (``S`` = ``nbytes``, ``p`` ranks = NeuronCores, NCCL conventions):

* ``all_reduce``: every rank holds ``S`` bytes and ends with the element-wise sum.
* ``all_gather``: every rank contributes ``S / p`` bytes and ends with all ``S``.
* ``reduce_scatter``: every rank holds ``S`` bytes and ends with its reduced ``S / p`` shard.
* ``send_recv``: the first rank of the group sends ``S`` bytes to the last.

Algorithms (ranks are put in ring order by :meth:`Topology.ring_order`: chip ring position, then local core):

* ``ring``: reduce-scatter then all-gather around the ring, ``p - 1`` steps each, messages of ``S / p``.
* ``bidir``: two rings in opposite directions, each on half the data (both directions of every link work;
  same step count), run as two independent pipelines (channels) on every rank.
* ``tree``: binomial tree rooted at rank 0; all-reduce = reduce (``ceil(log2 p)`` steps of ``S``) then
  broadcast; all-gather = gather (a subtree's shards) then broadcast of ``S``; reduce-scatter = reduce then
  scatter (a subtree's shards). Latency-optimal step count, bandwidth-poor.
* ``hier``: needs the same number ``c`` of ranks on each of ``q`` chips. all-reduce = intra-chip ring
  reduce-scatter, then ``c`` concurrent inter-chip rings (one per local core index, each all-reducing its
  ``S / c`` shard; they share the NeuronLinks, odd-numbered rings run in the opposite direction so both
  directions of each link are used), then intra-chip ring all-gather. all-gather = inter-chip rings
  (``S / c`` each) then intra-chip all-gather; reduce-scatter = intra-chip then inter-chip reduce-scatter.

Timing model of one step (what is included)
-------------------------------------------
A rank starts its sends of step ``s`` when every message addressed to it in an earlier step (on the same
channel) has arrived and its own previous sends have left its links (data dependencies only; there is no
global barrier, so a slow hop's latency overlaps other hops' work). Each send then costs

    collective_step_overhead_ns          (fixed: semaphore synchronisation, DMA descriptor and launch)
  + message_bytes / path_gbps            (serialisation; the path's slowest link)
  + path latency_ns                      (sum of per-hop latencies; pipelined, does not occupy the link)
  + message_bytes / collective_reduce_gbps   (on receipt, reduce steps only; 0 = not modelled, the default)

and every rank pays ``collective_launch_overhead_ns`` once before its first step. On a uniform ring (every
hop the same single link) this gives exactly the closed forms below, e.g. for all-reduce
``launch + 2(p-1) * (S/p / link_gbps + latency_ns + step_overhead_ns)`` (+ ``(p-1) * S/p / reduce_gbps``).

Contention: every directed link is a first-come-first-served resource (see :class:`LinkNetwork`). A
message is cut into ``min(max_chunks, ceil(bytes / min_chunk_bytes))`` equal chunks (8 and 4 KiB by
default: a simulation granularity, not hardware) and each chunk reserves every link of its path for its
serialisation time (circuit-style cut-through). Flows on a shared link therefore interleave chunk by chunk
in arrival order (approximate fair sharing: equal competitors finish at most one chunk, <= 1/8 of a
message, apart), from this collective or any other in flight on the same :class:`CollectiveModel`. Bytes
and busy time are counted per link (for ``link_pj_per_bit`` energy: :attr:`CollectiveResult.link_energy_j`
counts NeuronLink bytes only).

Left out (documented assumptions): contention for the reduction engines (with ``collective_reduce_gbps``
set, each reduction is a plain delay at the receiver; unset, it is free), HBM/SBUF traffic of the
collective buffers, packet headers and flow control, the on-chip hop of inter-chip messages (see
:mod:`infsim.hw.links`), and message sizes that do not divide evenly (the model uses the fluid size
``S / p``; bytes are floats).

Units: all inputs and results are in ns and bytes; ``link_gbps`` is GB/s = bytes per ns. A simpy
environment whose time unit is not 1 ns is supported through ``ns_per_unit`` (e.g. cycles of a clock).

First sanity estimate: Llama-2-7B decode at TP 24 on inf2.48xlarge
-------------------------------------------------------------------
hidden 4096 x bf16 = 8 KiB per all-reduce, 2 per layer x 32 layers = 64 all-reduces per token. The
published TPOT is 6.47 ms ([INF2-PERF] in docs/references.md) against a ~1.3 ms HBM roofline (ours); if the
whole 5.17 ms gap were collectives, each all-reduce would take 80.8 us. With this model and the inf2 preset's
link figures (NeuronLink 103.1 GB/s, 1000 ns per hop; on-chip 435.2 GB/s, 500 ns) and launch overhead 0:

* ring over 24 ranks (46 steps, each on the critical path paying the step overhead once; the hops
  alternate on-chip and NeuronLink, whose latencies overlap as described above): 34.6 us with no step
  overhead, so 80.8 us needs a per-step overhead of about 1.00 us (the preset's assumed 500 ns gives
  57.6 us per all-reduce, 3.7 ms per token);
* bidir: the same 46 steps, so the same ~1.0 us (halving 341-byte messages saves nothing at decode sizes);
* hier (1 + 22 + 1 = 24 steps): 23.1 us without overhead; about 2.40 us per step would be needed;
* tree (binomial, 2 x 5 levels of which 9 lie on the critical path for p = 24, ring paths up to 8 hops):
  15.6 us without overhead; about 7.2 us per step would be needed.

So a ~1 us fixed cost per ring step (semaphore round trip + DMA descriptor launch, the same order as the
~1.3 us DMA fixed cost of [NKI-DMA]) explains the published figure if Neuron runs a flat
ring; the gap also contains attention, KV-cache and launch overheads, so this is an upper bound on the
per-step cost. Both the per-hop ``latency_ns`` and the step overhead are assumed in the presets, so the
published figure constrains their sum on the critical path (about 46 x 2 us for the flat ring), not each
alone. The presets are NOT tuned to it (``benchmarks/collectives.py`` recomputes these numbers).
"""

from .closed_form import (
    bus_factor,
    ring_all_gather_time_ns,
    ring_all_reduce_time_ns,
    ring_reduce_scatter_time_ns,
    send_recv_time_ns,
    tree_all_reduce_time_ns,
)
from .network import DEFAULT_MAX_CHUNKS, DEFAULT_MIN_CHUNK_BYTES, CollectiveModel, CollectiveRecord, LinkNetwork
from .schedule import ALGORITHMS, OPS, Schedule, Transfer, build_schedule, contention_free_time_ns, uniform_ring_hop
from .standalone import CollectiveResult, CollectiveSpec, simulate_collective, simulate_concurrent

__all__ = [
    "ALGORITHMS", "DEFAULT_MAX_CHUNKS", "DEFAULT_MIN_CHUNK_BYTES", "OPS", "CollectiveModel", "CollectiveRecord",
    "CollectiveResult", "CollectiveSpec", "LinkNetwork", "Schedule", "Transfer", "build_schedule", "bus_factor",
    "contention_free_time_ns", "ring_all_gather_time_ns", "ring_all_reduce_time_ns", "ring_reduce_scatter_time_ns",
    "send_recv_time_ns", "simulate_collective", "simulate_concurrent", "tree_all_reduce_time_ns",
    "uniform_ring_hop",
]
