package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/render"
)

func diagnoseCommand() *cobra.Command {
	var kubeconfig, kctx, namespace, output string
	cmd := &cobra.Command{
		Use:   "diagnose",
		Short: "Check a cluster's fabric and its peers; print each check with what to do when it fails",
		Long: `diagnose reads one cluster (the ClusterNetwork, ClusterPeers, FabricNodes, FabricPolicies, the
cluster DNS configuration) and checks: the fabric is Ready, every node's agent is ready, the
gateways renew their Leases, each peer's API server is read and is the cluster named, what it
advertises is accepted (ranges that overlap are aliased, or refused), its tunnels are handshaken
and answer health probes through every peer gateway's port, its state is current, the
Kubernetes versions are within one minor version, the cluster DNS forwards the clusterset zone to
weft-dns, and every FabricPolicy is realized on every node. Each failed check says how to fix it.
The exit status is 1 when a check fails; -o json prints the checks as JSON.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if output != "" && output != "json" {
				return fmt.Errorf("-o %q: only json", output)
			}
			cl, err := contextCluster(kubeconfig, kctx)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(c.Context(), 30*time.Second)
			defer cancel()
			in, err := readDiagnosis(ctx, cl.Client, namespace)
			if err != nil {
				return err
			}
			if dc, err := discovery.NewDiscoveryClientForConfig(cl.Config); err == nil {
				if v, err := dc.ServerVersion(); err == nil {
					in.KubernetesVersion = v.GitVersion
				}
			}
			checks := diagnose(in)
			if output == "json" {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(checks); err != nil {
					return err
				}
			} else if err := writeChecks(os.Stdout, checks); err != nil {
				return err
			}
			if n := failed(checks); n > 0 {
				c.SilenceUsage = true
				return fmt.Errorf("%d of %d checks failed", n, len(checks))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig (default: $KUBECONFIG or ~/.kube/config)")
	f.StringVar(&kctx, "context", "", "context of the cluster (default: the current context)")
	f.StringVar(&namespace, "namespace", "weft-system", "weft's namespace")
	f.StringVarP(&output, "output", "o", "", "json: the checks as JSON")
	return cmd
}

// Check is one diagnosis: what was checked, whether it passed, what was found, and how to fix
// it when it failed.
type Check struct {
	Check  string `json:"check"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
	Fix    string `json:"fix,omitempty"`
}

// diagnosis is what diagnose reads of a cluster.
type diagnosis struct {
	CN       *fabricv1.ClusterNetwork
	Peers    []fabricv1.ClusterPeer
	Nodes    []fabricv1.FabricNode
	Policies []fabricv1.FabricPolicy
	// Corefile is the cluster DNS's (ConfigMap kube-system/coredns); CorefileErr why it could
	// not be read ("" when it was).
	Corefile, CorefileErr string
	// DNSServiceIP is weft-dns's Service's cluster IP ("" without one).
	DNSServiceIP string
	// KubernetesVersion is this cluster's API server's ("" unknown).
	KubernetesVersion string
	Now               time.Time
}

func readDiagnosis(ctx context.Context, c client.Client, namespace string) (diagnosis, error) {
	in := diagnosis{CN: &fabricv1.ClusterNetwork{}, Now: time.Now()}
	if err := c.Get(ctx, client.ObjectKey{Name: fabricv1.ClusterNetworkName}, in.CN); err != nil {
		return in, fmt.Errorf("ClusterNetwork %s: %w (is weft installed?)", fabricv1.ClusterNetworkName, err)
	}
	peers := &fabricv1.ClusterPeerList{}
	nodes := &fabricv1.FabricNodeList{}
	policies := &fabricv1.FabricPolicyList{}
	for what, list := range map[string]client.ObjectList{"ClusterPeers": peers, "FabricNodes": nodes, "FabricPolicies": policies} {
		if err := c.List(ctx, list); err != nil {
			return in, fmt.Errorf("%s: %w", what, err)
		}
	}
	in.Peers, in.Nodes, in.Policies = peers.Items, nodes.Items, policies.Items
	cm := &corev1.ConfigMap{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "kube-system", Name: "coredns"}, cm); err != nil {
		in.CorefileErr = err.Error()
		if apierrors.IsNotFound(err) {
			in.CorefileErr = "ConfigMap kube-system/coredns not found"
		}
	} else {
		in.Corefile = cm.Data["Corefile"]
	}
	svc := &corev1.Service{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: render.DNSName}, svc); err == nil && svc.Spec.ClusterIP != corev1.ClusterIPNone {
		in.DNSServiceIP = svc.Spec.ClusterIP
	}
	return in, nil
}

// diagnose runs every check on what was read.
func diagnose(in diagnosis) []Check {
	var out []Check
	add := func(ok bool, check, detail, fix string) {
		c := Check{Check: check, OK: ok, Detail: detail}
		if !ok {
			c.Fix = fix
		}
		out = append(out, c)
	}
	cn := in.CN

	ready := meta.FindStatusCondition(cn.Status.Conditions, fabricv1.ConditionReady)
	switch {
	case ready == nil:
		add(false, "the fabric is Ready", "the ClusterNetwork has no Ready condition yet", "is the weft operator running? kubectl -n weft-system get pods")
	default:
		add(ready.Status == metav1.ConditionTrue, "the fabric is Ready", ready.Reason+": "+ready.Message,
			"see kubectl get clusternetwork default -o yaml (conditions) and docs/api.md for the reason")
	}

	var notReady []string
	for _, n := range in.Nodes {
		if !meta.IsStatusConditionTrue(n.Status.Conditions, fabricv1.ConditionReady) {
			notReady = append(notReady, n.Name)
		}
	}
	add(len(in.Nodes) > 0 && len(notReady) == 0, "every node's agent is ready",
		fmt.Sprintf("%d of %d FabricNodes Ready%s", len(in.Nodes)-len(notReady), len(in.Nodes), listed(" (not: %s)", notReady)),
		"kubectl -n weft-system logs daemonset/weft-agent, and kubectl get fabricnode <node> -o yaml")

	healthy := 0
	var stopped []string
	for _, g := range cn.Status.Gateways {
		if g.Healthy {
			healthy++
			continue
		}
		since := "never renewed"
		if g.LastRenewTime != nil {
			since = "last renewed " + age(in.Now.Sub(g.LastRenewTime.Time)) + " ago"
		}
		stopped = append(stopped, g.Node+" ("+since+")")
	}
	switch {
	case len(cn.Status.Gateways) == 0 && len(in.Peers) > 0:
		add(false, "gateways renew their Leases", "no gateway announces itself", "label a node fabric.weft.dev/gateway=true (spec.gateways.nodeSelector)")
	case len(cn.Status.Gateways) > 0:
		add(len(stopped) == 0, "gateways renew their Leases",
			fmt.Sprintf("%d of %d healthy%s", healthy, len(cn.Status.Gateways), listed("; stopped: %s", stopped)),
			"kubectl -n weft-system get pods -l app.kubernetes.io/name=weft-gateway -o wide; the gateway's logs on that node")
	}

	peers := append([]fabricv1.ClusterPeer{}, in.Peers...)
	sort.Slice(peers, func(i, j int) bool { return peers[i].Name < peers[j].Name })
	for i := range peers {
		out = append(out, diagnosePeer(&peers[i], cn, in)...)
	}

	domain := render.DNSDomain(cn)
	switch {
	case in.CorefileErr != "":
		add(false, "the cluster DNS forwards "+domain+" to weft-dns", in.CorefileErr,
			"forward the zone "+domain+" to the Service weft-system/weft-dns by hand in your cluster DNS")
	case in.DNSServiceIP == "":
		add(false, "the cluster DNS forwards "+domain+" to weft-dns", "Service weft-dns has no cluster IP yet",
			"kubectl -n weft-system get deploy,svc weft-dns")
	default:
		ok := render.WithClusterSetZone(in.Corefile, domain, in.DNSServiceIP) == strings.TrimRight(in.Corefile, "\n")+"\n"
		detail := "ConfigMap kube-system/coredns has weft's server block for " + domain + " → " + in.DNSServiceIP
		if !ok {
			detail = "ConfigMap kube-system/coredns lacks weft's server block for " + domain + " → " + in.DNSServiceIP
		}
		add(ok, "the cluster DNS forwards "+domain+" to weft-dns", detail,
			"the operator writes it when it reconciles the ClusterNetwork (kubectl -n weft-system rollout restart deploy/weft-operator), or forward "+domain+" to "+in.DNSServiceIP+" by hand")
	}

	for _, p := range in.Policies {
		st := p.Status
		current := st.ObservedGeneration == p.Generation
		add(current && st.RealizedNodes == st.DesiredNodes,
			"FabricPolicy "+p.Name+" is realized on every node",
			fmt.Sprintf("generation %d realized on %d of %d nodes", p.Generation, st.RealizedNodes, st.DesiredNodes),
			"kubectl get fabricnodes -o yaml (status.realizedPolicies) shows which nodes lag; the agents' logs say why")
	}
	return out
}

// diagnosePeer checks one ClusterPeer.
func diagnosePeer(p *fabricv1.ClusterPeer, cn *fabricv1.ClusterNetwork, in diagnosis) []Check {
	var out []Check
	add := func(ok bool, check, detail, fix string) {
		c := Check{Check: "peer " + p.Name + ": " + check, OK: ok, Detail: detail}
		if !ok {
			c.Fix = fix
		}
		out = append(out, c)
	}
	cond := func(t string) *metav1.Condition { return meta.FindStatusCondition(p.Status.Conditions, t) }
	says := func(c *metav1.Condition) string {
		if c == nil {
			return "no condition yet"
		}
		return c.Reason + ": " + c.Message
	}

	connected := cond(fabricv1.ConditionConnected)
	add(connected != nil && connected.Status == metav1.ConditionTrue, "its API server is read and is cluster "+p.Spec.ClusterID,
		says(connected), peerFix(connected))
	accepted := cond(fabricv1.ConditionAccepted)
	add(accepted != nil && accepted.Status == metav1.ConditionTrue, "what it advertises is accepted", says(accepted), peerFix(accepted))
	if stalled := cond(fabricv1.ConditionStalled); stalled != nil && stalled.Status == metav1.ConditionTrue {
		add(false, "nothing it says is refused", says(stalled), peerFix(stalled))
	}
	if p.Status.StaleSince != nil {
		add(false, "its state is current", "served from its last state since "+age(in.Now.Sub(p.Status.StaleSince.Time))+" ago (traffic still flows)",
			peerFix(connected))
	}
	if aliased := p.Status.AliasedRanges(); len(aliased) > 0 {
		add(true, "its ranges overlap this cluster's or another peer's: seen at aliases", viewed(aliased), "")
	}

	// Tunnels: every live gateway of this cluster to every live gateway of the peer (a peer
	// gateway that stopped is the peer's to diagnose: its own diagnose names it).
	var up, down []string
	wg := cn.Spec.Gateways.Tunnel == "" || cn.Spec.Gateways.Tunnel == fabricv1.TunnelWireGuard
	live := map[string]bool{}
	for _, g := range p.Status.Gateways {
		live[fabricv1.GatewayPeerName(p.Spec.ClusterID, g.Node)] = g.Healthy
	}
	for _, g := range cn.Status.Gateways {
		if !g.Healthy {
			continue
		}
		for _, t := range g.Tunnels {
			if !strings.HasPrefix(t.Peer, p.Spec.ClusterID+"/") || !live[t.Peer] {
				continue
			}
			hop := g.Node + " → " + t.Peer
			switch {
			case t.Answering && (!wg || t.LastHandshakeTime != nil):
				up = append(up, hop)
			case wg && t.LastHandshakeTime == nil:
				down = append(down, hop+" (never handshaken)")
			default:
				down = append(down, hop+" (no answer to health probes)")
			}
		}
	}
	add(len(up) > 0 && len(down) == 0, "tunnels are handshaken and answer through every peer gateway",
		fmt.Sprintf("%d answering%s", len(up), listed("; not: %s", down)),
		"check that UDP reaches the peer gateways' endpoints (kubectl get clusterpeer "+p.Name+" -o jsonpath='{.status.gateways[*].endpoint}'; each gateway's per-peer port in peerPorts), that both sides run the same tunnel driver, and the gateways' logs")

	if in.KubernetesVersion != "" && p.Status.KubernetesVersion != "" {
		skew := minorSkew(in.KubernetesVersion, p.Status.KubernetesVersion)
		add(skew <= 1, "Kubernetes versions within one minor version",
			"here "+in.KubernetesVersion+", there "+p.Status.KubernetesVersion,
			"upgrade the older cluster: MCS and the peer credential are tested one minor version apart")
	}
	if here, there := in.CN.Status.OperatorVersion, p.Status.WeftVersion; here != "" && there != "" {
		add(minorSkew(here, there) <= 1, "weft releases within one minor version", "here "+here+", there "+there,
			"upgrade weft in the older cluster: peers are supported one minor release apart")
	}
	return out
}

// peerFix says what to do about a ClusterPeer condition's reason.
func peerFix(c *metav1.Condition) string {
	if c == nil {
		return "is the weft operator running? kubectl -n weft-system logs deploy/weft-operator"
	}
	switch c.Reason {
	case fabricv1.ReasonSecretNotFound, fabricv1.ReasonSecretKeyNotFound, fabricv1.ReasonInvalidKubeconfig, fabricv1.ReasonSecretNamespaceRefused:
		return "re-run weftctl peer join, which writes the peer's kubeconfig Secret in weft-system"
	case fabricv1.ReasonUnauthorized, fabricv1.ReasonForbidden:
		return "the credential expired or was revoked: re-run weftctl peer join"
	case fabricv1.ReasonUnreachable, fabricv1.ReasonUnexpectedResponse, fabricv1.ReasonServingLastKnownState, fabricv1.ReasonStaleTooLong:
		return "check that this cluster's operator reaches the peer's API server (network, firewall, the address in the Secret's kubeconfig)"
	case fabricv1.ReasonClusterIDMismatch, fabricv1.ReasonPeerIsThisCluster:
		return "the Secret points at another cluster: re-run weftctl peer join with the right contexts"
	case fabricv1.ReasonPeerNotConfigured:
		return "install weft in the peer cluster and create its ClusterNetwork"
	case fabricv1.ReasonRefusedRange:
		return "the peer claims ranges it may not (the message names them): fix its ClusterNetwork, or widen spec.allowedCIDRs"
	case fabricv1.ReasonOverlappingCIDR:
		return "spec.overlap.policy is Refuse: set it to Alias to join overlapping peers (docs/overlap.md)"
	case fabricv1.ReasonAliasPoolExhausted:
		return "widen spec.overlap.aliasPool of this cluster's ClusterNetwork"
	case fabricv1.ReasonInvalidAdvertisement:
		return "the peer advertises something malformed or beyond the limits (the message says what): look at its ClusterNetwork status"
	}
	return "see docs/api.md for reason " + c.Reason
}

// minorSkew is how many minor versions apart two Kubernetes versions (v1.37.2) are; 0 when
// either cannot be read.
func minorSkew(a, b string) int {
	parse := func(v string) (major, minor int, ok bool) {
		parts := strings.Split(strings.TrimPrefix(v, "v"), ".")
		if len(parts) < 2 {
			return 0, 0, false
		}
		major, err := strconv.Atoi(parts[0])
		if err != nil {
			return 0, 0, false
		}
		minor, err = strconv.Atoi(strings.TrimRightFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
		return major, minor, err == nil
	}
	xa, xi, okA := parse(a)
	ya, yi, okB := parse(b)
	switch {
	case !okA || !okB:
		return 0
	case xa != ya:
		return majorApart
	case xi > yi:
		return xi - yi
	}
	return yi - xi
}

// majorApart is minorSkew's answer for versions of different major releases.
const majorApart = 1000

func listed(format string, items []string) string {
	if len(items) == 0 {
		return ""
	}
	return fmt.Sprintf(format, strings.Join(items, ", "))
}

func failed(checks []Check) int {
	n := 0
	for _, c := range checks {
		if !c.OK {
			n++
		}
	}
	return n
}

// writeChecks prints the checks, each failed one with its fix.
func writeChecks(w io.Writer, checks []Check) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RESULT\tCHECK\tDETAIL")
	for _, c := range checks {
		result := "ok"
		if !c.OK {
			result = "FAIL"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", result, c.Check, orDash(c.Detail))
		if !c.OK && c.Fix != "" {
			fmt.Fprintf(tw, "\t  fix: %s\t\n", c.Fix)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if n := failed(checks); n > 0 {
		_, err := fmt.Fprintf(w, "\n%d of %d checks failed\n", n, len(checks))
		return err
	}
	_, err := fmt.Fprintf(w, "\nall %d checks passed\n", len(checks))
	return err
}
