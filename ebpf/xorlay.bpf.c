/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * The xorlay XDP program. A flat dispatcher, Katran style: each step either
 * returns the final verdict or lets the next one run, and every frame ends in
 * exactly one counter of the `xorlay_stats` map (maps.h).
 *
 *   Ethernet (+ one VLAN tag) -> IPv4 | IPv6 -> UDP to xorlay_port?
 *     no:  XDP_PASS untouched, XORLAY_XDP_PASS_OTHER
 *     yes: validate the overlay header in the order of the Rust parser
 *          (router/src/wire/overlay.rs, Packet::validate): truncated, magic,
 *          version, type, length, hop limit zero.
 *          malformed: XDP_DROP, the reason's XORLAY_XDP_DROP_* counter
 *          valid: filter by source (if xorlay_filter_neighbors):
 *            data from a source (IP, UDP port) not in xorlay_neighbors:
 *                       XDP_DROP, XORLAY_XDP_DROP_NOT_NEIGHBOR
 *            otherwise (control packets always: strangers must be able to
 *            handshake): XDP_PASS, XORLAY_XDP_PASS_OVERLAY
 *
 * The program never writes to the packet in this version.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "wire.h"
#include "consts.h"
#include "maps.h"
#include "parsing.h"

/*
 * The overlay UDP port, in HOST byte order. Set by the loader before the
 * program is loaded (aya EbpfLoader::override_global("xorlay_port", ..));
 * the kernel sees it as a constant of the frozen .rodata map.
 */
volatile const __u16 xorlay_port = XORLAY_DEFAULT_PORT;

/*
 * 1: data packets are accepted only from the sources in xorlay_neighbors;
 * 0: the filter step is off (validation alone, for tests and debugging).
 * Set by the loader like xorlay_port; the verifier prunes the dead branch.
 */
volatile const __u8 xorlay_filter_neighbors = 1;

/*
 * Validates the overlay packet that fills the UDP payload; the cursor is on
 * the first payload byte. Returns the counter index of the verdict:
 * XORLAY_XDP_PASS_OVERLAY or one XORLAY_XDP_DROP_* reason.
 */
static __always_inline __u32 validate_overlay(struct cursor *c, const struct udphdr *udp)
{
	__u32 udp_len = bpf_ntohs(udp->len);
	struct xorlay_hdr *hdr;
	__u32 payload_len;

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
	if (bpf_ntohs(hdr->payload_len) != payload_len - XORLAY_HDR_LEN)
		return XORLAY_XDP_DROP_BAD_LENGTH;
	if (hdr->hop_limit == 0)
		return XORLAY_XDP_DROP_HOP_LIMIT_ZERO;
	return XORLAY_XDP_PASS_OVERLAY;
}

/*
 * Filters a valid overlay packet (the cursor still on its first byte) by its
 * source. Returns XORLAY_XDP_PASS_OVERLAY or XORLAY_XDP_DROP_NOT_NEIGHBOR.
 */
static __always_inline __u32 filter_source(const struct cursor *c,
					   const struct xorlay_neighbor_key *source)
{
	const struct xorlay_hdr *hdr = c->pos;

	if (!xorlay_filter_neighbors)
		return XORLAY_XDP_PASS_OVERLAY;
	/* validate_overlay checked this; the verifier needs it again. */
	if ((void *)(hdr + 1) > c->end)
		return XORLAY_XDP_DROP_TRUNCATED;
	if (hdr->type != XORLAY_TYPE_DATA)
		return XORLAY_XDP_PASS_OVERLAY;
	if (!bpf_map_lookup_elem(&xorlay_neighbors, source))
		return XORLAY_XDP_DROP_NOT_NEIGHBOR;
	return XORLAY_XDP_PASS_OVERLAY;
}

/* Counts the frame once and returns the action. */
static __always_inline int verdict(__u32 stat, int action)
{
	stats_count(stat);
	return action;
}

SEC("xdp")
int xorlay_xdp(struct xdp_md *ctx)
{
	struct cursor c = {
		.pos = (void *)(long)ctx->data,
		.end = (void *)(long)ctx->data_end,
	};
	/* The source (IP, UDP port), zeroed and filled as the headers parse. */
	struct xorlay_neighbor_key source = {};
	struct udphdr *udp;
	__u32 stat;
	int proto;

	proto = parse_eth(&c);
	if (proto == ETH_P_IP)
		proto = parse_ipv4(&c, source.addr);
	else if (proto == ETH_P_IPV6) {
		proto = parse_ipv6(&c, source.addr);
		/*
		 * A v4-mapped source is never legitimate in an IPv6 header
		 * (RFC 4291 2.5.5.2; the stack drops it): a nonzero pad keeps it
		 * from matching the key of the IPv4 neighbor it names.
		 */
		if (addr_is_v4_mapped(source.addr))
			source.pad = 1;
	} else
		return verdict(XORLAY_XDP_PASS_OTHER, XDP_PASS);

	if (proto != IPPROTO_UDP)
		return verdict(XORLAY_XDP_PASS_OTHER, XDP_PASS);
	udp = parse_udp(&c);
	if (!udp)
		return verdict(XORLAY_XDP_PASS_OTHER, XDP_PASS);
	if (udp->dest != bpf_htons(xorlay_port))
		return verdict(XORLAY_XDP_PASS_OTHER, XDP_PASS);

	source.port = udp->source;

	stat = validate_overlay(&c, udp);
	if (stat != XORLAY_XDP_PASS_OVERLAY)
		return verdict(stat, XDP_DROP);
	stat = filter_source(&c, &source);
	if (stat != XORLAY_XDP_PASS_OVERLAY)
		return verdict(stat, XDP_DROP);
	return verdict(XORLAY_XDP_PASS_OVERLAY, XDP_PASS);
}

char _license[] SEC("license") = "Dual BSD/GPL";
