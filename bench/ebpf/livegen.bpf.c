/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * The live-frames traffic generator of xorlay-bench (bench/src/livegen.rs).
 *
 * Never attached: userspace runs it with BPF_PROG_TEST_RUN and
 * BPF_F_TEST_XDP_LIVE_FRAMES, a large `repeat` per call and ctx_in naming
 * the generator's interface as the ingress device. Every run gets a frame
 * from the test run's page pool; XDP_TX turns into a redirect out of that
 * interface (to its veth peer), XDP_DROP just recycles the page.
 *
 * Pages are recycled without being reset, and a receiving XDP program (a
 * router) may have rewritten a page before it came back, so every run
 * rewrites the whole Ethernet + IPv4 + UDP + overlay header (LG_HDR_LEN
 * bytes) from the template in lg_frame, then the payload's stamp: the
 * sequence number (trial << 40 | n) and bpf_ktime_get_ns()
 * (CLOCK_MONOTONIC), both big endian. Bytes past the stamp are whatever the
 * page held: the sink reads only the stamp.
 *
 * Pacing: with interval_ns != 0 a run before next_due is an idle run
 * (XDP_DROP, counted); the program spins on the generator's CPU. A due run
 * advances next_due by interval_ns, after resetting it to now when it fell
 * more than LG_LAG_MAX_NS behind (no catch-up bursts). Once `sent` reaches
 * `limit` every run drops.
 *
 * Flood: with flood_per_packet = k > 0, each packet of the stream is
 * followed by k frames built from the second template (lg_frame[1]: the
 * same overlay packet from an underlay source that is no neighbor of the
 * receiver), each taking a due slot of its own: the wire carries (1 + k)
 * frames per stream packet, at the paced rate. Flood frames carry no stamp
 * and do not count toward `sent` or `limit`.
 *
 * Flows: with flows = f > 1, stream packet n carries (n mod f) XORed into
 * the first four bytes of its overlay source node ID (big endian): f
 * sources behind one generator, so a receiver that spreads traffic by
 * overlay flow (the router's worker steering) sees f flows instead of one.
 * Flood frames are left as their template.
 *
 * Concurrency: lg_state is a plain array, read and written without atomics.
 * That is correct because one test run executes its repeats one after
 * another in the calling thread (on one CPU at a time, never two runs in
 * parallel) and userspace runs at most one test run of a loaded program at a
 * time, reading the counters only between calls.
 *
 * The structs below are mirrored in bench/src/livegen.rs (#[repr(C)], sizes
 * and offsets asserted on both sides).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "wire.h"

/* Ethernet 14 + IPv4 (no options) 20 + UDP 8 + overlay header. */
#define LG_HDR_LEN (14 + 20 + 8 + XORLAY_HDR_LEN)
/* The overlay source node ID in the frame. */
#define LG_SRC_OFF (14 + 20 + 8 + XORLAY_OFF_SRC)
/* Sequence number and send time, at the start of the overlay payload. */
#define LG_STAMP_LEN 16
/* Template bytes: the header rounded up to whole 8-byte words. */
#define LG_TEMPLATE_LEN 120
/* A next_due further behind than this is reset to now. */
#define LG_LAG_MAX_NS 1000000ULL

_Static_assert(LG_HDR_LEN == 114, "header length");
_Static_assert(LG_TEMPLATE_LEN % 8 == 0 && LG_TEMPLATE_LEN >= LG_HDR_LEN, "template");

struct lg_frame {
	__u8 bytes[LG_TEMPLATE_LEN]; /* bytes[0..LG_HDR_LEN] is the header */
};

struct lg_state {
	/* Configuration, written by userspace before the first call. */
	__u64 interval_ns; /* between packets; 0 = unpaced */
	__u64 limit;       /* packets to send, then drop */
	__u64 seq_base;    /* trial << 40 */
	/* State and counters, written by the program. */
	__u64 next_due;    /* ktime ns of the next packet (paced) */
	__u64 sent;        /* XDP_TX verdicts; also the next packet number */
	__u64 idle;        /* runs dropped waiting for next_due */
	__u64 done;        /* runs dropped after the limit */
	__u64 short_frame; /* runs aborted: frame shorter than header + stamp */
	__u64 flood_per_packet; /* config: flood frames after each stream packet */
	__u64 phase;       /* flood frames still due before the next packet */
	__u64 flood_sent;  /* flood frames transmitted */
	__u64 first_ns;    /* ktime of the first transmitted frame (0: none) */
	__u64 last_ns;     /* ktime of the last transmitted frame */
	__u64 flows;       /* config: overlay sources to cycle (0, 1: one) */
};

_Static_assert(sizeof(struct lg_frame) == 120, "lg_frame size");
_Static_assert(sizeof(struct lg_state) == 112, "lg_state size");
_Static_assert(__builtin_offsetof(struct lg_state, next_due) == 24, "next_due");
_Static_assert(__builtin_offsetof(struct lg_state, short_frame) == 56, "short_frame");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2); /* 0: the stream's template, 1: the flood's */
	__type(key, __u32);
	__type(value, struct lg_frame);
} lg_frame SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lg_state);
} lg_state SEC(".maps");

/* Writes v big endian at p, byte by byte (p is only 2-byte aligned). */
static __always_inline void put_be64(__u8 *p, __u64 v)
{
#pragma unroll
	for (int i = 0; i < 8; i++)
		p[i] = (__u8)(v >> (56 - 8 * i));
}

SEC("xdp")
int xl_livegen(struct xdp_md *ctx)
{
	__u8 *data = (void *)(long)ctx->data;
	__u8 *end = (void *)(long)ctx->data_end;
	__u32 key = 0, flood_key = 1;
	struct lg_state *st = bpf_map_lookup_elem(&lg_state, &key);
	struct lg_frame *tmpl = bpf_map_lookup_elem(&lg_frame, &key);
	struct lg_frame *flood = bpf_map_lookup_elem(&lg_frame, &flood_key);
	__u64 now, n;

	if (!st || !tmpl || !flood)
		return XDP_ABORTED;
	if (data + LG_HDR_LEN + LG_STAMP_LEN > end) {
		st->short_frame++;
		return XDP_ABORTED;
	}
	/* The last packet's flood frames still go out. */
	if (st->sent >= st->limit && !st->phase) {
		st->done++;
		return XDP_DROP;
	}
	now = bpf_ktime_get_ns();
	if (st->interval_ns) {
		if (now < st->next_due) {
			st->idle++;
			return XDP_DROP;
		}
		if (now - st->next_due > LG_LAG_MAX_NS)
			st->next_due = now;
		st->next_due += st->interval_ns;
	}
	if (!st->first_ns)
		st->first_ns = now;
	st->last_ns = now;
	if (st->phase) {
		st->phase--;
		st->flood_sent++;
#pragma unroll
		for (int i = 0; i < LG_HDR_LEN / 8; i++)
			((__u64 *)data)[i] = ((__u64 *)flood->bytes)[i];
		*(__u16 *)(data + LG_HDR_LEN - 2) = *(__u16 *)(flood->bytes + LG_HDR_LEN - 2);
		return XDP_TX;
	}
	st->phase = st->flood_per_packet;
	n = st->sent++;

	/* The header: 14 words and a half-word. The frame starts at the
	 * page's headroom, 8-byte aligned; the copy is correct either way. */
#pragma unroll
	for (int i = 0; i < LG_HDR_LEN / 8; i++)
		((__u64 *)data)[i] = ((__u64 *)tmpl->bytes)[i];
	*(__u16 *)(data + LG_HDR_LEN - 2) = *(__u16 *)(tmpl->bytes + LG_HDR_LEN - 2);

	if (st->flows > 1) {
		__u32 f = (__u32)(n % st->flows);
		__u8 *src = data + LG_SRC_OFF;
#pragma unroll
		for (int i = 0; i < 4; i++)
			src[i] ^= (__u8)(f >> (24 - 8 * i));
	}

	put_be64(data + LG_HDR_LEN, st->seq_base | (n & ((1ULL << 40) - 1)));
	put_be64(data + LG_HDR_LEN + 8, now);
	return XDP_TX;
}

char _license[] SEC("license") = "Dual BSD/GPL";
