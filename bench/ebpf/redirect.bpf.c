/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * The "XDP redirect, no lookup" baseline of xorlay-bench: the ceiling of the
 * lab topology. Every IPv4/UDP frame to port xl_cfg.port that arrives on the
 * interface this program is attached to gets fixed Ethernet addresses and is
 * redirected out of a fixed interface. No table, no checksum, no TTL: the
 * cheapest relay XDP can be. Anything else (ARP, other traffic) passes.
 *
 * The userspace side (bench/src/systems.rs) sets xl_cfg before loading.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct xl_cfg {
	__u32 out_ifindex;
	__u16 port; /* host byte order */
	__u8 dmac[6];
	__u8 smac[6];
	__u8 pad[2];
};

volatile const struct xl_cfg xl_cfg = {};

SEC("xdp")
int xl_redirect(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	struct udphdr *udp;

	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
		return XDP_PASS;
	udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > end || udp->dest != bpf_htons(xl_cfg.port))
		return XDP_PASS;
	/* Byte by byte through the volatile object: a memcpy from a cast-away
	 * const would let clang fold in the zero initializer. */
#pragma unroll
	for (int i = 0; i < ETH_ALEN; i++) {
		eth->h_dest[i] = xl_cfg.dmac[i];
		eth->h_source[i] = xl_cfg.smac[i];
	}
	return bpf_redirect(xl_cfg.out_ifindex, 0);
}

char _license[] SEC("license") = "Dual BSD/GPL";
