/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Maps of the XDP program: the only interface between it and userspace
 * (router/src/io/bpf.rs). Included once, by xorlay.bpf.c.
 */
#ifndef XORLAY_MAPS_H
#define XORLAY_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

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
 * The neighbor allowlist: the underlay addresses (IP, UDP port) of the
 * neighbors with an authenticated session. Data packets from any other
 * source are dropped (XORLAY_XDP_DROP_NOT_NEIGHBOR). The control thread
 * keeps it equal to its set of session peers (NeighborMap::sync in
 * router/src/io/bpf.rs); the program only looks keys up.
 *
 * One map serves both families: an IPv4 source is stored as the v4-mapped
 * IPv6 address ::ffff:a.b.c.d, the form the workers' dual-stack sockets
 * report it in. The Rust side (NeighborKey) asserts its layout against the
 * XORLAY_NEIGHBOR_KEY_* constants pinned below.
 */
struct xorlay_neighbor_key {
	__u8 addr[16]; /* IPv6 source address, or ::ffff:<IPv4 source> */
	__be16 port;   /* UDP source port, network byte order */
	__u16 pad;     /* 0 in every entry (the hash covers every key byte) */
} __attribute__((aligned(4))); /* addr is read as 32-bit words */

_Static_assert(sizeof(struct xorlay_neighbor_key) == XORLAY_NEIGHBOR_KEY_LEN, "key length");
_Static_assert(_Alignof(struct xorlay_neighbor_key) == 4, "key alignment");
_Static_assert(__builtin_offsetof(struct xorlay_neighbor_key, addr) == XORLAY_NEIGHBOR_KEY_OFF_ADDR, "addr");
_Static_assert(__builtin_offsetof(struct xorlay_neighbor_key, port) == XORLAY_NEIGHBOR_KEY_OFF_PORT, "port");
_Static_assert(__builtin_offsetof(struct xorlay_neighbor_key, pad) == XORLAY_NEIGHBOR_KEY_OFF_PAD, "pad");

/* Value of xorlay_neighbors: reserved flags, 0 for now. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct xorlay_neighbor_key);
	__type(value, __u32);
	__uint(max_entries, XORLAY_NEIGHBORS_MAX);
} xorlay_neighbors SEC(".maps");

/* Adds one to counter `index` on this CPU. */
static __always_inline void stats_count(__u32 index)
{
	__u64 *value = bpf_map_lookup_elem(&xorlay_stats, &index);

	if (value)
		*value += 1;
}

#endif /* XORLAY_MAPS_H */
