/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * The XDP counting sink of xorlay-bench: counts benchmark traffic in the
 * kernel, at rates a UDP socket cannot take. Attached (native XDP) to the
 * sink's interface; userspace is bench/src/xdpsink.rs.
 *
 * Every IPv4 or IPv6 UDP frame to port xls_cfg.port whose payload starts
 * with an overlay header (magic, version) of type DATA is counted and
 * dropped. Everything else passes untouched: ARP, other ports, IP fragments,
 * IPv6 with extension headers, and overlay CONTROL packets (a router's
 * handshakes to the sink's socket must still reach it).
 *
 * Per counted packet, as loadgen's socket sink does (bench/src/loadgen.rs):
 *   received    every counted packet;
 *   malformed   not to xls_cfg.me, payload_len not the rest of the datagram,
 *               hop limit 0, or a payload shorter than the 16-byte stamp;
 *   stale       sequence number of another trial than the current one;
 *   valid       the rest; of those, unique or duplicate (a bitmap of packet
 *               numbers; numbers beyond it count as unique, unchecked),
 *               reordered (a lower number than the highest seen), and the
 *               one-way latency (now - stamp) in a log-linear histogram.
 *
 * Trials without clearing anything: userspace writes xls_state =
 * (epoch << 32) | trial, with a new epoch (1..2^24-1) for every trial.
 * Everything the program keeps is tagged with the epoch it was written in,
 * and an entry of another epoch reads as empty:
 *   - the per-CPU stats entry is zeroed by its own CPU on the first packet
 *     of a new epoch (userspace sums only entries of the current epoch);
 *   - each bitmap word carries its epoch in its high 32 bits (32 packet
 *     numbers per word), updated with compare-and-swap;
 *   - the highest packet number carries the epoch in its top 24 bits.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "wire.h"
#include "parsing.h"

/* Bits of the sequence number that count packets within a trial. */
#define XLS_SEQ_BITS 40
#define XLS_SEQ_MASK ((1ULL << XLS_SEQ_BITS) - 1)
/* Bytes of the payload's (sequence, send time) stamp. */
#define XLS_STAMP_LEN 16
/* Slowest latency recorded; longer is clamped (loadgen's LATENCY_MAX_NS). */
#define XLS_LATENCY_MAX_NS 10000000000ULL
/* Packet numbers per bitmap word (the other 32 bits hold the epoch). */
#define XLS_SEEN_BITS 32
/* Compare-and-swap attempts before giving up on a contended word. */
#define XLS_CAS_TRIES 4

/* Counter indexes in struct xls_stats (XdpSink's COUNTER_* in Rust). */
#define XLS_RECEIVED 0
#define XLS_VALID 1
#define XLS_UNIQUE 2
#define XLS_DUPLICATES 3
#define XLS_REORDERED 4
#define XLS_STALE 5
#define XLS_MALFORMED 6
#define XLS_UNCHECKED 7 /* unique, but not checked against the bitmap */
#define XLS_COUNTERS 8

/*
 * Latency buckets: values below 16 ns exactly; above, by the position m of
 * the most significant bit and the 4 bits after it:
 *   bucket = (m - 3) * 16 + ((v >> (m - 4)) & 15),
 * so each power of two is cut into 16 equal buckets. All of u64 fits in
 * 976 buckets; the clamp to XLS_LATENCY_MAX_NS uses fewer than 500.
 */
#define XLS_BUCKETS 1024

/* Load-time configuration (EbpfLoader::override_global). */
struct xls_cfg {
	__u8 me[XORLAY_NODE_ID_LEN] __attribute__((aligned(8))); /* the sink's node ID */
	__u64 seen_words;            /* entries of xls_seen */
	__u16 port;                  /* UDP port, host byte order */
	__u8 pad[6];
};

_Static_assert(sizeof(struct xls_cfg) == 48, "xls_cfg layout (Config in Rust)");

volatile const struct xls_cfg xls_cfg = {};

/* What one CPU counted in epoch `epoch`. */
struct xls_stats {
	__u32 epoch;
	__u32 pad;
	__u64 counters[XLS_COUNTERS];
	__u64 latency[XLS_BUCKETS];
};

_Static_assert(sizeof(struct xls_stats) == 8 + 8 * XLS_COUNTERS + 8 * XLS_BUCKETS,
	       "xls_stats layout (Stats in Rust)");

/* (epoch << 32) | trial, written by userspace only. Key 0. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} xls_state SEC(".maps");

/* Counters and latency histogram, per CPU. Key 0. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct xls_stats);
	__uint(max_entries, 1);
} xls_stats SEC(".maps");

/*
 * The duplicate bitmap: word i holds packet numbers 32i..32i+31 in its low
 * bits and its epoch in the high 32. Sized by userspace at load time
 * (max_entries = xls_cfg.seen_words).
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} xls_seen SEC(".maps");

/* (epoch << 40) | highest packet number of that epoch. Key 0. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} xls_highest SEC(".maps");

/* A volatile access: one load, or a store clang may not merge away. */
#define XLS_VOLATILE(x) (*(volatile __typeof__(x) *)&(x))

/*
 * Whether a packet's destination ID is xls_cfg.me. Word by word through the
 * volatile object: a memcpy from a cast-away const would let clang fold in
 * the zero initializer.
 */
static __always_inline int is_me(const __u8 *dst)
{
	const volatile __u64 *me = (const volatile __u64 *)xls_cfg.me;
	__u64 x[4];

	__builtin_memcpy(x, dst, sizeof(x));
	return ((x[0] ^ me[0]) | (x[1] ^ me[1]) | (x[2] ^ me[2]) | (x[3] ^ me[3])) == 0;
}

/* A big-endian u64 from the packet (bounds checked by the caller). */
static __always_inline __u64 load_be64(const __u8 *p)
{
	__u64 v;

	__builtin_memcpy(&v, p, sizeof(v));
	return bpf_be64_to_cpu(v);
}

/* The histogram bucket of `v` (see XLS_BUCKETS); v >= 1. */
static __always_inline __u32 latency_bucket(__u64 v)
{
	__u64 x = v;
	__u32 m = 0;

	if (x >> 32) {
		x >>= 32;
		m += 32;
	}
	if (x >> 16) {
		x >>= 16;
		m += 16;
	}
	if (x >> 8) {
		x >>= 8;
		m += 8;
	}
	if (x >> 4) {
		x >>= 4;
		m += 4;
	}
	if (x >> 2) {
		x >>= 2;
		m += 2;
	}
	if (x >> 1)
		m += 1;
	if (m < 4)
		return (__u32)v;
	return (m - 3) * 16 + (__u32)((v >> (m - 4)) & 15);
}

/*
 * Marks packet number n in the bitmap. Returns 1 if it was marked before in
 * this epoch, 0 if not, -1 if it is not tracked (beyond the bitmap, or the
 * word stayed contended).
 */
static __always_inline int mark_seen(__u64 epoch, __u64 n)
{
	__u64 index = n / XLS_SEEN_BITS;
	__u64 bit = 1ULL << (n % XLS_SEEN_BITS);
	__u32 key;
	__u64 *word;

	if (index >= xls_cfg.seen_words)
		return -1;
	key = (__u32)index;
	word = bpf_map_lookup_elem(&xls_seen, &key);
	if (!word)
		return -1;
#pragma unroll
	for (int i = 0; i < XLS_CAS_TRIES; i++) {
		__u64 old = XLS_VOLATILE(*word);
		__u64 new;

		if ((old >> 32) == epoch) {
			if (old & bit)
				return 1;
			new = old | bit;
		} else {
			new = (epoch << 32) | bit;
		}
		if (__sync_val_compare_and_swap(word, old, new) == old)
			return 0;
	}
	return -1;
}

/*
 * Raises the highest packet number of this epoch to n. Returns whether n is
 * below it (a reordered packet). A duplicate of the highest is not.
 */
static __always_inline int note_order(__u64 epoch, __u64 n)
{
	__u32 key = 0;
	__u64 *highest = bpf_map_lookup_elem(&xls_highest, &key);
	__u64 want = (epoch << XLS_SEQ_BITS) | n;

	if (!highest)
		return 0;
#pragma unroll
	for (int i = 0; i < XLS_CAS_TRIES; i++) {
		__u64 old = XLS_VOLATILE(*highest);

		if ((old >> XLS_SEQ_BITS) == epoch && n <= (old & XLS_SEQ_MASK))
			return n < (old & XLS_SEQ_MASK);
		if (__sync_val_compare_and_swap(highest, old, want) == old)
			return 0;
	}
	return 0;
}

/* This CPU's stats for `epoch`, zeroed first if they are of another. */
static __always_inline struct xls_stats *stats_for(__u32 epoch)
{
	__u32 key = 0;
	struct xls_stats *s = bpf_map_lookup_elem(&xls_stats, &key);

	if (!s)
		return NULL;
	if (s->epoch != epoch) {
		/* Volatile stores: clang would turn the loops into a memset
		 * call, which BPF does not have. A bounded loop; once per CPU
		 * and trial. */
		for (int i = 0; i < XLS_COUNTERS; i++)
			XLS_VOLATILE(s->counters[i]) = 0;
		for (int i = 0; i < XLS_BUCKETS; i++)
			XLS_VOLATILE(s->latency[i]) = 0;
		s->epoch = epoch;
	}
	return s;
}

/*
 * Counts one overlay DATA packet: `hdr` is its header (checked against
 * `end`), `len` the UDP payload length (at least XORLAY_HDR_LEN, and within
 * the frame). The stamp after the header is checked here.
 */
static __always_inline void count(const struct xorlay_hdr *hdr, __u32 len, void *end)
{
	__u32 key = 0;
	__u64 *state = bpf_map_lookup_elem(&xls_state, &key);
	const __u8 *stamp = (const __u8 *)(hdr + 1);
	struct xls_stats *s;
	__u64 st, epoch, trial, seq, n, now, sent, latency;
	int seen;

	if (!state)
		return;
	st = XLS_VOLATILE(*state);
	epoch = st >> 32;
	trial = st & 0xffffffff;
	s = stats_for((__u32)epoch);
	if (!s)
		return;
	s->counters[XLS_RECEIVED]++;
	if (!is_me(hdr->dst) ||
	    bpf_ntohs(hdr->payload_len) != len - XORLAY_HDR_LEN || hdr->hop_limit == 0 ||
	    len < XORLAY_HDR_LEN + XLS_STAMP_LEN || (void *)(stamp + XLS_STAMP_LEN) > end) {
		s->counters[XLS_MALFORMED]++;
		return;
	}
	now = bpf_ktime_get_ns();
	seq = load_be64(stamp);
	sent = load_be64(stamp + 8);
	if (seq >> XLS_SEQ_BITS != trial) {
		s->counters[XLS_STALE]++;
		return;
	}
	n = seq & XLS_SEQ_MASK;
	s->counters[XLS_VALID]++;
	seen = mark_seen(epoch, n);
	if (seen > 0) {
		s->counters[XLS_DUPLICATES]++;
	} else {
		s->counters[XLS_UNIQUE]++;
		if (seen < 0)
			s->counters[XLS_UNCHECKED]++;
	}
	if (note_order(epoch, n))
		s->counters[XLS_REORDERED]++;
	latency = now > sent ? now - sent : 1;
	if (latency > XLS_LATENCY_MAX_NS)
		latency = XLS_LATENCY_MAX_NS;
	s->latency[latency_bucket(latency) & (XLS_BUCKETS - 1)]++;
}

SEC("xdp")
int xls_sink(struct xdp_md *ctx)
{
	struct cursor c = {
		.pos = (void *)(long)ctx->data,
		.end = (void *)(long)ctx->data_end,
	};
	__u8 saddr[IP_ADDR_LEN] __attribute__((aligned(4)));
	struct xorlay_hdr *hdr;
	struct udphdr *udp;
	__u32 len;
	int proto;

	proto = parse_eth(&c);
	if (proto == ETH_P_IP)
		proto = parse_ipv4(&c, saddr);
	else if (proto == ETH_P_IPV6)
		proto = parse_ipv6(&c, saddr);
	else
		return XDP_PASS;
	if (proto != IPPROTO_UDP)
		return XDP_PASS;
	udp = parse_udp(&c);
	if (!udp || udp->dest != bpf_htons(xls_cfg.port))
		return XDP_PASS;
	len = bpf_ntohs(udp->len);
	if (len < sizeof(*udp) + XORLAY_HDR_LEN || c.pos + (len - sizeof(*udp)) > c.end)
		return XDP_PASS;
	len -= sizeof(*udp);
	hdr = c.pos;
	if ((void *)(hdr + 1) > c.end)
		return XDP_PASS;
	if (hdr->magic[0] != (XORLAY_MAGIC >> 8) || hdr->magic[1] != (XORLAY_MAGIC & 0xff) ||
	    hdr->version != XORLAY_VERSION || hdr->type != XORLAY_TYPE_DATA)
		return XDP_PASS;
	count(hdr, len, c.end);
	return XDP_DROP;
}

char _license[] SEC("license") = "Dual BSD/GPL";
