/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Header parsers of the XDP program, Katran style: each takes a cursor,
 * checks the header it reads against the end of the frame before touching
 * it, advances the cursor past it and returns what comes next (an ethertype,
 * an IP protocol, a UDP header) or PARSE_OTHER when the frame is not
 * something the overlay handles. PARSE_OTHER is never an error of ours: the
 * caller passes such frames to the stack untouched.
 */
#ifndef XORLAY_PARSING_H
#define XORLAY_PARSING_H

#include <linux/types.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* A parser's answer: not ours, pass to the stack. */
#define PARSE_OTHER (-1)

/* IPv4 fragment bits of frag_off (host order), as in the kernel's net/ip.h. */
#define IPV4_FRAG_MORE 0x2000
#define IPV4_FRAG_OFFSET 0x1fff

/* Where the parse stands: the next unread byte and the end of the frame. */
struct cursor {
	void *pos;
	void *end;
};

/* An 802.1Q / 802.1AD tag, as it follows the Ethernet addresses. */
struct vlan_hdr {
	__be16 tci;
	__be16 encapsulated_proto;
};

/*
 * Ethernet, with at most one VLAN tag (802.1Q or 802.1AD). Returns the
 * ethertype of the payload in host order, or PARSE_OTHER for a runt frame.
 * A second tag (QinQ) returns its tag ethertype, which no caller handles.
 */
static __always_inline int parse_eth(struct cursor *c)
{
	struct ethhdr *eth = c->pos;
	struct vlan_hdr *vlan;
	__u16 proto;

	if ((void *)(eth + 1) > c->end)
		return PARSE_OTHER;
	c->pos = eth + 1;
	proto = bpf_ntohs(eth->h_proto);
	if (proto != ETH_P_8021Q && proto != ETH_P_8021AD)
		return proto;

	vlan = c->pos;
	if ((void *)(vlan + 1) > c->end)
		return PARSE_OTHER;
	c->pos = vlan + 1;
	return bpf_ntohs(vlan->encapsulated_proto);
}

/* Length of a source address as parse_ipv4/parse_ipv6 write it. */
#define IP_ADDR_LEN 16

/*
 * IPv4, honouring IHL (options are skipped). Returns the L4 protocol, or
 * PARSE_OTHER for a short or inconsistent header and for every fragment:
 * a non-first fragment has no UDP header, and a first fragment holds only
 * part of the datagram, so both go to the stack, which reassembles them and
 * hands the whole datagram to the workers (whose parser validates it).
 * On success writes the source address to `saddr` as the v4-mapped IPv6
 * address ::ffff:a.b.c.d (IP_ADDR_LEN bytes).
 */
static __always_inline int parse_ipv4(struct cursor *c, __u8 *saddr)
{
	struct iphdr *ip = c->pos;
	__u32 hdr_len;

	if ((void *)(ip + 1) > c->end)
		return PARSE_OTHER;
	if (ip->version != 4)
		return PARSE_OTHER;
	hdr_len = ip->ihl * 4;
	if (hdr_len < sizeof(*ip))
		return PARSE_OTHER;
	if (c->pos + hdr_len > c->end)
		return PARSE_OTHER;
	if (ip->frag_off & bpf_htons(IPV4_FRAG_MORE | IPV4_FRAG_OFFSET))
		return PARSE_OTHER;
	__builtin_memset(saddr, 0, 10);
	saddr[10] = 0xff;
	saddr[11] = 0xff;
	__builtin_memcpy(saddr + 12, &ip->saddr, 4);
	c->pos += hdr_len;
	return ip->protocol;
}

/*
 * IPv6, fixed header only. Returns the next header; extension headers
 * (fragments included) are not walked, so their packets are not UDP here.
 * On success writes the source address to `saddr` (IP_ADDR_LEN bytes).
 */
static __always_inline int parse_ipv6(struct cursor *c, __u8 *saddr)
{
	struct ipv6hdr *ip6 = c->pos;

	if ((void *)(ip6 + 1) > c->end)
		return PARSE_OTHER;
	if (ip6->version != 6)
		return PARSE_OTHER;
	__builtin_memcpy(saddr, &ip6->saddr, IP_ADDR_LEN);
	c->pos = ip6 + 1;
	return ip6->nexthdr;
}

/*
 * Whether a source address from parse_ipv4/parse_ipv6 is ::ffff:a.b.c.d;
 * `addr` is IP_ADDR_LEN bytes, 4-byte aligned.
 */
static __always_inline int addr_is_v4_mapped(const __u8 *addr)
{
	const __u32 *words = (const __u32 *)addr;

	return words[0] == 0 && words[1] == 0 && words[2] == bpf_htonl(0xffff);
}

/* UDP header: returns it with the cursor on the payload, or NULL if short. */
static __always_inline struct udphdr *parse_udp(struct cursor *c)
{
	struct udphdr *udp = c->pos;

	if ((void *)(udp + 1) > c->end)
		return NULL;
	c->pos = udp + 1;
	return udp;
}

#endif /* XORLAY_PARSING_H */
