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
 *          valid:     XDP_PASS, XORLAY_XDP_PASS_OVERLAY
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
	struct udphdr *udp;
	__u32 stat;
	int proto;

	proto = parse_eth(&c);
	if (proto == ETH_P_IP)
		proto = parse_ipv4(&c);
	else if (proto == ETH_P_IPV6)
		proto = parse_ipv6(&c);
	else
		return verdict(XORLAY_XDP_PASS_OTHER, XDP_PASS);

	if (proto != IPPROTO_UDP)
		return verdict(XORLAY_XDP_PASS_OTHER, XDP_PASS);
	udp = parse_udp(&c);
	if (!udp)
		return verdict(XORLAY_XDP_PASS_OTHER, XDP_PASS);
	if (udp->dest != bpf_htons(xorlay_port))
		return verdict(XORLAY_XDP_PASS_OTHER, XDP_PASS);

	stat = validate_overlay(&c, udp);
	if (stat != XORLAY_XDP_PASS_OVERLAY)
		return verdict(stat, XDP_DROP);
	return verdict(XORLAY_XDP_PASS_OVERLAY, XDP_PASS);
}

char _license[] SEC("license") = "Dual BSD/GPL";
