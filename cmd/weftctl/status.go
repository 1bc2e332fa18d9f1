package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

func statusCommand() *cobra.Command {
	var kubeconfig, kctx string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "This cluster's fabric: gateways, their tunnels to peer gateways (state, health, handshake age) and the peer clusters",
		Long: `status reads the ClusterNetwork, the ClusterPeers and the FabricNodes of one cluster and shows its gateways
(endpoint, health, when a stopped one last renewed its Lease), every gateway's tunnels to peer gateways (Active or Standby,
whether the peer answers health probes, the age of the last WireGuard handshake) and each peer
cluster (condition, reason, its gateways), then every node's pod blocks, datapath and
readiness as its FabricNode says, with the other nodes' blocks its agent refused to route
to. Gateways report their tunnels every few seconds.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cl, err := contextCluster(kubeconfig, kctx)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(c.Context(), 30*time.Second)
			defer cancel()
			cn := &fabricv1.ClusterNetwork{}
			if err := cl.Client.Get(ctx, client.ObjectKey{Name: fabricv1.ClusterNetworkName}, cn); err != nil {
				return fmt.Errorf("ClusterNetwork %s: %w", fabricv1.ClusterNetworkName, err)
			}
			peers := &fabricv1.ClusterPeerList{}
			if err := cl.Client.List(ctx, peers); err != nil {
				return fmt.Errorf("ClusterPeers: %w", err)
			}
			var bgpNodes []fabricv1.BGPNode
			if cn.Spec.BGP != nil {
				list := &fabricv1.BGPNodeList{}
				if err := cl.Client.List(ctx, list); err != nil {
					return fmt.Errorf("BGPNodes: %w", err)
				}
				bgpNodes = list.Items
			}
			fabricNodes := &fabricv1.FabricNodeList{}
			if err := cl.Client.List(ctx, fabricNodes); err != nil {
				return fmt.Errorf("FabricNodes: %w", err)
			}
			if err := writeStatus(os.Stdout, cn, peers.Items, time.Now()); err != nil {
				return err
			}
			if err := writeNodes(os.Stdout, fabricNodes.Items); err != nil {
				return err
			}
			return writeBGP(os.Stdout, cn, bgpNodes, time.Now())
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig (default: $KUBECONFIG or ~/.kube/config)")
	f.StringVar(&kctx, "context", "", "context of the cluster (default: the current context)")
	return cmd
}

// writeStatus prints the fabric of one cluster as seen at now.
func writeStatus(w io.Writer, cn *fabricv1.ClusterNetwork, peers []fabricv1.ClusterPeer, now time.Time) error {
	fmt.Fprintf(w, "Cluster %s: %s\n", cn.Spec.ClusterID, health(cn.Status.Conditions, cn.Generation, cn.Status.ObservedGeneration))
	fmt.Fprintf(w, "  pods %s  services %s  tunnel %s  maxActive %d\n",
		joinCIDRs(cn.Spec.PodCIDRs), joinCIDRs(cn.Spec.ServiceCIDRs), orDash(string(cn.Spec.Gateways.Tunnel)), cn.Spec.Gateways.MaxActive)

	fmt.Fprintln(w, "\nGATEWAYS")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tENDPOINT\tTUNNEL\tHEALTHY\tRENEWED\tPUBLIC KEY")
	for _, g := range cn.Status.Gateways {
		// Healthy gateways renew all the time (the status is not rewritten for each): the
		// last renewal says something only of one that stopped.
		renewed := "-"
		if !g.Healthy {
			renewed = "never"
			if g.LastRenewTime != nil {
				renewed = age(now.Sub(g.LastRenewTime.Time)) + " ago"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", g.Node, orDash(g.Endpoint), orDash(string(g.Tunnel)), yesNo(g.Healthy), renewed, orDash(g.PublicKey))
	}
	if len(cn.Status.Gateways) == 0 {
		fmt.Fprintln(tw, "(none: no node matches spec.gateways.nodeSelector, or no gateway has announced itself yet)")
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(w, "\nTUNNELS")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GATEWAY\tPEER GATEWAY\tSTATE\tANSWERING\tHANDSHAKE\tDEVICE\tENDPOINT")
	n := 0
	for _, g := range cn.Status.Gateways {
		for _, t := range g.Tunnels {
			handshake := "none"
			if t.LastHandshakeTime != nil {
				handshake = age(now.Sub(t.LastHandshakeTime.Time)) + " ago"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", g.Node, t.Peer, t.State, yesNo(t.Answering), handshake, orDash(t.Device), orDash(t.Endpoint))
			n++
		}
	}
	if n == 0 {
		fmt.Fprintln(tw, "(none)")
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(w, "\nPEERS")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tCLUSTER ID\tSTATUS\tGATEWAYS\tPODS\tSERVICES\tSINCE")
	for _, p := range peers {
		healthy := 0
		for _, g := range p.Status.Gateways {
			if g.Healthy {
				healthy++
			}
		}
		// How long the peer has been in its state (Ready's last transition); a peer is read
		// every few seconds, but its status is rewritten only when something changes.
		since := "-"
		if c := meta.FindStatusCondition(p.Status.Conditions, "Ready"); c != nil && !c.LastTransitionTime.IsZero() {
			since = age(now.Sub(c.LastTransitionTime.Time))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d healthy\t%s\t%s\t%s\n", p.Name, orDash(p.Spec.ClusterID), health(p.Status.Conditions, p.Generation, p.Status.ObservedGeneration),
			healthy, len(p.Status.Gateways), orDash(viewed(p.Status.PodRanges())), orDash(viewed(p.Status.ServiceRanges())), since)
	}
	if len(peers) == 0 {
		fmt.Fprintln(tw, "(none: connect a cluster with weftctl peer join)")
	}
	return tw.Flush()
}

// viewed lists a peer's ranges, each aliased one as "<its range> as <alias here>".
func viewed(ranges []fabricv1.RangeMap) string {
	var out []string
	for _, m := range ranges {
		if m.Aliased() {
			out = append(out, m.Remote.String()+" as "+m.Local.String())
		} else {
			out = append(out, m.Remote.String())
		}
	}
	return strings.Join(out, ",")
}

// writeNodes prints every node's FabricNode: blocks, datapath, readiness and what its agent
// refused.
func writeNodes(w io.Writer, nodes []fabricv1.FabricNode) error {
	fmt.Fprintln(w, "\nNODES")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tBLOCKS\tDATAPATH\tREADY\tREFUSED")
	for _, n := range nodes {
		ready := "-"
		if c := meta.FindStatusCondition(n.Status.Conditions, fabricv1.ConditionReady); c != nil {
			ready = string(c.Status)
			if c.Status != metav1.ConditionTrue {
				ready += " " + c.Reason
			}
		}
		var refused []string
		for _, r := range n.Status.RefusedBlocks {
			refused = append(refused, fmt.Sprintf("%s of %s (%s)", r.CIDR, r.Node, r.Reason))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", n.Name, orDash(joinCIDRs(n.Spec.PodCIDRs)), orDash(string(n.Status.Datapath)), ready,
			orDash(strings.Join(refused, ", ")))
	}
	if len(nodes) == 0 {
		fmt.Fprintln(tw, "(none: the operator gives each node a FabricNode with its blocks once a ClusterNetwork exists)")
	}
	return tw.Flush()
}

// writeBGP prints every node's BGP sessions (when spec.bgp is set).
func writeBGP(w io.Writer, cn *fabricv1.ClusterNetwork, nodes []fabricv1.BGPNode, now time.Time) error {
	if cn.Spec.BGP == nil {
		return nil
	}
	fmt.Fprintf(w, "\nBGP (AS %d)\n", cn.Spec.BGP.ASN)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tPEER\tADDRESS\tAS\tSTATE\tSINCE\tBFD\tSENT\tRECEIVED\tLAST ERROR")
	n := 0
	for _, b := range nodes {
		for _, p := range b.Status.Peers {
			since := "-"
			if p.Since != nil {
				since = age(now.Sub(p.Since.Time)) + " ago"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%d\t%d\t%s\n", b.Name, p.Name, p.Address, p.ASN, p.State, since, orDash(p.BFD),
				p.PrefixesSent, p.PrefixesReceived, orDash(p.LastError))
			n++
		}
	}
	if n == 0 {
		fmt.Fprintln(tw, "(no sessions reported yet: agents report them in each node's BGPNode)")
	}
	return tw.Flush()
}

// health summarizes kstatus conditions: Ready, or why not.
func health(conds []metav1.Condition, generation, observed int64) string {
	if observed < generation {
		return "Reconciling (generation not observed yet)"
	}
	for _, typ := range []string{"Stalled", "Reconciling"} {
		if c := meta.FindStatusCondition(conds, typ); c != nil && c.Status == metav1.ConditionTrue {
			return fmt.Sprintf("%s %s: %s", typ, c.Reason, c.Message)
		}
	}
	if c := meta.FindStatusCondition(conds, "Ready"); c != nil {
		if c.Status == metav1.ConditionTrue {
			return "Ready"
		}
		return fmt.Sprintf("not Ready %s: %s", c.Reason, c.Message)
	}
	return "unknown (no conditions yet)"
}

// age prints a duration as kubectl does, coarsely: 850ms, 42s, 3m10s, 5h2m, 3d.
func age(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		if d = d.Round(time.Second); d%time.Minute == 0 {
			return strings.TrimSuffix(d.String(), "0s")
		}
		return d.String()
	case d < 24*time.Hour:
		return strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func joinCIDRs(cidrs []fabricv1.CIDR) string {
	s := make([]string, len(cidrs))
	for i, c := range cidrs {
		s[i] = string(c)
	}
	return orDash(strings.Join(s, ","))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
