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

/* Adds one to counter `index` on this CPU. */
static __always_inline void stats_count(__u32 index)
{
	__u64 *value = bpf_map_lookup_elem(&xorlay_stats, &index);

	if (value)
		*value += 1;
}

#endif /* XORLAY_MAPS_H */
