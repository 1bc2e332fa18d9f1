package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/peering"
)

func clustersetCommand() *cobra.Command {
	var kubeconfig string
	var opts peering.Options
	cmd := &cobra.Command{Use: "clusterset", Short: "Every cluster of a clusterset peered with every other, in one command"}
	cmd.PersistentFlags().StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig with every context (default: $KUBECONFIG or ~/.kube/config)")
	cmd.PersistentFlags().StringVar(&opts.Namespace, "namespace", "weft-system", "weft's namespace")

	join := &cobra.Command{
		Use:   "join CONTEXT CONTEXT...",
		Short: "Peer every pair of these clusters (a full mesh); run again, or with one more context, to renew or grow the set",
		Long: `join runs weftctl peer join for every pair of the clusters named, in the order given
(the first with the second, the first with the third, ..., then the second with the third, ...):
each cluster reads every other with a least-privilege identity. It is idempotent: run again it
renews the tokens; run with one more context it adds that cluster to the set.`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(c *cobra.Command, contexts []string) error {
			clusters, err := openContexts(kubeconfig, contexts)
			if err != nil {
				return err
			}
			for _, p := range meshPairs(len(clusters)) {
				a, b := clusters[p[0]], clusters[p[1]]
				ctx, cancel := context.WithTimeout(c.Context(), time.Minute)
				err := peering.Join(ctx, a, b, opts)
				cancel()
				if err != nil {
					return fmt.Errorf("joining %s and %s: %w", a.Name, b.Name, err)
				}
				fmt.Printf("%s and %s are peers\n", a.Name, b.Name)
			}
			fmt.Printf("watch them connect: weftctl clusterset status %s\n", strings.Join(contexts, " "))
			return nil
		},
	}
	join.Flags().DurationVar(&opts.TokenDuration, "token-duration", 365*24*time.Hour, "lifetime of the issued tokens (re-run join to renew)")

	leave := &cobra.Command{
		Use:   "leave CONTEXT MEMBER...",
		Short: "Take the first cluster out of the clusterset: peer leave with every member named",
		Long: `leave runs weftctl peer leave between the first cluster and each other one named: each
side's ClusterPeer for the other, its Secret and the other's identity go (the tokens stop
working). The other members stay peered with each other. Running it again does nothing.`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(c *cobra.Command, contexts []string) error {
			clusters, err := openContexts(kubeconfig, contexts)
			if err != nil {
				return err
			}
			var errs []error
			for _, other := range clusters[1:] {
				ctx, cancel := context.WithTimeout(c.Context(), time.Minute)
				if err := peering.Leave(ctx, clusters[0], other, opts); err != nil {
					errs = append(errs, fmt.Errorf("%s leaving %s: %w", clusters[0].Name, other.Name, err))
				} else {
					fmt.Printf("%s and %s are no longer peers\n", clusters[0].Name, other.Name)
				}
				cancel()
			}
			return errors.Join(errs...)
		},
	}

	status := &cobra.Command{
		Use:   "status CONTEXT...",
		Short: "The whole mesh: every cluster's view of every other (state, tunnels, staleness, aliases)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, contexts []string) error {
			clusters, err := openContexts(kubeconfig, contexts)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(c.Context(), 30*time.Second)
			defer cancel()
			var views []clusterView
			for _, cl := range clusters {
				v := clusterView{Context: cl.Name, CN: &fabricv1.ClusterNetwork{}}
				if err := cl.Client.Get(ctx, client.ObjectKey{Name: fabricv1.ClusterNetworkName}, v.CN); err != nil {
					return fmt.Errorf("%s: ClusterNetwork: %w", cl.Name, err)
				}
				peers := &fabricv1.ClusterPeerList{}
				if err := cl.Client.List(ctx, peers); err != nil {
					return fmt.Errorf("%s: ClusterPeers: %w", cl.Name, err)
				}
				v.Peers = peers.Items
				views = append(views, v)
			}
			missing, err := writeMesh(os.Stdout, views, time.Now())
			if err != nil {
				return err
			}
			if missing > 0 {
				c.SilenceUsage = true
				return fmt.Errorf("%d pairs are not peered or not Ready", missing)
			}
			return nil
		},
	}
	cmd.AddCommand(join, leave, status)
	return cmd
}

// openContexts opens every context named, refusing one named twice.
func openContexts(kubeconfig string, contexts []string) ([]peering.Cluster, error) {
	seen := map[string]bool{}
	var out []peering.Cluster
	for _, name := range contexts {
		if seen[name] {
			return nil, fmt.Errorf("context %s is named twice", name)
		}
		seen[name] = true
		c, err := contextCluster(kubeconfig, name)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// meshPairs are the pairs of a full mesh of n clusters, by index, in the order join peers
// them: the first with each later one, then the second with each later one, ...
func meshPairs(n int) [][2]int {
	var out [][2]int
	for i := 0; i < n; i++ {
		for j := i + 1; j < n; j++ {
			out = append(out, [2]int{i, j})
		}
	}
	return out
}

// clusterView is what clusterset status reads of one cluster.
type clusterView struct {
	Context string
	CN      *fabricv1.ClusterNetwork
	Peers   []fabricv1.ClusterPeer
}

// writeMesh prints every ordered pair of the clusters: how the first sees the second. It
// returns how many pairs are missing a ClusterPeer or are not Ready.
func writeMesh(w io.Writer, views []clusterView, now time.Time) (int, error) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FROM\tTO\tSTATUS\tTUNNELS\tLAST SYNC\tSTALE SINCE\tALIASES")
	missing := 0
	for _, from := range views {
		for _, to := range views {
			if from.Context == to.Context {
				continue
			}
			id := to.CN.Spec.ClusterID
			var p *fabricv1.ClusterPeer
			for i := range from.Peers {
				if from.Peers[i].Spec.ClusterID == id {
					p = &from.Peers[i]
				}
			}
			if p == nil {
				missing++
				fmt.Fprintf(tw, "%s\t%s\tnot peered\t-\t-\t-\t-\n", from.Context, to.Context)
				continue
			}
			if !meta.IsStatusConditionTrue(p.Status.Conditions, fabricv1.ConditionReady) {
				missing++
			}
			up, total := 0, 0
			for _, g := range from.CN.Status.Gateways {
				for _, t := range g.Tunnels {
					if g.Healthy && strings.HasPrefix(t.Peer, id+"/") {
						total++
						if t.Answering {
							up++
						}
					}
				}
			}
			sync, stale := "-", "-"
			if p.Status.LastSyncTime != nil {
				sync = age(now.Sub(p.Status.LastSyncTime.Time)) + " ago"
			}
			if p.Status.StaleSince != nil {
				stale = age(now.Sub(p.Status.StaleSince.Time)) + " ago"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d answering\t%s\t%s\t%s\n", from.Context, to.Context,
				health(p.Status.Conditions, p.Generation, p.Status.ObservedGeneration), up, total, sync, stale, orDash(viewed(p.Status.AliasedRanges())))
		}
	}
	return missing, tw.Flush()
}
