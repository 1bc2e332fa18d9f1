package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weft-net/weft/internal/operator"
	"github.com/weft-net/weft/internal/peering"
)

// pairFlags are what both peer commands take: two contexts and weft's namespace.
type pairFlags struct {
	kubeconfig, from, to string
	opts                 peering.Options
}

func (p *pairFlags) add(c *cobra.Command) {
	f := c.Flags()
	f.StringVar(&p.kubeconfig, "kubeconfig", "", "kubeconfig with both contexts (default: $KUBECONFIG or ~/.kube/config)")
	f.StringVar(&p.from, "from", "", "context of the first cluster")
	f.StringVar(&p.to, "to", "", "context of the second cluster")
	f.StringVar(&p.opts.Namespace, "namespace", "weft-system", "namespace of the peer identities and Secrets (weft's namespace)")
}

// run opens both clusters and calls do on them, with a minute to finish.
func (p *pairFlags) run(c *cobra.Command, do func(context.Context, peering.Cluster, peering.Cluster, peering.Options) error) error {
	a, b, err := twoClusters(p.kubeconfig, p.from, p.to)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(c.Context(), time.Minute)
	defer cancel()
	return do(ctx, a, b, p.opts)
}

func peerCommand() *cobra.Command {
	var p pairFlags
	cmd := &cobra.Command{Use: "peer", Short: "Connect clusters of the clusterset"}
	join := &cobra.Command{
		Use:   "join --from CONTEXT --to CONTEXT",
		Short: "Let two clusters read each other: a least-privilege identity in each, and a ClusterPeer naming it in the other",
		Long: `join creates, in each cluster, a ServiceAccount that may only read what peers need
(ClusterRole ` + peering.ReaderRole + `), issues it a token, and stores a kubeconfig for it as a
Secret in the other cluster together with the ClusterPeer that refers to it. Running it again
renews the tokens. Both contexts must have weft installed with a ClusterNetwork.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := p.run(c, peering.Join); err != nil {
				return err
			}
			fmt.Printf("%s and %s are peers; watch them connect:\n  kubectl --context %s get clusterpeers\n  kubectl --context %s get clusterpeers\n", p.from, p.to, p.from, p.to)
			return nil
		},
	}
	p.add(join)
	f := join.Flags()
	f.DurationVar(&p.opts.TokenDuration, "token-duration", 365*24*time.Hour, "lifetime of the issued tokens (re-run join to renew)")
	f.StringVar(&p.opts.ServerFrom, "server-from", "", "address peers use to reach --from's API server (default: where its kubernetes Service points)")
	f.StringVar(&p.opts.ServerTo, "server-to", "", "address peers use to reach --to's API server (default: where its kubernetes Service points)")
	leave := &cobra.Command{
		Use:   "leave --from CONTEXT --to CONTEXT",
		Short: "Undo join: remove each cluster's ClusterPeer for the other and the other's identity (its tokens stop working)",
		Long: `leave deletes, in each cluster, the ClusterPeer naming the other and its kubeconfig
Secret, and the other's ServiceAccount and bindings, which revokes the tokens join issued;
the shared reader roles go with the last peer. Run it before deleting either ClusterNetwork
(it reads the cluster IDs from them). Running it again does nothing.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := p.run(c, peering.Leave); err != nil {
				return err
			}
			fmt.Printf("%s and %s are no longer peers\n", p.from, p.to)
			return nil
		},
	}
	p.add(leave)
	cmd.AddCommand(join, leave)
	return cmd
}

// twoClusters opens the two contexts a peer command names.
func twoClusters(kubeconfig, from, to string) (peering.Cluster, peering.Cluster, error) {
	if from == "" || to == "" {
		return peering.Cluster{}, peering.Cluster{}, fmt.Errorf("--from and --to name two contexts of the kubeconfig")
	}
	a, err := contextCluster(kubeconfig, from)
	if err != nil {
		return a, peering.Cluster{}, err
	}
	b, err := contextCluster(kubeconfig, to)
	return a, b, err
}

func contextCluster(kubeconfig, context string) (peering.Cluster, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		rules.ExplicitPath = kubeconfig
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: context}).ClientConfig()
	if err != nil {
		return peering.Cluster{}, fmt.Errorf("context %q: %w", context, err)
	}
	c, err := client.New(cfg, client.Options{Scheme: operator.NewScheme()})
	if err != nil {
		return peering.Cluster{}, fmt.Errorf("context %q: %w", context, err)
	}
	return peering.Cluster{Name: context, Config: cfg, Client: c}, nil
}
