/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Steering: an SK_REUSEPORT program on the workers' SO_REUSEPORT group that
 * picks the worker socket for each overlay datagram from a hash of its
 * destination and source node IDs. The kernel's own choice hashes the UDP
 * 4-tuple, so everything a neighbor sends (one address and port) would land
 * on one worker; this spreads overlay flows across workers while keeping
 * each flow on one worker (no reordering within a flow).
 *
 * ctx data starts at the UDP header. A datagram too short to carry both IDs
 * is left to the kernel's choice (SK_PASS without a selection); the worker
 * counts it as malformed.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "wire.h"
#include "consts.h"

#define UDP_HEADER_LEN 8

struct {
	__uint(type, BPF_MAP_TYPE_REUSEPORT_SOCKARRAY);
	__type(key, __u32);
	__type(value, __u32); /* a socket fd on update (aya's ReusePortSockArray) */
	__uint(max_entries, XORLAY_WORKERS_MAX);
} xorlay_workers SEC(".maps");

/* Sockets in xorlay_workers (indices 0..n-1); set by the loader. */
volatile const __u32 xorlay_worker_count = 1;

SEC("sk_reuseport")
int xorlay_steer(struct sk_reuseport_md *ctx)
{
	__u64 dst = 0, src = 0;
	__u32 index, count = xorlay_worker_count;

	if (count == 0 || count > XORLAY_WORKERS_MAX)
		return SK_PASS;
	if (bpf_skb_load_bytes(ctx, UDP_HEADER_LEN + XORLAY_OFF_DST, &dst, sizeof(dst)) < 0)
		return SK_PASS;
	if (bpf_skb_load_bytes(ctx, UDP_HEADER_LEN + XORLAY_OFF_SRC, &src, sizeof(src)) < 0)
		return SK_PASS;
	index = xorlay_worker_of(dst, src, count);
	/* On failure (empty slot) the kernel falls back to its own choice. */
	bpf_sk_select_reuseport(ctx, &xorlay_workers, &index, 0);
	return SK_PASS;
}

char _license[] SEC("license") = "Dual BSD/GPL";
