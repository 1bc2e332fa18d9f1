// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// weft's eBPF datapath: tc (TCX) programs on the node side of each pod's veth and on the
// node's VXLAN device. A packet for a pod of this node goes straight into that pod's
// namespace (bpf_redirect_peer); anything else goes on to the node's kernel, which routes it
// (other nodes' pods through the VXLAN device, Services through kube-proxy's rules).
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

// endpoint is a pod of this node.
struct endpoint {
	__u32 ifindex;    // the node side of its veth
	__u8 pod_mac[6];  // the pod side's MAC
	__u8 host_mac[6]; // the node side's MAC
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32); // the pod's IPv4 address, network order
	__type(value, struct endpoint);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} endpoints SEC(".maps");

// stats counts packets by what the programs did with them (per CPU).
enum { STAT_REDIRECTED, STAT_TO_KERNEL, STAT_DROPPED, STAT_MAX };
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} stats SEC(".maps");

static __always_inline int count(__u32 what, int verdict)
{
	__u64 *n = bpf_map_lookup_elem(&stats, &what);
	if (n)
		*n += 1;
	return verdict;
}

// The kernel's connection tracking, through its BPF kfuncs.
struct nf_conn {
	unsigned long status;
} __attribute__((preserve_access_index));
// The 12-byte form of the options every kernel with these kfuncs accepts.
struct bpf_ct_opts {
	__s32 netns_id;
	__s32 error;
	__u8 l4proto;
	__u8 dir;
	__u8 reserved[2];
};
extern struct nf_conn *bpf_skb_ct_lookup(struct __sk_buff *, struct bpf_sock_tuple *, __u32,
					 struct bpf_ct_opts *, __u32) __ksym;
extern void bpf_ct_release(struct nf_conn *) __ksym;

// kernel_tracks reports whether the node's kernel tracks the packet's connection (either
// way): then the packet must go through the kernel too, which may have translated the
// connection (a Service: kube-proxy's DNAT, undone on the replies). Only TCP and UDP without
// IP options take the short way; the rest always goes through the kernel.
static __always_inline int kernel_tracks(struct __sk_buff *skb, struct iphdr *ip)
{
	void *end = (void *)(long)skb->data_end;
	if ((ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP) || ip->ihl != 5)
		return 1;
	__be16 *ports = (void *)(ip + 1);
	if ((void *)(ports + 2) > end)
		return 1;
	struct bpf_sock_tuple t = {};
	t.ipv4.saddr = ip->saddr;
	t.ipv4.daddr = ip->daddr;
	t.ipv4.sport = ports[0];
	t.ipv4.dport = ports[1];
	struct bpf_ct_opts opts = {.netns_id = -1, .l4proto = ip->protocol};
	struct nf_conn *ct = bpf_skb_ct_lookup(skb, &t, sizeof(t.ipv4), &opts, sizeof(opts));
	if (!ct)
		return 0;
	bpf_ct_release(ct);
	return 1;
}

// deliver sends an IPv4 packet to a pod of this node, or lets the kernel have it.
static __always_inline int deliver(struct __sk_buff *skb, struct iphdr *ip)
{
	__u32 daddr = ip->daddr;
	struct endpoint *ep = bpf_map_lookup_elem(&endpoints, &daddr);
	if (!ep || kernel_tracks(skb, ip))
		return count(STAT_TO_KERNEL, TC_ACT_OK);
	if (bpf_skb_store_bytes(skb, 0, ep->pod_mac, ETH_ALEN, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, ep->host_mac, ETH_ALEN, 0) < 0)
		return count(STAT_DROPPED, TC_ACT_SHOT);
	return count(STAT_REDIRECTED, bpf_redirect_peer(ep->ifindex, 0));
}

static __always_inline struct iphdr *ipv4(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end)
		return 0;
	return ip;
}

// from_pod runs on ingress of a pod veth's node side: what the pod sends.
SEC("tc")
int from_pod(struct __sk_buff *skb)
{
	struct iphdr *ip = ipv4(skb);
	if (!ip)
		return TC_ACT_OK; // ARP and the rest: the node's kernel answers
	// A pod sends from its own address only.
	__u32 saddr = ip->saddr;
	struct endpoint *src = bpf_map_lookup_elem(&endpoints, &saddr);
	if (!src || src->ifindex != skb->ingress_ifindex)
		return count(STAT_DROPPED, TC_ACT_SHOT);
	return deliver(skb, ip);
}

// from_tunnel runs on ingress of the VXLAN device: what other nodes send.
SEC("tc")
int from_tunnel(struct __sk_buff *skb)
{
	struct iphdr *ip = ipv4(skb);
	if (!ip)
		return TC_ACT_OK;
	return deliver(skb, ip);
}

char _license[] SEC("license") = "Dual BSD/GPL";
