/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Maps of the XDP program: the only interface between it and userspace
 * (router/src/io/bpf/). Included once, by xorlay.bpf.c.
 *
 * The structs userspace reads or writes are declared here only:
 * router/build.rs (build-support/c_structs.rs) turns each into a
 * #[repr(C)] Rust struct with the same members (io::bpf::abi; the list is
 * ABI_STRUCTS in build.rs), and a test compares those with the layout clang
 * gives them (the object's BTF). So write them in the form that parser
 * reads: one member per line (__u8/__u16/__u32/__u64/__be16, an array of
 * them with an integer or XORLAY_* length, or an earlier generated struct),
 * every pad byte a member, a member's comment after it or above it.
 */
#ifndef XORLAY_MAPS_H
#define XORLAY_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "wire.h"
#include "consts.h"

/*
 * One counter per verdict and drop reason (index: XORLAY_XDP_* in
 * consts.h). Per-CPU, so the hot path increments without atomics;
 * userspace sums the CPUs. Every packet increments exactly one counter.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, XORLAY_XDP_STAT_COUNT);
} xorlay_stats SEC(".maps");

/*
 * The neighbor allowlist: the underlay IP addresses of the neighbors with
 * an authenticated session. Data packets from any other
 * source are dropped (XORLAY_XDP_DROP_NOT_NEIGHBOR). The control thread
 * keeps it equal to its set of session peers (NeighborMap::sync in
 * router/src/io/bpf/neighbors.rs); the program only looks keys up.
 *
 * One map serves both families: an IPv4 source is stored as the v4-mapped
 * IPv6 address ::ffff:a.b.c.d, the form the workers' dual-stack sockets
 * report it in.
 */
struct xorlay_neighbor_key {
	__u8 addr[16]; /* IPv6 source address, or ::ffff:<IPv4 source> */
	__be16 port;   /* 0 in every entry: neighbors are admitted by IP, whatever
			* UDP source port they forward from (the flow ports of wire.h) */
	__u16 pad;     /* 0 in every entry (the hash covers every key byte) */
} __attribute__((aligned(4))); /* addr is read as 32-bit words */

_Static_assert(sizeof(struct xorlay_neighbor_key) == XORLAY_NEIGHBOR_KEY_LEN, "key length");
_Static_assert(_Alignof(struct xorlay_neighbor_key) == 4, "key alignment");

/* xorlay_neighbors is defined below, after struct xorlay_bucket. */

/*
 * Runtime configuration, written by userspace only (RouteCache in
 * router/src/io/bpf/routes.rs; the loader writes the defaults before the
 * program can run). One entry, key 0. The program reads it without a lock:
 * the fields are independent, and each 8-byte field is written whole.
 *
 * Rates: packets per second and burst (bucket depth) of each token bucket;
 * pps 0 = that limit is off. A burst below 1 counts as 1.
 */
struct xorlay_config {
	__u8 local_id[XORLAY_NODE_ID_LEN]; /* this node's ID (valid if flags & XORLAY_CONFIG_F_LOCAL_ID) */
	__u64 generation;                  /* route entries of another generation are misses */
	__u64 idle_timeout_ns;             /* entries unused for longer are misses; 0 = never */
	__u32 handshake_source_pps;        /* HANDSHAKE_1 per source IP */
	__u32 handshake_source_burst;
	__u32 handshake_global_pps;        /* HANDSHAKE_1 from all sources together */
	__u32 handshake_global_burst;
	__u32 neighbor_pps;                /* data per neighbor (IP), per CPU */
	__u32 neighbor_burst;
	__u32 flags;                       /* XORLAY_CONFIG_F_* */
	__u32 pad;                         /* 0 */
};

_Static_assert(sizeof(struct xorlay_config) == XORLAY_CONFIG_LEN, "config length");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct xorlay_config);
	__uint(max_entries, 1);
} xorlay_config SEC(".maps");

/*
 * A token bucket as GCRA state: the theoretical arrival time of the next
 * packet, in CLOCK_MONOTONIC_COARSE nanoseconds (bpf_ktime_get_coarse_ns:
 * it moves in steps of a kernel tick, so userspace raises a burst below one
 * tick's worth of tokens to that, or the rate would be capped at
 * burst / tick). A packet at `now` conforms if
 * max(tat, now) + interval - now <= burst * interval (interval = 1 s / pps);
 * then tat becomes max(tat, now) + interval. Equivalent to a bucket of
 * `burst` tokens refilled at `pps`, in one word.
 */
struct xorlay_bucket {
	__u64 tat_ns;
};

/*
 * Per-source HANDSHAKE_1 buckets, keyed by the source IP (16 bytes,
 * v4-mapped for IPv4). LRU: a flood of spoofed sources evicts the oldest
 * buckets; the global bucket bounds the total either way. Updated without
 * a lock: two CPUs racing on one source's bucket can each admit a packet
 * (at most one extra per racing CPU); the global bucket is exact.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, __u8[16]);
	__type(value, struct xorlay_bucket);
	__uint(max_entries, XORLAY_HANDSHAKE_SOURCES_MAX);
} xorlay_handshake_sources SEC(".maps");

/*
 * The global HANDSHAKE_1 bucket: one entry shared by every CPU, updated
 * under its spin lock so the global rate holds exactly however RSS spreads
 * the sources over CPUs. (Per-CPU buckets at rate/ncpus would need the CPU
 * count and would starve a CPU that one flood lands on while others idle.)
 * Only HANDSHAKE_1 packets that passed their source's bucket take the lock.
 */
struct xorlay_global_bucket {
	struct bpf_spin_lock lock;
	__u32 pad;
	__u64 tat_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct xorlay_global_bucket);
	__uint(max_entries, 1);
} xorlay_handshake_global SEC(".maps");

/*
 * Load shedding for the workers, the fallback behind the credits of
 * xorlay_backlog (below): the budget of data packets XDP passes to
 * userspace (cache misses, unresolved hits, local delivery), all CPUs
 * together. Written only by the router's control thread, which sets it
 * while the workers' sockets overflow (their receive queues drop packets
 * after the kernel built an skb for each: receive livelock) and clears it
 * (pps 0 = no budget) once the load fits again. Excess is then dropped here,
 * at the cost of an XDP drop, and counted as DROP_SHED. Not pinned: a new
 * instance starts without a budget and measures its own workers.
 */
struct xorlay_shed {
	__u32 pps;   /* 0 = no budget */
	__u32 burst;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct xorlay_shed);
	__uint(max_entries, 1);
} xorlay_shed SEC(".maps");

/* The budget's bucket (exact across CPUs, like the global handshake one). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct xorlay_global_bucket);
	__uint(max_entries, 1);
} xorlay_shed_bucket SEC(".maps");

/*
 * Load shedding by queue: credits per worker. XDP passes a data packet to a
 * worker only while fewer than `window` of the packets it passed to that
 * worker are unread (admitted - consumed); beyond, it drops the packet
 * (DROP_SHED) instead of letting the kernel build an skb only to drop it at
 * the full socket queue, however long the receive path keeps the CPU from
 * the worker. XDP adds to `admitted`; the worker writes `consumed` after
 * every batch (the data packets it read), and the window (0 = no limit)
 * once, through a shared mapping of this array (BPF_F_MMAPABLE): no system
 * call. Packets lost between XDP and the socket would hold credits forever,
 * so the worker sets `consumed` to `admitted` whenever it finds its socket
 * queue empty; the difference is compared signed, so a worker a little
 * ahead admits, never blocks. `workers` is the number of workers (0: off);
 * a packet's worker is xorlay_worker_of() (wire.h), as the steering program
 * picks it. router/src/io/backlog.rs; docs/xdp.md, "Load shedding". Not
 * pinned: a new instance starts with fresh credits.
 */
struct xorlay_credit {
	__u64 admitted; /* data packets XDP passed to this worker */
	__u64 consumed; /* of those, what the worker has read */
	__u32 window;   /* most unread at once; 0 = no limit */
	__u32 pad[11];  /* one cache line per worker */
};

struct xorlay_backlog {
	__u32 workers; /* 0 = off */
	__u32 pad[15];
	struct xorlay_credit worker[XORLAY_WORKERS_MAX];
};

_Static_assert(sizeof(struct xorlay_credit) == 64, "one cache line per worker");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct xorlay_backlog);
	__uint(max_entries, 1);
} xorlay_backlog SEC(".maps");

/*
 * The neighbor allowlist: a key per established neighbor's underlay source
 * (written by userspace only: NeighborMap::sync inserts missing keys with
 * zeroed values and deletes stale ones, never rewriting a kept key). The
 * value is that neighbor's data bucket, one per CPU (per-CPU hash: no
 * atomics, no shared cache line on the hot path), so one lookup both admits
 * a packet and meters it. Each CPU's bucket has the full configured rate: a
 * neighbor gets `pps` on each CPU its traffic lands on. Forwarding
 * neighbors send from flow ports (wire.h), so RSS spreads a neighbor's
 * flows over queues: its total is at most pps * receiving CPUs, and on each
 * CPU, which is what one neighbor could starve the others of, it is at
 * most pps. A zeroed bucket is full.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__type(key, struct xorlay_neighbor_key);
	__type(value, struct xorlay_bucket);
	__uint(max_entries, XORLAY_NEIGHBORS_MAX);
} xorlay_neighbors SEC(".maps");

/*
 * The route cache: destination node ID -> where the workers would send a
 * data packet for it. Written by userspace (RouteCache::install,
 * install_no_route); the program reads entries and refreshes last_used_ns.
 *
 * An entry is valid if its generation equals xorlay_config.generation and it
 * was used (or installed) at most idle_timeout_ns ago; anything else is a
 * miss. Addresses are IPv6 or v4-mapped IPv4; both must be of the ingress
 * packet's family (no family change in XDP), else the entry is a miss.
 *
 * The key is the destination alone, but a relay without a route of its own
 * to a destination routes toward the via its packets carry (the
 * destination's beacon, which sources may disagree on). Such an entry has
 * XORLAY_ROUTE_F_VIA and the via's first XORLAY_ROUTE_VIA_TAG_LEN bytes in
 * via_tag, and applies only to packets with flag VIA and a via starting
 * with the tag: any other packet for dst is a miss (to the workers, without
 * refreshing the entry). Otherwise two relays holding different vias for
 * one destination could each cache the other as its next hop: a loop in XDP
 * until the hop limit. An entry without the flag comes from the
 * destination's own route and applies to every packet for dst, via or not.
 */
struct xorlay_route_key {
	__u8 id[XORLAY_NODE_ID_LEN];
};

struct xorlay_route {
	__u8 next_hop_addr[16]; /* the next hop's underlay IP (::ffff:a.b.c.d for IPv4) */
	__u8 source_addr[16];   /* our IP toward it, same family */
	__be16 next_hop_port;   /* UDP destination port, network order */
	__be16 source_port;     /* the workers' UDP source port (the overlay port), network
				 * order; the program sends from the flow port instead */
	__u32 flags;            /* XORLAY_ROUTE_F_* */
	__u64 generation;       /* xorlay_config.generation when installed */
	__u64 installed_ns;     /* CLOCK_MONOTONIC_COARSE (bpf_ktime_get_coarse_ns) at install */
	__u64 last_used_ns;     /* last hit (refreshed by the program), or installed_ns */
	__u8 via_tag[XORLAY_ROUTE_VIA_TAG_LEN]; /* with XORLAY_ROUTE_F_VIA: the first bytes of the
						 * via the entry was made for; else 0 */
	/*
	 * The program's L2 cache of the next hop (xorlay.bpf.c, resolve_l2);
	 * userspace writes zeros, so every install resolves afresh.
	 */
	__u64 l2_checked_ns;    /* when the FIB last resolved it (0: never) */
	__u32 l2_ifindex;       /* egress interface */
	__u16 l2_max_len;       /* longest IP packet the FIB accepted there (MTU) */
	__u8 l2_dmac[6];        /* the next hop's MAC */
	__u8 l2_smac[6];        /* the egress interface's MAC */
	__u8 l2_pad[6];
};

_Static_assert(sizeof(struct xorlay_route_key) == XORLAY_NODE_ID_LEN, "route key length");
_Static_assert(sizeof(struct xorlay_route) == XORLAY_ROUTE_LEN, "route length");
_Static_assert(XORLAY_ROUTE_VIA_TAG_LEN == sizeof(__u64), "the program compares the via tag as one word");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct xorlay_route_key);
	__type(value, struct xorlay_route);
	__uint(max_entries, XORLAY_ROUTES_MAX);
} xorlay_routes SEC(".maps");

/*
 * Egress devices for XDP_REDIRECT, keyed by ifindex (a DEVMAP_HASH: ifindex
 * values are sparse, a plain DEVMAP would need max_entries above the largest
 * one). XdpRouter::attach adds every interface it attaches to; a FIB result
 * on any other interface is passed to the stack (XORLAY_XDP_PASS_FIB_MISS).
 */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val); /* ifindex, no chained program */
	__uint(max_entries, XORLAY_TX_PORTS_MAX);
} xorlay_tx_ports SEC(".maps");

/*
 * Pinning (router/src/io/bpf/takeover.rs, `[xdp] pin_dir`): with a pin directory,
 * userspace pins every map above and the owner record below there by name
 * (EbpfLoader::map_pin_path, not a `pinning` attribute here, so that loads
 * without a pin directory -- the fixture tests -- never touch bpffs), and
 * the next instance reuses them. A pinned map is reused only if its type,
 * key size, value size and max_entries equal what this build expects
 * (PINNED_MAPS in router/src/io/bpf/pins.rs): change a map's layout here
 * and that table fails its test until it follows, and running instances'
 * pins are cleared (not reused) by the new build.
 *
 * The owner record: which process owns the pins (the XDP links in the pin
 * directory and these maps). Written by userspace only, never read by the
 * program. bpffs holds no regular files, hence a map.
 */
struct xorlay_owner {
	__u32 pid;        /* owning process */
	__u32 pad;        /* 0 */
	__u64 start_time; /* its start time, clock ticks after boot (/proc/<pid>/stat field 22) */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct xorlay_owner);
	__uint(max_entries, 1);
} xorlay_owner SEC(".maps");

/* Adds one to counter `index` on this CPU. */
static __always_inline void stats_count(__u32 index)
{
	__u64 *value = bpf_map_lookup_elem(&xorlay_stats, &index);

	if (value)
		*value += 1;
}

#endif /* XORLAY_MAPS_H */
