// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// weft's eBPF datapath: tc (TCX) programs on the node side of each pod's veth and on the
// node's VXLAN device. A packet for a pod of this node goes straight into that pod's
// namespace (bpf_redirect_peer); anything else goes on to the node's kernel, which routes it
// (other nodes' pods through the VXLAN device, Services through kube-proxy's rules).
//
// Network policy: each policed pod and direction has a first-match list of at most 64 rules
// (the agent's flat form). Two longest-prefix tables give, for the remote address and for the
// protocol and port, the bitmask of the rules that match; the lowest bit set in both is the
// first matching rule. A connection is decided on its first packet, where it is seen first:
// egress when the pod sends (after the kernel's DNAT for Services), ingress before it reaches
// the pod; allowed connections of policed pods are remembered (conntrack) so that the rest of
// them, replies included, pass without a decision. The tables carry a version: the agent
// writes a new policy beside the enforced one and switches in one step.
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
enum { STAT_REDIRECTED, STAT_TO_KERNEL, STAT_DROPPED, STAT_DENIED, STAT_MAX };
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} stats SEC(".maps");

// WEFT_MARK is the mark of packets the agent sends into pods (Reject answers, DNS answers it
// held): they are not decided again.
#define WEFT_MARK 0x200000

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

// ---- Policy ----

enum { DIR_EGRESS = 0, DIR_INGRESS = 1 };
enum { VERDICT_PASS = 0, VERDICT_DROP = 1 };
enum { EVENT_LOG = 1, EVENT_REJECT = 2, EVENT_DNS = 4 };
enum { ACTION_ALLOW = 0, ACTION_DROP = 1, ACTION_REJECT = 2 };

// pol_state is the enforced policy's version (0 or 1) and generation.
struct pol_state {
	__u32 version;
	__u32 generation;
};
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pol_state);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pol_state SEC(".maps");

// pol_side is one pod's direction: what its rules do. A pod and direction without one is
// not policed.
struct pol_side_key {
	__u32 pod; // IPv4, network order
	__u8 version;
	__u8 dir;
	__u16 pad;
};
#define MAX_RULES 256
#define WORDS (MAX_RULES / 64)
// rules is a set of a side's rules: rule i is bit i%64 of word i/64.
struct rules {
	__u64 w[WORDS];
};
struct pol_side {
	struct rules allow;    // rules that allow
	struct rules reject;   // rules that reject (the others drop)
	struct rules pass;     // rules that pass to the end of their tier
	struct rules logged;   // rules that report the connections they decide
	struct rules any_port; // rules matching any protocol and port (protocols without ports)
	__u16 tier_end[MAX_RULES];
	__u16 slot[MAX_RULES]; // each rule's counter in rule_hits (0: not counted)
	__u32 generation;
	__u32 pad;
};
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct pol_side_key);
	__type(value, struct pol_side);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pol_sides SEC(".maps");

// rule_hits counts, per CPU, the packets each rule decided: a connection's first packet when
// it allows, each packet when it drops or rejects. The agent numbers the node's rules into
// these slots and reads them when its metrics are scraped.
#define MAX_SLOTS 4096
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} rule_hits SEC(".maps");

// pol_peers: (pod, version, direction, remote address prefix) → rules matching the remote.
struct pol_peer_key {
	__u32 prefixlen; // 64 + the address prefix's length
	__u32 pod;
	__u8 version;
	__u8 dir;
	__u16 pad;
	__u32 addr;
};
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1 << 20);
	__type(key, struct pol_peer_key);
	__type(value, struct rules);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pol_peers SEC(".maps");

// pol_ports: (pod, version, direction, protocol, port prefix) → rules matching the port.
struct pol_port_key {
	__u32 prefixlen; // 64 + the port prefix's length
	__u32 pod;
	__u8 version;
	__u8 dir;
	__u8 proto;
	__u8 pad;
	__be16 port;
	__u16 pad2;
};
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 262144);
	__type(key, struct pol_port_key);
	__type(value, struct rules);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pol_ports SEC(".maps");

// svc_cidrs: the Service ranges; a connection to them is decided after the kernel's DNAT.
struct addr_key {
	__u32 prefixlen;
	__u32 addr;
};
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 64);
	__type(key, struct addr_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} svc_cidrs SEC(".maps");

// dns_pods: pods whose DNS answers go to the agent first (FQDN rules).
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} dns_pods SEC(".maps");

// dns_servers: the resolvers whose answers FQDN rules learn from (ClusterNetwork
// status.dnsResolvers): an answer from anywhere else is policed like any packet.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} dns_servers SEC(".maps");

// conns: the allowed connections of policed pods, by their first packet's 5-tuple.
struct tuple {
	__u32 saddr, daddr;
	__be16 sport, dport; // ICMP echo: the identifier, both
	__u8 proto;
	__u8 pad[3];
};
struct conn {
	__u64 seen; // ns, bpf_ktime_get_ns
};

// dns_queries: the queries dns_pods sent to dns_servers, by 5-tuple as sent; only an answer
// to one of them is held for the agent.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct tuple);
	__type(value, struct conn);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} dns_queries SEC(".maps");

// A query is answered within this long, or its answer is not held.
#define DNS_QUERY_TIMEOUT_NS (30ULL * 1000000000ULL)
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct tuple);
	__type(value, struct conn);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} conns SEC(".maps");

// events hands the agent what it must see: connections a logged rule decided, packets a
// Reject rule refused (the agent answers them), DNS answers it learns from.
struct event {
	__u32 pod;
	__u32 generation;
	__u8 kind; // EVENT_*
	__u8 dir;
	__u8 action;
	__u8 pad;
	__u16 rule; // 0xffff: none
	__u16 pad2;
	__u32 len; // bytes of the packet that follow
};
struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} events SEC(".maps");

const volatile __u64 tcp_timeout_ns = 3600ULL * 1000000000ULL;
const volatile __u64 other_timeout_ns = 120ULL * 1000000000ULL;

static __always_inline int parse_tuple(struct __sk_buff *skb, struct iphdr *ip, struct tuple *t)
{
	void *end = (void *)(long)skb->data_end;
	t->saddr = ip->saddr;
	t->daddr = ip->daddr;
	t->proto = ip->protocol;
	if (ip->ihl < 5)
		return -1;
	if (ip->frag_off & bpf_htons(0x1fff))
		return 0; // a later fragment: no ports
	void *l4 = (void *)ip + ip->ihl * 4;
	switch (ip->protocol) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_SCTP: {
		__be16 *ports = l4;
		if ((void *)(ports + 2) > end)
			return -1;
		t->sport = ports[0];
		t->dport = ports[1];
		break;
	}
	case IPPROTO_ICMP: {
		__u8 *icmp = l4;
		if ((void *)(icmp + 8) > end)
			return -1;
		if (icmp[0] == 8 || icmp[0] == 0) { // echo request, reply
			__be16 id = *(__be16 *)(icmp + 4);
			t->sport = id;
			t->dport = id;
		}
		break;
	}
	}
	return 0;
}

static __always_inline struct pol_side *side_of(__u32 pod, __u32 version, __u8 dir)
{
	struct pol_side_key k = {.pod = pod, .version = version, .dir = dir};
	return bpf_map_lookup_elem(&pol_sides, &k);
}

// lowest is the index of the lowest bit set in m (m != 0).
static __always_inline int lowest(__u64 m)
{
	static const __u8 debruijn[64] = {
		0,  1,  48, 2,  57, 49, 28, 3,  61, 58, 50, 42, 38, 29, 17, 4,  62, 55, 59, 36, 53, 51,
		43, 22, 45, 39, 33, 30, 24, 18, 12, 5,  63, 47, 56, 27, 60, 41, 37, 16, 54, 35, 52, 21,
		44, 32, 23, 11, 46, 26, 40, 15, 34, 20, 31, 10, 25, 14, 19, 9,  13, 8,  7,  6,
	};
	return debruijn[(((m & -m) * 0x03f79d71b4cb0a89ULL) >> 58) & 63];
}

// keep_from is the part of word k of a rule set at or after rule n.
static __always_inline __u64 keep_from(int k, int n)
{
	if (n >= (k + 1) * 64)
		return 0;
	if (n <= k * 64)
		return ~0ULL;
	return ~((1ULL << (n - k * 64)) - 1);
}

// A decision's state, for bpf_loop: the rules still in the running, the side, the result.
struct decision {
	__u64 m[WORDS];
	struct pol_side *s;
	int rule;
	int action;
};

// decide_step looks at the first rule still in the running: a Pass rule drops the rules
// before its tier's end; another decides. 1: decided (or no rule left).
static long decide_step(__u64 n, void *arg)
{
	struct decision *d = arg;
	struct pol_side *s = d->s;
	int k;
	if (d->m[0])
		k = 0;
	else if (d->m[1])
		k = 1;
	else if (d->m[2])
		k = 2;
	else if (d->m[3])
		k = 3;
	else
		return 1;
	__u64 w = d->m[k];
	__u64 bit = w & -w;
	int i = (k * 64 + lowest(w)) & (MAX_RULES - 1);
	if (s->pass.w[k] & bit) {
		int from = s->tier_end[i];
		for (int j = 0; j < WORDS; j++)
			d->m[j] &= keep_from(j, from);
		return 0;
	}
	d->rule = i;
	if (s->allow.w[k] & bit)
		d->action = ACTION_ALLOW;
	else
		d->action = (s->reject.w[k] & bit) ? ACTION_REJECT : ACTION_DROP;
	return 1;
}

// decide runs a pod's direction over a connection: the action and the deciding rule
// (-1: none matched). The lowest rule in both the remote's and the port's set decides.
static __always_inline int decide(struct pol_side *s, __u32 pod, __u32 version, __u8 dir, __u32 remote, struct tuple *t, int *rule)
{
	*rule = -1;
	struct pol_peer_key pk = {.prefixlen = 96, .pod = pod, .version = version, .dir = dir, .addr = remote};
	struct rules *peers = bpf_map_lookup_elem(&pol_peers, &pk);
	if (!peers)
		return ACTION_ALLOW;
	struct rules *ports = &s->any_port;
	if (t->proto == IPPROTO_TCP || t->proto == IPPROTO_UDP || t->proto == IPPROTO_SCTP) {
		struct pol_port_key qk = {.prefixlen = 80, .pod = pod, .version = version, .dir = dir, .proto = t->proto, .port = t->dport};
		ports = bpf_map_lookup_elem(&pol_ports, &qk);
		if (!ports)
			return ACTION_ALLOW;
	}
	struct decision d = {.s = s, .rule = -1, .action = ACTION_ALLOW};
	for (int j = 0; j < WORDS; j++)
		d.m[j] = peers->w[j] & ports->w[j];
	bpf_loop(MAX_RULES + 1, decide_step, &d, 0);
	*rule = d.rule;
	return d.action;
}

// report hands the packet to the agent (a logged or rejected connection).
static __always_inline void report(struct __sk_buff *skb, __u8 kind, __u32 pod, struct pol_side *s, __u8 dir, int rule, int action)
{
	struct event e = {.pod = pod, .generation = s ? s->generation : 0, .kind = kind, .dir = dir, .rule = rule < 0 ? 0xffff : rule, .action = action};
	__u64 len = skb->len;
	if (kind != EVENT_DNS && len > 128)
		len = 128; // the headers suffice
	if (len > 0xffff)
		len = 0xffff;
	e.len = len;
	bpf_perf_event_output(skb, &events, BPF_F_CURRENT_CPU | (len << 32), &e, sizeof(e));
}

static __always_inline int tracked(struct tuple *t)
{
	struct conn *c = bpf_map_lookup_elem(&conns, t);
	struct tuple r = {.saddr = t->daddr, .daddr = t->saddr, .sport = t->dport, .dport = t->sport, .proto = t->proto};
	if (!c)
		c = bpf_map_lookup_elem(&conns, &r);
	if (!c)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	__u64 timeout = t->proto == IPPROTO_TCP ? tcp_timeout_ns : other_timeout_ns;
	if (now - c->seen > timeout)
		return 0;
	if (now - c->seen > 1000000000ULL)
		c->seen = now;
	return 1;
}

static __always_inline void track(struct tuple *t)
{
	struct conn c = {.seen = bpf_ktime_get_ns()};
	bpf_map_update_elem(&conns, t, &c, BPF_ANY);
}

// count_rule counts a decision of a side's rule (none: -1).
static __always_inline void count_rule(struct pol_side *s, int rule)
{
	if (rule < 0)
		return;
	__u32 slot = s->slot[rule & (MAX_RULES - 1)];
	if (!slot)
		return;
	__u64 *n = bpf_map_lookup_elem(&rule_hits, &slot);
	if (n)
		*n += 1;
}

// one decides one side of a connection; VERDICT_DROP when it denies (reported as its rules
// say). *rule is the rule that decided (-1: none).
static __always_inline int one(struct __sk_buff *skb, struct tuple *t, struct pol_side *s, __u32 version, __u32 pod, __u8 dir, __u32 remote, int *rule_out)
{
	int rule;
	int action = decide(s, pod, version, dir, remote, t, &rule);
	*rule_out = rule;
	__u8 kind = 0;
	if (rule >= 0 && (s->logged.w[(rule >> 6) & (WORDS - 1)] >> (rule & 63)) & 1)
		kind |= EVENT_LOG;
	if (action == ACTION_REJECT)
		kind |= EVENT_REJECT;
	if (kind)
		report(skb, kind, pod, s, dir, rule, action);
	if (action == ACTION_ALLOW)
		return VERDICT_PASS;
	count(STAT_DENIED, 0);
	return VERDICT_DROP;
}

// police decides a packet's connection unless it is known: the source pod's egress, the
// destination pod's ingress (as asked). An allowed connection of a policed pod is
// remembered when commit is set (else a later hook decides it again, with both sides).
// Packets of pods no policy names cost a few hash lookups.
static __always_inline int police(struct __sk_buff *skb, struct tuple *t, int egress, int ingress, int commit)
{
	__u32 zero = 0;
	struct pol_state *st = bpf_map_lookup_elem(&pol_state, &zero);
	if (!st)
		return VERDICT_PASS;
	__u32 version = st->version;
	struct pol_side *eg = egress ? side_of(t->saddr, version, DIR_EGRESS) : 0;
	struct pol_side *in = ingress ? side_of(t->daddr, version, DIR_INGRESS) : 0;
	// A connection is remembered when a pod of this node decides it, or will decide its
	// replies (a source with ingress rules, a destination with egress rules).
	// (Separate tests, not one on both pointers: the verifier refuses or-ing pointers.)
	volatile int policed = 0;
	if (eg)
		policed = 1;
	if (in)
		policed = 1;
	if (!policed && egress && side_of(t->saddr, version, DIR_INGRESS))
		policed = 1;
	if (!policed && ingress && side_of(t->daddr, version, DIR_EGRESS))
		policed = 1;
	if (!policed || tracked(t))
		return VERDICT_PASS;
	// Rules are counted when their decision is final: a drop, or an allow remembered here
	// (one not remembered is decided again, with both sides, at the next hook).
	int erule = -1, irule = -1;
	int verdict = VERDICT_PASS;
	if (eg && one(skb, t, eg, version, t->saddr, DIR_EGRESS, t->daddr, &erule) != VERDICT_PASS)
		verdict = VERDICT_DROP;
	if (verdict == VERDICT_PASS && in && one(skb, t, in, version, t->daddr, DIR_INGRESS, t->saddr, &irule) != VERDICT_PASS)
		verdict = VERDICT_DROP;
	if (verdict == VERDICT_DROP || commit) {
		if (eg)
			count_rule(eg, erule);
		if (in)
			count_rule(in, irule);
	}
	if (verdict == VERDICT_PASS && commit)
		track(t);
	return verdict;
}

static __always_inline int is_service(__u32 addr)
{
	struct addr_key k = {.prefixlen = 32, .addr = addr};
	return bpf_map_lookup_elem(&svc_cidrs, &k) != 0;
}

// note_dns_query remembers a query a pod with FQDN rules sends to a trusted resolver.
static __always_inline void note_dns_query(struct tuple *t)
{
	if (t->proto != IPPROTO_UDP || t->dport != bpf_htons(53) || !bpf_map_lookup_elem(&dns_pods, &t->saddr) ||
	    !bpf_map_lookup_elem(&dns_servers, &t->daddr))
		return;
	struct conn c = {.seen = bpf_ktime_get_ns()};
	bpf_map_update_elem(&dns_queries, t, &c, BPF_ANY);
}

// hold_dns hands a DNS answer to a pod with FQDN rules to the agent, which learns the
// addresses, enforces them and sends the answer on (marked) — only an answer from a trusted
// resolver to a query the pod sent it (the reply of a tracked query, so neither policy nor
// tracking is skipped). Anything else from port 53 goes on through policy. 1: held.
static __always_inline int hold_dns(struct __sk_buff *skb, struct tuple *t)
{
	if (t->proto != IPPROTO_UDP || t->sport != bpf_htons(53) || !bpf_map_lookup_elem(&dns_pods, &t->daddr) ||
	    !bpf_map_lookup_elem(&dns_servers, &t->saddr))
		return 0;
	struct tuple q = {.saddr = t->daddr, .daddr = t->saddr, .sport = t->dport, .dport = t->sport, .proto = t->proto};
	struct conn *c = bpf_map_lookup_elem(&dns_queries, &q);
	if (!c || bpf_ktime_get_ns() - c->seen > DNS_QUERY_TIMEOUT_NS)
		return 0;
	report(skb, EVENT_DNS, t->daddr, 0, DIR_INGRESS, -1, ACTION_ALLOW);
	return 1;
}

// ---- Forwarding ----

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

// deliver sends an IPv4 packet to a pod of this node — after the pod's ingress policy —
// or lets the kernel have it. egress: the source pod's egress is still to be decided.
static __always_inline int deliver(struct __sk_buff *skb, struct iphdr *ip, struct tuple *t, int egress)
{
	__u32 daddr = ip->daddr;
	struct endpoint *ep = bpf_map_lookup_elem(&endpoints, &daddr);
	if (!ep || kernel_tracks(skb, ip)) {
		// Decided here only if the packet reaches no pod of this node; one that does is
		// decided where the kernel hands it to the pod (to_pod), both sides at once.
		if (egress && police(skb, t, 1, 0, !ep) != VERDICT_PASS)
			return count(STAT_DROPPED, TC_ACT_SHOT);
		return count(STAT_TO_KERNEL, TC_ACT_OK);
	}
	if (police(skb, t, egress, 1, 1) != VERDICT_PASS)
		return count(STAT_DROPPED, TC_ACT_SHOT);
	if (hold_dns(skb, t))
		return count(STAT_DROPPED, TC_ACT_SHOT);
	if (bpf_skb_store_bytes(skb, 0, ep->pod_mac, ETH_ALEN, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, ep->host_mac, ETH_ALEN, 0) < 0)
		return count(STAT_DROPPED, TC_ACT_SHOT);
	return count(STAT_REDIRECTED, bpf_redirect_peer(ep->ifindex, 0));
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
	// The sending socket's random hash would pick the node's next hop among the gateways
	// (the kernel's multipath hash uses a hash the packet carries): without it the kernel
	// hashes the connection, the same both ways, and its replies come back through the
	// gateways that carried it (fabricv1.MultipathHashSeed).
	bpf_set_hash_invalid(skb);
	struct tuple t = {};
	if (parse_tuple(skb, ip, &t) < 0)
		return count(STAT_DROPPED, TC_ACT_SHOT);
	note_dns_query(&t);
	if (is_service(t.daddr)) {
		// Decided after the kernel's DNAT (to_pod, to_tunnel); the replies, which the
		// kernel gives the Service's address back, are known.
		__u32 zero = 0;
		struct pol_state *st = bpf_map_lookup_elem(&pol_state, &zero);
		if (st && side_of(t.saddr, st->version, DIR_INGRESS) && !tracked(&t))
			track(&t);
		return count(STAT_TO_KERNEL, TC_ACT_OK);
	}
	return deliver(skb, ip, &t, 1);
}

// from_tunnel runs on ingress of the VXLAN device: what other nodes send.
SEC("tc")
int from_tunnel(struct __sk_buff *skb)
{
	struct iphdr *ip = ipv4(skb);
	if (!ip)
		return TC_ACT_OK;
	// The outer packet's hash (a NIC's receive hash) would pick this gateway node's next hop
	// into the tunnels to peer clusters; without it the kernel hashes the connection, as
	// from_pod has it.
	bpf_set_hash_invalid(skb);
	struct tuple t = {};
	if (parse_tuple(skb, ip, &t) < 0)
		return count(STAT_DROPPED, TC_ACT_SHOT);
	return deliver(skb, ip, &t, 0);
}

// from_uplink runs on ingress of the node's uplink when nothing encapsulates: what other
// nodes send. A hash the packet arrives with — a NIC's receive hash, or a sending socket's
// over a veth — would pick this gateway node's next hop into the tunnels to peer clusters
// (the kernel takes an L4 hash it finds as is); without it the kernel hashes the connection,
// the same both ways, as from_pod and from_tunnel have it. (Receive steering has used the
// hash before this runs.)
SEC("tc")
int from_uplink(struct __sk_buff *skb)
{
	bpf_set_hash_invalid(skb);
	return TC_ACT_OK;
}

// to_pod runs on egress of a pod veth's node side: what the node's kernel delivers to the
// pod (from other nodes and clusters, Services after DNAT, the node itself).
SEC("tc")
int to_pod(struct __sk_buff *skb)
{
	if (skb->mark & WEFT_MARK)
		return TC_ACT_OK;
	struct iphdr *ip = ipv4(skb);
	if (!ip)
		return TC_ACT_OK;
	struct tuple t = {};
	if (parse_tuple(skb, ip, &t) < 0)
		return TC_ACT_SHOT;
	if (hold_dns(skb, &t))
		return TC_ACT_SHOT;
	if (skb->ingress_ifindex == 0)
		return TC_ACT_OK; // the node's own packets (kubelet probes, host-network pods)
	__u32 saddr = ip->saddr;
	int egress = bpf_map_lookup_elem(&endpoints, &saddr) != 0;
	if (police(skb, &t, egress, 1, 1) != VERDICT_PASS)
		return count(STAT_DROPPED, TC_ACT_SHOT);
	return TC_ACT_OK;
}

// to_tunnel runs on egress of the VXLAN device: a pod's connection to a Service the kernel
// translated to another node's pod is decided here (egress).
SEC("tc")
int to_tunnel(struct __sk_buff *skb)
{
	if (skb->mark & WEFT_MARK)
		return TC_ACT_OK;
	struct iphdr *ip = ipv4(skb);
	if (!ip)
		return TC_ACT_OK;
	__u32 saddr = ip->saddr;
	if (!bpf_map_lookup_elem(&endpoints, &saddr))
		return TC_ACT_OK;
	struct tuple t = {};
	if (parse_tuple(skb, ip, &t) < 0)
		return TC_ACT_SHOT;
	if (police(skb, &t, 1, 0, 1) != VERDICT_PASS)
		return count(STAT_DROPPED, TC_ACT_SHOT);
	return TC_ACT_OK;
}

char _license[] SEC("license") = "Dual BSD/GPL";
