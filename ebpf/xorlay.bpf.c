/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * The xorlay XDP program. A flat dispatcher, Katran style: each step either
 * returns the final verdict or lets the next one run, and every frame ends in
 * exactly one counter of the `xorlay_stats` map (maps.h). docs/xdp.md
 * documents the maps, counters, cache policy and rate-limit defaults.
 *
 *   Ethernet (+ one VLAN tag) -> IPv4 | IPv6 -> UDP to xorlay_port?
 *     no:  XDP_PASS untouched, PASS_OTHER
 *     yes: 1. validate the overlay header in the order of the Rust parser
 *             (router/src/wire/overlay.rs, Packet::validate): truncated,
 *             magic, version, type, truncated (flag VIA set and shorter
 *             than the whole header), length, hop limit zero.
 *             malformed: XDP_DROP, the reason's DROP_* counter
 *          2. filter (if xorlay_filter_neighbors):
 *             control, HANDSHAKE_1 (payload[0] == 1): the source IP's token
 *               bucket, then the global one: DROP_HANDSHAKE_SOURCE_RATE,
 *               DROP_HANDSHAKE_GLOBAL_RATE; other control packets pass
 *               unmetered (the session layer authenticates them)
 *             data from a source IP not in xorlay_neighbors (any UDP
 *               source port: neighbors forward from flow ports):
 *               DROP_NOT_NEIGHBOR; over the neighbor's bucket:
 *               DROP_NEIGHBOR_RATE
 *          3. route cache (data packets, once userspace set the local ID):
 *             for this node: XDP_PASS, PASS_OVERLAY (never forwarded)
 *             no valid entry (absent, other generation, idle too long,
 *               other family): XDP_PASS, PASS_CACHE_MISS (workers decide)
 *             valid negative entry, packet with a via (flag VIA): XDP_PASS,
 *               PASS_CACHE_MISS (the workers may route it by its via)
 *             valid entry made by a via (XORLAY_ROUTE_F_VIA), packet without
 *               a via or with another one (its first 8 bytes differ from
 *               the entry's tag): XDP_PASS, PASS_CACHE_MISS
 *             valid entry, hop limit 1: XDP_DROP, DROP_HOP_LIMIT_EXCEEDED
 *             valid negative entry: XDP_DROP, DROP_NO_ROUTE
 *             valid entry the kernel must finish (no FIB route or
 *               neighbor, MTU, VLAN tag, IPv4 options, ...): XDP_PASS,
 *               PASS_UNRESOLVED, frame untouched
 *             otherwise: hop limit - 1, outer IP/UDP/Ethernet rewritten
 *               (UDP source port: the flow port of wire.h; a via and the
 *               reserved flag bits stay as they are),
 *               checksums fixed; XDP_TX (FWD_TX) out of the ingress
 *               interface or XDP_REDIRECT (FWD_REDIRECT) via xorlay_tx_ports
 *          4. everything else that is valid: XDP_PASS, PASS_OVERLAY
 *          5. data packets passing to the workers (PASS_CACHE_MISS,
 *             PASS_UNRESOLVED, PASS_OVERLAY of a data packet): over the
 *             shedding budget the router set (xorlay_shed), or while the
 *             worker it steers to has its window of packets unread
 *             (xorlay_backlog): XDP_DROP, DROP_SHED
 *
 * The program writes to a frame only when it forwards it.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "wire.h"
#include "consts.h"
#include "maps.h"
#include "parsing.h"
#include "csum.h"

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

#define NSEC_PER_SEC 1000000000ULL

/*
 * The overlay UDP port, in HOST byte order. Set by the loader before the
 * program is loaded (aya EbpfLoader::override_global("xorlay_port", ..));
 * the kernel sees it as a constant of the frozen .rodata map.
 */
volatile const __u16 xorlay_port = XORLAY_DEFAULT_PORT;

/*
 * 1: the filter step runs (neighbor allowlist and rate limits);
 * 0: it is off (validation alone, for tests and debugging).
 * Set by the loader like xorlay_port; the verifier prunes the dead branch.
 */
volatile const __u8 xorlay_filter_neighbors = 1;

/* Where the frame's headers are; filled by the parse in xorlay_xdp. */
struct frame {
	struct ethhdr *eth;
	void *l3;            /* struct iphdr or struct ipv6hdr */
	struct udphdr *udp;
	int family;          /* AF_INET or AF_INET6 */
	int plain;           /* no VLAN tag and no IPv4 options: the fast path can rewrite it */
};

/*
 * Validates the overlay packet that fills the UDP payload; the cursor is on
 * the first payload byte. Returns the counter index of the verdict:
 * XORLAY_XDP_PASS_OVERLAY or one XORLAY_XDP_DROP_* reason.
 */
static __always_inline __u32 validate_overlay(struct cursor *c, const struct udphdr *udp)
{
	__u32 udp_len = bpf_ntohs(udp->len);
	struct xorlay_hdr *hdr;
	__u32 payload_len, hdr_len;

	/* The UDP length field bounds the payload (the frame may be padded). */
	if (udp_len < sizeof(*udp))
		return XORLAY_XDP_DROP_TRUNCATED;
	payload_len = udp_len - sizeof(*udp);
	/* It claims more bytes than the frame holds. */
	if (c->pos + payload_len > c->end)
		return XORLAY_XDP_DROP_TRUNCATED;
	if (payload_len < XORLAY_HDR_LEN)
		return XORLAY_XDP_DROP_TRUNCATED;

	hdr = c->pos;
	/* Implied by the two checks above; the verifier needs it spelled out. */
	if ((void *)(hdr + 1) > c->end)
		return XORLAY_XDP_DROP_TRUNCATED;

	if (hdr->magic[0] != (XORLAY_MAGIC >> 8) || hdr->magic[1] != (XORLAY_MAGIC & 0xff))
		return XORLAY_XDP_DROP_BAD_MAGIC;
	if (hdr->version != XORLAY_VERSION)
		return XORLAY_XDP_DROP_BAD_VERSION;
	if (hdr->type != XORLAY_TYPE_DATA && hdr->type != XORLAY_TYPE_CONTROL)
		return XORLAY_XDP_DROP_BAD_TYPE;
	/* With XORLAY_FLAG_VIA the header goes on to the via ID. */
	hdr_len = xorlay_hdr_len(hdr);
	if (payload_len < hdr_len)
		return XORLAY_XDP_DROP_TRUNCATED;
	if (bpf_ntohs(hdr->payload_len) != payload_len - hdr_len)
		return XORLAY_XDP_DROP_BAD_LENGTH;
	if (hdr->hop_limit == 0)
		return XORLAY_XDP_DROP_HOP_LIMIT_ZERO;
	return XORLAY_XDP_PASS_OVERLAY;
}

/*
 * One packet against a token bucket kept as GCRA state (maps.h,
 * struct xorlay_bucket): conforms, and is charged, if the bucket's
 * theoretical arrival time stays within burst intervals of now. `pps` is
 * nonzero. No helper calls: it runs under the global bucket's spin lock.
 */
static __always_inline int bucket_take(__u64 *tat_ns, __u64 now, __u32 pps, __u32 burst)
{
	__u64 interval = NSEC_PER_SEC / pps;
	__u64 tat = *tat_ns;

	if (burst == 0)
		burst = 1;
	if (tat < now)
		tat = now;
	tat += interval;
	if (tat - now > (__u64)burst * interval)
		return 0;
	*tat_ns = tat;
	return 1;
}

/*
 * The token buckets of a HANDSHAKE_1 from source IP `addr` (16 bytes on the
 * stack): its source's, then the global one. Returns PASS_OVERLAY or the
 * DROP_HANDSHAKE_* counter.
 */
static __always_inline __u32 limit_handshake(const struct xorlay_config *cfg, __u8 *addr,
					     __u64 now)
{
	__u32 pps = cfg->handshake_source_pps;
	__u32 burst = cfg->handshake_source_burst;
	struct xorlay_global_bucket *global;
	struct xorlay_bucket *bucket;
	__u32 zero = 0;
	int ok;

	if (!pps && !cfg->handshake_global_pps)
		return XORLAY_XDP_PASS_OVERLAY;
	if (pps) {
		bucket = bpf_map_lookup_elem(&xorlay_handshake_sources, addr);
		if (bucket) {
			if (!bucket_take(&bucket->tat_ns, now, pps, burst))
				return XORLAY_XDP_DROP_HANDSHAKE_SOURCE_RATE;
		} else {
			struct xorlay_bucket fresh = {};

			/* A full bucket: the first packet always conforms. */
			bucket_take(&fresh.tat_ns, now, pps, burst);
			bpf_map_update_elem(&xorlay_handshake_sources, addr, &fresh, BPF_ANY);
		}
	}

	pps = cfg->handshake_global_pps;
	burst = cfg->handshake_global_burst;
	if (!pps)
		return XORLAY_XDP_PASS_OVERLAY;
	global = bpf_map_lookup_elem(&xorlay_handshake_global, &zero);
	if (!global)
		return XORLAY_XDP_PASS_OVERLAY;
	bpf_spin_lock(&global->lock);
	ok = bucket_take(&global->tat_ns, now, pps, burst);
	bpf_spin_unlock(&global->lock);
	if (!ok)
		return XORLAY_XDP_DROP_HANDSHAKE_GLOBAL_RATE;
	return XORLAY_XDP_PASS_OVERLAY;
}

/* The token bucket of data from an allowlisted neighbor, on this CPU. */
static __always_inline __u32 limit_neighbor(const struct xorlay_config *cfg,
					    struct xorlay_bucket *bucket, __u64 now)
{
	__u32 pps = cfg->neighbor_pps;

	if (pps && !bucket_take(&bucket->tat_ns, now, pps, cfg->neighbor_burst))
		return XORLAY_XDP_DROP_NEIGHBOR_RATE;
	return XORLAY_XDP_PASS_OVERLAY;
}

/*
 * Filters a valid overlay packet (the cursor still on its first byte) by its
 * source: the allowlist and the rate limits. Returns XORLAY_XDP_PASS_OVERLAY
 * or the drop reason.
 */
static __always_inline __u32 filter_source(const struct cursor *c,
					   const struct xorlay_config *cfg,
					   struct xorlay_neighbor_key *source, __u64 now)
{
	const struct xorlay_hdr *hdr = c->pos;
	struct xorlay_bucket *bucket;
	const __u8 *kind;

	if (!xorlay_filter_neighbors)
		return XORLAY_XDP_PASS_OVERLAY;
	/* validate_overlay checked this; the verifier needs it again. */
	if ((void *)(hdr + 1) > c->end)
		return XORLAY_XDP_DROP_TRUNCATED;
	if (hdr->type == XORLAY_TYPE_CONTROL) {
		/* The session message starts after the whole header (a via, if any). */
		kind = (const __u8 *)hdr + xorlay_hdr_len(hdr);
		if ((void *)(kind + 1) > c->end || hdr->payload_len == 0)
			return XORLAY_XDP_PASS_OVERLAY;
		if (*kind != XORLAY_SESSION_KIND_HANDSHAKE_1)
			return XORLAY_XDP_PASS_OVERLAY;
		return limit_handshake(cfg, source->addr, now);
	}
	bucket = bpf_map_lookup_elem(&xorlay_neighbors, source);
	if (!bucket)
		return XORLAY_XDP_DROP_NOT_NEIGHBOR;
	return limit_neighbor(cfg, bucket, now);
}

/* Whether two node IDs are equal. */
static __always_inline int id_equal(const __u8 *a, const __u8 *b)
{
	__u64 x[4], y[4];

	__builtin_memcpy(x, a, sizeof(x));
	__builtin_memcpy(y, b, sizeof(y));
	return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3])) == 0;
}

/* The words of the UDP checksum that an IPv4 forward changes. */
struct csum_words4 {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 overlay[4]; /* hop_limit, flags, payload_len: overlay bytes 4..8 */
};

/* The same for IPv6. */
struct csum_words6 {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u8 overlay[4];
};

/*
 * Rewrites an IPv4 frame for `route`: addresses, TTL, header checksum,
 * ports (source: `sport`, the flow port), the UDP checksum (incrementally; 0 stays 0, "no checksum"), the
 * overlay hop limit. Returns 0, or -1 if the frame is not as parsed.
 */
static __always_inline int rewrite4(const struct frame *f, void *end, const struct xorlay_route *route,
				    __be16 sport)
{
	struct iphdr *ip = f->l3;
	struct udphdr *udp = f->udp;
	struct xorlay_hdr *hdr = (struct xorlay_hdr *)(udp + 1);
	struct csum_words4 from, to;

	if ((void *)(ip + 1) > end || (void *)(udp + 1) > end || (void *)(hdr + 1) > end)
		return -1;
	from.saddr = ip->saddr;
	from.daddr = ip->daddr;
	from.sport = udp->source;
	from.dport = udp->dest;
	__builtin_memcpy(from.overlay, &hdr->hop_limit, 4);
	__builtin_memcpy(&to.saddr, route->source_addr + 12, 4);
	__builtin_memcpy(&to.daddr, route->next_hop_addr + 12, 4);
	to.sport = sport;
	to.dport = route->next_hop_port;
	__builtin_memcpy(to.overlay, from.overlay, 4);
	to.overlay[0] -= 1;

	if (udp->check) {
		__u16 check = csum_replace(udp->check, (__be32 *)&from, (__be32 *)&to, sizeof(from));

		udp->check = check ? check : 0xffff;
	}
	udp->source = to.sport;
	udp->dest = to.dport;
	hdr->hop_limit = to.overlay[0];
	ip->saddr = to.saddr;
	ip->daddr = to.daddr;
	ip->ttl = XORLAY_UNDERLAY_TTL;
	ip->check = 0;
	ip->check = ipv4_csum20(ip);
	return 0;
}

/* The same for IPv6 (the UDP checksum is mandatory and never 0 here). */
static __always_inline int rewrite6(const struct frame *f, void *end, const struct xorlay_route *route,
				    __be16 sport)
{
	struct ipv6hdr *ip6 = f->l3;
	struct udphdr *udp = f->udp;
	struct xorlay_hdr *hdr = (struct xorlay_hdr *)(udp + 1);
	struct csum_words6 from, to;
	__u16 check;

	if ((void *)(ip6 + 1) > end || (void *)(udp + 1) > end || (void *)(hdr + 1) > end)
		return -1;
	__builtin_memcpy(from.saddr, &ip6->saddr, 16);
	__builtin_memcpy(from.daddr, &ip6->daddr, 16);
	from.sport = udp->source;
	from.dport = udp->dest;
	__builtin_memcpy(from.overlay, &hdr->hop_limit, 4);
	__builtin_memcpy(to.saddr, route->source_addr, 16);
	__builtin_memcpy(to.daddr, route->next_hop_addr, 16);
	to.sport = sport;
	to.dport = route->next_hop_port;
	__builtin_memcpy(to.overlay, from.overlay, 4);
	to.overlay[0] -= 1;

	check = csum_replace(udp->check, (__be32 *)&from, (__be32 *)&to, sizeof(from));
	udp->check = check ? check : 0xffff;
	udp->source = to.sport;
	udp->dest = to.dport;
	hdr->hop_limit = to.overlay[0];
	__builtin_memcpy(&ip6->saddr, to.saddr, 16);
	__builtin_memcpy(&ip6->daddr, to.daddr, 16);
	ip6->hop_limit = XORLAY_UNDERLAY_TTL;
	return 0;
}

/* The most bytes one bpf_csum_diff call sums (the helper's limit). */
#define UDP_SUM_CHUNK 512
/*
 * Chunks of UDP_SUM_CHUNK xorlay_udp_sum walks at most: datagrams up to
 * 4 KiB, more than a linear XDP frame in a 4 KiB page holds.
 */
#define UDP_SUM_CHUNKS_MAX 8
/* Where the UDP header of a plain frame (no VLAN tag, no IPv4 options) starts. */
#define UDP_OFF4 (sizeof(struct ethhdr) + sizeof(struct iphdr))
#define UDP_OFF6 (sizeof(struct ethhdr) + sizeof(struct ipv6hdr))

/* Adds the bpf_csum_diff sum of `n` (a multiple of 4) bytes at `p`. */
#define UDP_SUM_STEP(n)                                                        \
	do {                                                                   \
		if (len & (n)) {                                               \
			if ((void *)(p + (n)) > end)                           \
				return -1;                                     \
			sum += (__u32)bpf_csum_diff(NULL, 0, (__be32 *)p, (n), 0); \
			p += (n);                                              \
		}                                                              \
	} while (0)

/*
 * The one's complement sum of the `len` frame bytes of a plain frame's UDP
 * datagram (header and payload, the checksum field as it is; `v6`: after an
 * IPv6 header, else after a 20-byte IPv4 one): raw (network byte order
 * words), folded to 16 bits, not complemented. -1 if they are not all in
 * the frame or `len` is over UDP_SUM_CHUNKS_MAX chunks.
 *
 * A global function, so the verifier checks it once on its own rather than
 * once per path of its caller; it sees only the scalar it returns. The
 * cursor moves by constants only, so every access has a fixed offset.
 */
__noinline int xorlay_udp_sum(struct xdp_md *ctx, __u32 v6, __u32 len)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u64 sum = 0;
	__u8 *p;

	if (len > UDP_SUM_CHUNK * UDP_SUM_CHUNKS_MAX)
		return -1;
	p = data + (v6 ? UDP_OFF6 : UDP_OFF4);
	for (int i = 0; i < UDP_SUM_CHUNKS_MAX; i++) {
		if (len < UDP_SUM_CHUNK)
			break;
		if ((void *)(p + UDP_SUM_CHUNK) > end)
			return -1;
		sum += (__u32)bpf_csum_diff(NULL, 0, (__be32 *)p, UDP_SUM_CHUNK, 0);
		p += UDP_SUM_CHUNK;
		len -= UDP_SUM_CHUNK;
	}
	if (len >= UDP_SUM_CHUNK)
		return -1;
	UDP_SUM_STEP(256);
	UDP_SUM_STEP(128);
	UDP_SUM_STEP(64);
	UDP_SUM_STEP(32);
	UDP_SUM_STEP(16);
	UDP_SUM_STEP(8);
	UDP_SUM_STEP(4);
	if (len & 2) {
		if ((void *)(p + 2) > end)
			return -1;
		sum += *(__u16 *)p;
		p += 2;
	}
	if (len & 1) {
		if ((void *)(p + 1) > end)
			return -1;
		/* The last odd byte is the high-order byte of a zero-padded word. */
		sum += *p;
	}
	return csum_fold64_raw(sum);
}

/*
 * Makes the frame's UDP checksum one the incremental update of rewrite4/6
 * can start from, deciding from the packet alone (XDP cannot see the skb's
 * ip_summed). A sender on veth (a container, a VM's tap) with TX checksum
 * offload hands over CHECKSUM_PARTIAL frames: the checksum field holds only
 * the folded pseudo-header sum, and the receiving end of a redirect would
 * drop them (UdpInCsumErrors). So the whole datagram is summed:
 *   0 over IPv4: no checksum, nothing to do (rewrite4 keeps 0);
 *   the checksum verifies: nothing to do;
 *   the field equals the pseudo-header sum: a partial checksum, completed
 *     here (as the NIC or skb_checksum_help would);
 *   otherwise (damaged in transit, or a datagram over 4 KiB): -1, the frame
 *     untouched, for the stack to judge (it drops a bad checksum and counts
 *     it in UdpInCsumErrors).
 * Returns 0 or -1. docs/xdp.md has the cost.
 */
static __always_inline int udp_check_in(struct xdp_md *ctx, const struct frame *f, void *end)
{
	struct udphdr *udp = f->udp;
	__u32 udp_len;
	__u64 pseudo;
	__u16 check;
	int sum;

	if ((void *)(udp + 1) > end)
		return -1;
	udp_len = bpf_ntohs(udp->len);
	pseudo = bpf_htons(IPPROTO_UDP) + (__u32)udp->len;
	if (f->family == AF_INET) {
		struct iphdr *ip = f->l3;

		if ((void *)(ip + 1) > end)
			return -1;
		if (udp->check == 0)
			return 0;
		pseudo += (__u64)ip->saddr + ip->daddr;
	} else {
		struct ipv6hdr *ip6 = f->l3;
		const __u32 *words;

		if ((void *)(ip6 + 1) > end)
			return -1;
		words = (const __u32 *)&ip6->saddr;
#pragma unroll
		for (int i = 0; i < 8; i++)
			pseudo += words[i]; /* saddr, then daddr */
	}
	sum = xorlay_udp_sum(ctx, f->family == AF_INET6, udp_len);
	if (sum < 0)
		return -1;
	if (csum_fold64_raw(pseudo + (__u32)sum) == 0xffff)
		return 0;
	if (udp->check != csum_fold64_raw(pseudo))
		return -1;
	/* Partial: the sum already holds the pseudo-header through the field. */
	check = (__u16)~(__u16)sum;
	udp->check = check ? check : 0xffff;
	return 0;
}

/* Whether two MAC addresses differ (no memcmp in BPF). */
static __always_inline int mac_differs(const __u8 *a, const __u8 *b)
{
	__u32 a4, b4;
	__u16 a2, b2;

	__builtin_memcpy(&a4, a, 4);
	__builtin_memcpy(&b4, b, 4);
	__builtin_memcpy(&a2, a + 4, 2);
	__builtin_memcpy(&b2, b + 4, 2);
	return (a4 != b4) | (a2 != b2);
}

/*
 * The egress interface and MAC addresses toward `route`'s next hop for an
 * IP packet of `tot_len` bytes: from the entry's L2 cache while it is
 * fresh (resolved less than XORLAY_L2_TTL_NS ago, and for a packet no
 * longer than one the FIB accepted, so the MTU check still holds), else from
 * the kernel's FIB and neighbor table, refreshing the cache. Returns 0, or
 * -1 if the kernel cannot resolve it (no route or neighbor, MTU, ...).
 *
 * The cache fields are the program's (userspace zeroes them on install).
 * Another CPU may read them while this one refreshes them; the fields are
 * rewritten only when the result changed, so a reader can see a mix of old
 * and new only in the refresh that notices a changed neighbor (one frame
 * to a stale or mixed MAC, which the link drops).
 */
static __always_inline int resolve_l2(struct xdp_md *ctx, struct xorlay_route *route,
				      struct bpf_fib_lookup *fib, __u32 tot_len, __u64 now)
{
	__u64 checked = route->l2_checked_ns;
	int changed;

	if (checked && now - checked < XORLAY_L2_TTL_NS && tot_len <= route->l2_max_len) {
		fib->ifindex = route->l2_ifindex;
		__builtin_memcpy(fib->dmac, route->l2_dmac, ETH_ALEN);
		__builtin_memcpy(fib->smac, route->l2_smac, ETH_ALEN);
		return 0;
	}
	if (bpf_fib_lookup(ctx, fib, sizeof(*fib), 0) != BPF_FIB_LKUP_RET_SUCCESS)
		return -1;
	changed = route->l2_ifindex != fib->ifindex || mac_differs(route->l2_dmac, fib->dmac) ||
		  mac_differs(route->l2_smac, fib->smac);
	if (changed) {
		route->l2_ifindex = fib->ifindex;
		__builtin_memcpy(route->l2_dmac, fib->dmac, ETH_ALEN);
		__builtin_memcpy(route->l2_smac, fib->smac, ETH_ALEN);
		route->l2_max_len = tot_len;
	} else if (tot_len > route->l2_max_len) {
		route->l2_max_len = tot_len;
	}
	route->l2_checked_ns = now;
	return 0;
}

/*
 * Resolves a valid positive entry (resolve_l2) and rewrites the frame.
 * Returns FWD_TX, FWD_REDIRECT or PASS_UNRESOLVED (the frame untouched).
 */
static __always_inline __u32 forward(struct xdp_md *ctx, const struct frame *f, void *end,
				     struct xorlay_route *route, __u64 now)
{
	const struct xorlay_hdr *hdr = (const struct xorlay_hdr *)(f->udp + 1);
	struct bpf_fib_lookup fib = {};
	__u32 stat = XORLAY_XDP_FWD_TX;
	struct ethhdr *eth = f->eth;
	__be16 sport;
	__u32 tot_len;

	if (!f->plain)
		return XORLAY_XDP_PASS_UNRESOLVED;
	if ((void *)(hdr + 1) > end)
		return XORLAY_XDP_PASS_UNRESOLVED; /* validate_overlay checked it */
	/* The flow port (wire.h), not the router's: RSS and ECMP spread flows. */
	sport = bpf_htons(xorlay_flow_port(hdr));
	fib.ifindex = ctx->ingress_ifindex;
	fib.l4_protocol = IPPROTO_UDP;
	fib.sport = sport;
	fib.dport = route->next_hop_port;
	if (f->family == AF_INET) {
		struct iphdr *ip = f->l3;

		if ((void *)(ip + 1) > end)
			return XORLAY_XDP_PASS_UNRESOLVED;
		/* A header the stack would drop stays the stack's. */
		if (ipv4_csum20(ip) != 0)
			return XORLAY_XDP_PASS_UNRESOLVED;
		fib.family = AF_INET;
		fib.tos = ip->tos;
		tot_len = bpf_ntohs(ip->tot_len);
		__builtin_memcpy(&fib.ipv4_src, route->source_addr + 12, 4);
		__builtin_memcpy(&fib.ipv4_dst, route->next_hop_addr + 12, 4);
	} else {
		struct ipv6hdr *ip6 = f->l3;
		struct udphdr *udp = f->udp;

		if ((void *)(ip6 + 1) > end || (void *)(udp + 1) > end)
			return XORLAY_XDP_PASS_UNRESOLVED;
		/* Invalid over IPv6: the stack drops it. */
		if (udp->check == 0)
			return XORLAY_XDP_PASS_UNRESOLVED;
		fib.family = AF_INET6;
		tot_len = sizeof(*ip6) + bpf_ntohs(ip6->payload_len);
		__builtin_memcpy(fib.ipv6_src, route->source_addr, 16);
		__builtin_memcpy(fib.ipv6_dst, route->next_hop_addr, 16);
	}
	fib.tot_len = tot_len;

	if (resolve_l2(ctx, route, &fib, tot_len, now))
		return XORLAY_XDP_PASS_UNRESOLVED;
	if (fib.ifindex != ctx->ingress_ifindex) {
		/* Not in xorlay_tx_ports: the action is the fallback, XDP_PASS. */
		if (bpf_redirect_map(&xorlay_tx_ports, fib.ifindex, XDP_PASS) != XDP_REDIRECT)
			return XORLAY_XDP_PASS_UNRESOLVED;
		stat = XORLAY_XDP_FWD_REDIRECT;
	}

	if ((void *)(eth + 1) > end)
		return XORLAY_XDP_PASS_UNRESOLVED;
	if (udp_check_in(ctx, f, end))
		return XORLAY_XDP_PASS_UNRESOLVED;
	if (f->family == AF_INET) {
		if (rewrite4(f, end, route, sport))
			return XORLAY_XDP_PASS_UNRESOLVED;
	} else {
		if (rewrite6(f, end, route, sport))
			return XORLAY_XDP_PASS_UNRESOLVED;
	}
	__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
	return stat;
}

/*
 * Whether the valid entry `route` applies to the packet `hdr` as far as its
 * via goes: an entry made by a via (XORLAY_ROUTE_F_VIA) only to packets with
 * flag VIA whose via starts with the entry's tag; any other entry to every
 * packet (maps.h, struct xorlay_route).
 */
static __always_inline int via_applies(const struct xorlay_hdr *hdr, const void *end,
				       const struct xorlay_route *route)
{
	const struct xorlay_hdr_via *full = (const struct xorlay_hdr_via *)hdr;
	__u64 via, tag;

	if (!(route->flags & XORLAY_ROUTE_F_VIA))
		return 1;
	if (!(hdr->flags & XORLAY_FLAG_VIA))
		return 0;
	/* validate_overlay checked the whole header is there; the verifier needs it again. */
	if ((const void *)(full + 1) > end)
		return 0;
	__builtin_memcpy(&via, full->via, sizeof(via));
	__builtin_memcpy(&tag, route->via_tag, sizeof(tag));
	return via == tag;
}

/*
 * The route cache step for a valid packet that passed the filter. Returns
 * the counter of the verdict (see the top of this file).
 */
static __always_inline __u32 route_cached(struct xdp_md *ctx, const struct cursor *c,
					  const struct frame *f, const struct xorlay_config *cfg,
					  __u64 now)
{
	const struct xorlay_hdr *hdr = c->pos;
	struct xorlay_route_key key;
	struct xorlay_route *route;
	__u64 last, age, timeout;
	int v4_route;

	if ((void *)(hdr + 1) > c->end)
		return XORLAY_XDP_DROP_TRUNCATED; /* validate_overlay checked it */
	if (hdr->type != XORLAY_TYPE_DATA)
		return XORLAY_XDP_PASS_OVERLAY;
	if (!(cfg->flags & XORLAY_CONFIG_F_LOCAL_ID))
		return XORLAY_XDP_PASS_OVERLAY;
	__builtin_memcpy(key.id, hdr->dst, XORLAY_NODE_ID_LEN);
	if (id_equal(key.id, cfg->local_id))
		return XORLAY_XDP_PASS_OVERLAY;

	route = bpf_map_lookup_elem(&xorlay_routes, &key);
	if (!route)
		return XORLAY_XDP_PASS_CACHE_MISS;
	if (route->generation != cfg->generation)
		return XORLAY_XDP_PASS_CACHE_MISS;
	last = route->last_used_ns;
	age = now > last ? now - last : 0;
	timeout = cfg->idle_timeout_ns;
	if (timeout && age > timeout)
		return XORLAY_XDP_PASS_CACHE_MISS;
	if (!(route->flags & XORLAY_ROUTE_F_NEGATIVE)) {
		v4_route = addr_is_v4_mapped(route->next_hop_addr);
		if (v4_route != (f->family == AF_INET))
			return XORLAY_XDP_PASS_CACHE_MISS;
		if (addr_is_v4_mapped(route->source_addr) != v4_route)
			return XORLAY_XDP_PASS_CACHE_MISS;
	}

	/*
	 * A negative entry says there is no route to dst; a packet that names
	 * its destination's beacon (via) may still be routed toward that. The
	 * workers decide, as on a miss (the entry's last use is not refreshed,
	 * as on a miss). Positive entries forward it like any other packet,
	 * if their via tag (below) lets them.
	 */
	if ((route->flags & XORLAY_ROUTE_F_NEGATIVE) && (hdr->flags & XORLAY_FLAG_VIA))
		return XORLAY_XDP_PASS_CACHE_MISS;
	/*
	 * An entry made by a via applies only to packets carrying that via
	 * (maps.h): two relays that learned different vias for one destination
	 * must not cache each other as its next hop. Any other packet is a
	 * miss, the entry not refreshed.
	 */
	if (!via_applies(hdr, c->end, route))
		return XORLAY_XDP_PASS_CACHE_MISS;

	/* A valid hit. Refresh last use, at most every 1/8 of the timeout. */
	if (timeout && age > (timeout >> 3))
		route->last_used_ns = now;
	if (hdr->hop_limit <= 1)
		return XORLAY_XDP_DROP_HOP_LIMIT_EXCEEDED;
	if (route->flags & XORLAY_ROUTE_F_NEGATIVE)
		return XORLAY_XDP_DROP_NO_ROUTE;
	return forward(ctx, f, c->end, route, now);
}

/*
 * Step 5: a data packet about to pass to the workers, against the shedding
 * budget if the router set one, then against its worker's credits
 * (xorlay_backlog). Returns `stat` or DROP_SHED.
 */
static __always_inline __u32 shed(const struct cursor *c, __u32 stat, __u64 now)
{
	const struct xorlay_hdr *hdr = c->pos;
	struct xorlay_global_bucket *bucket;
	struct xorlay_backlog *backlog;
	struct xorlay_credit *credit;
	struct xorlay_shed *budget;
	__u64 dst8, src8;
	__u32 zero = 0, workers, window, index;
	__s64 unread;

	if (stat != XORLAY_XDP_PASS_CACHE_MISS && stat != XORLAY_XDP_PASS_UNRESOLVED &&
	    stat != XORLAY_XDP_PASS_OVERLAY)
		return stat;
	if ((void *)(hdr + 1) > c->end || hdr->type != XORLAY_TYPE_DATA)
		return stat;
	budget = bpf_map_lookup_elem(&xorlay_shed, &zero);
	bucket = bpf_map_lookup_elem(&xorlay_shed_bucket, &zero);
	if (budget && bucket && budget->pps) {
		__u32 pps = budget->pps, burst = budget->burst;
		int ok;

		bpf_spin_lock(&bucket->lock);
		ok = bucket_take(&bucket->tat_ns, now, pps, burst);
		bpf_spin_unlock(&bucket->lock);
		if (!ok)
			return XORLAY_XDP_DROP_SHED;
	}
	backlog = bpf_map_lookup_elem(&xorlay_backlog, &zero);
	if (!backlog)
		return stat;
	workers = *(volatile __u32 *)&backlog->workers;
	if (!workers)
		return stat;
	__builtin_memcpy(&dst8, hdr->dst, sizeof(dst8));
	__builtin_memcpy(&src8, hdr->src, sizeof(src8));
	index = xorlay_worker_of(dst8, src8, workers);
	if (index >= XORLAY_WORKERS_MAX)
		return stat;
	credit = &backlog->worker[index];
	window = *(volatile __u32 *)&credit->window;
	if (!window)
		return stat;
	unread = (__s64)(*(volatile __u64 *)&credit->admitted -
			 *(volatile __u64 *)&credit->consumed);
	if (unread >= (__s64)window)
		return XORLAY_XDP_DROP_SHED;
	__sync_fetch_and_add(&credit->admitted, 1);
	return stat;
}

/* The XDP action of a counter. */
static __always_inline int action_of(__u32 stat)
{
	switch (stat) {
	case XORLAY_XDP_FWD_TX:
		return XDP_TX;
	case XORLAY_XDP_FWD_REDIRECT:
		return XDP_REDIRECT;
	case XORLAY_XDP_PASS_OTHER:
	case XORLAY_XDP_PASS_OVERLAY:
	case XORLAY_XDP_PASS_CACHE_MISS:
	case XORLAY_XDP_PASS_UNRESOLVED:
		return XDP_PASS;
	default:
		return XDP_DROP;
	}
}

/* Counts the frame once and returns its action. */
static __always_inline int verdict(__u32 stat)
{
	stats_count(stat);
	return action_of(stat);
}

SEC("xdp")
int xorlay_xdp(struct xdp_md *ctx)
{
	struct cursor c = {
		.pos = (void *)(long)ctx->data,
		.end = (void *)(long)ctx->data_end,
	};
	/* The source IP (port 0), zeroed and filled as the headers parse. */
	struct xorlay_neighbor_key source = {};
	struct xorlay_config *cfg;
	struct frame f = {};
	__u32 zero = 0;
	__u32 stat;
	__u64 now;
	int proto;

	f.eth = c.pos;
	proto = parse_eth(&c);
	f.l3 = c.pos;
	f.plain = f.l3 == (void *)(f.eth + 1);
	if (proto == ETH_P_IP) {
		f.family = AF_INET;
		proto = parse_ipv4(&c, source.addr);
		if (c.pos != f.l3 + sizeof(struct iphdr))
			f.plain = 0;
	} else if (proto == ETH_P_IPV6) {
		f.family = AF_INET6;
		proto = parse_ipv6(&c, source.addr);
		/*
		 * A v4-mapped source is never legitimate in an IPv6 header
		 * (RFC 4291 2.5.5.2; the stack drops it): a nonzero pad keeps it
		 * from matching the key of the IPv4 neighbor it names.
		 */
		if (addr_is_v4_mapped(source.addr))
			source.pad = 1;
	} else
		return verdict(XORLAY_XDP_PASS_OTHER);

	if (proto != IPPROTO_UDP)
		return verdict(XORLAY_XDP_PASS_OTHER);
	f.udp = parse_udp(&c);
	if (!f.udp)
		return verdict(XORLAY_XDP_PASS_OTHER);
	if (f.udp->dest != bpf_htons(xorlay_port))
		return verdict(XORLAY_XDP_PASS_OTHER);

	/*
	 * source.port stays 0: neighbors are admitted by IP address alone,
	 * since a forwarding neighbor sends from its flow ports (wire.h).
	 */

	stat = validate_overlay(&c, f.udp);
	if (stat != XORLAY_XDP_PASS_OVERLAY)
		return verdict(stat);
	cfg = bpf_map_lookup_elem(&xorlay_config, &zero);
	if (!cfg)
		return verdict(XORLAY_XDP_PASS_OVERLAY); /* an array always has key 0 */
	/*
	 * One clock read per packet, for every bucket and the cache's ages:
	 * the coarse clock (CLOCK_MONOTONIC_COARSE, one kernel tick steps).
	 * bpf_ktime_get_ns reads the TSC with a serialising fence, which was
	 * about a tenth of the fast path's CPU (perf, docs/xdp.md); every use
	 * here works in steps of a tick (bursts hold at least a tick's worth
	 * of tokens, userspace sees to that; the TTLs are 100 ms and up).
	 */
	now = bpf_ktime_get_coarse_ns();
	stat = filter_source(&c, cfg, &source, now);
	if (stat != XORLAY_XDP_PASS_OVERLAY)
		return verdict(stat);
	return verdict(shed(&c, route_cached(ctx, &c, &f, cfg, now), now));
}

char _license[] SEC("license") = "Dual BSD/GPL";
