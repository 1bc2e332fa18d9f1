package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	coordinationv1 "k8s.io/api/coordination/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

func gatewayCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "gateway", Short: "Act on one gateway of a cluster"}
	cmd.AddCommand(rotateKeyCommand())
	return cmd
}

func rotateKeyCommand() *cobra.Command {
	var kubeconfig, kctx, namespace string
	var lead, timeout time.Duration
	var wait bool
	cmd := &cobra.Command{
		Use:   "rotate-key NODE",
		Short: "Give the gateway on NODE a new WireGuard key pair, with no gap in traffic",
		Long: `rotate-key asks the gateway on NODE for a new key pair. The gateway makes it on the node
(the private key never leaves it) and announces the new public key and the moment it
switches, --lead from now; peer clusters learn both through their ClusterPeers. The peer
gateways take the new key 200 ms before that moment and the gateway switches at it, then
handshakes at once (had both ends switched together, their handshakes would cross and
WireGuard would retry only 5 s later). The lead must cover how long peers take to read
this cluster (the operator's --peer-resync, 10s by default). With --wait (the default) the
command waits for the switch and reports the handshakes made with the new key.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if lead < time.Second {
				return fmt.Errorf("--lead %s: must be at least 1s", lead)
			}
			cl, err := contextCluster(kubeconfig, kctx)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(c.Context(), lead+timeout)
			defer cancel()
			return rotateKey(ctx, os.Stdout, cl.Client, namespace, args[0], time.Now().Add(lead), wait)
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig (default: $KUBECONFIG or ~/.kube/config)")
	f.StringVar(&kctx, "context", "", "context of the cluster (default: the current context)")
	f.StringVar(&namespace, "namespace", "weft-system", "weft's namespace (where gateway Leases live)")
	f.DurationVar(&lead, "lead", 15*time.Second, "how long before the switch the new key is announced")
	f.BoolVar(&wait, "wait", true, "wait for the switch and report the handshakes with the new key")
	f.DurationVar(&timeout, "timeout", time.Minute, "how long to wait beyond --lead")
	return cmd
}

// rotateKey writes the rotation request on the gateway's Lease and, with wait, follows the
// gateway in ClusterNetwork status until it switched and its tunnels handshook anew.
func rotateKey(ctx context.Context, out io.Writer, c client.Client, namespace, node string, at time.Time, wait bool) error {
	cn := &fabricv1.ClusterNetwork{}
	if err := c.Get(ctx, client.ObjectKey{Name: fabricv1.ClusterNetworkName}, cn); err != nil {
		return fmt.Errorf("ClusterNetwork %s: %w", fabricv1.ClusterNetworkName, err)
	}
	before, ok := gatewayOf(cn, node)
	if !ok {
		return fmt.Errorf("no gateway on node %s (ClusterNetwork status lists the gateways; see weftctl status)", node)
	}
	if before.Tunnel != "" && before.Tunnel != fabricv1.TunnelWireGuard {
		return fmt.Errorf("the gateway on %s runs a %s tunnel, which has no keys", node, before.Tunnel)
	}
	lease := &coordinationv1.Lease{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: fabricv1.GatewayLeaseName(node)}, lease); err != nil {
		return fmt.Errorf("the gateway's Lease: %w", err)
	}
	request := at.UTC().Format(time.RFC3339Nano)
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{fabricv1.AnnotationGatewayRotateKey: request}}})
	if err := c.Patch(ctx, lease, client.RawPatch("application/merge-patch+json", patch)); err != nil {
		return fmt.Errorf("asking the gateway for a new key: %w", err)
	}
	fmt.Fprintf(out, "gateway %s: rotation requested, switch at %s (current key %s)\n", node, at.Format(time.RFC3339), before.PublicKey)
	if !wait {
		return nil
	}
	var announced string
	var switchAt time.Time
	for {
		if err := c.Get(ctx, client.ObjectKey{Name: fabricv1.ClusterNetworkName}, cn); err != nil {
			return err
		}
		gw, _ := gatewayOf(cn, node)
		if gw.NextPublicKey != "" && announced == "" {
			announced, switchAt = gw.NextPublicKey, gw.KeySwitchTime.Time
			fmt.Fprintf(out, "gateway %s: next key %s announced, switch at %s\n", node, announced, gw.KeySwitchTime.Time.Format(time.RFC3339))
		}
		if announced != "" && gw.PublicKey == announced && gw.NextPublicKey == "" {
			return reportHandshakes(ctx, out, c, node, announced, switchAt)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("gateway %s did not switch keys in time (is it running? see weftctl status and its log)", node)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// reportHandshakes waits (up to 15 s: gateways report their tunnels every 5 s) until every
// active tunnel of the gateway handshook since the switch, and says how many did. Reported
// handshake times have whole seconds, so one in the second of the switch counts.
func reportHandshakes(ctx context.Context, out io.Writer, c client.Client, node, key string, switchAt time.Time) error {
	fmt.Fprintf(out, "gateway %s: switched to %s\n", node, key)
	switched := switchAt.Truncate(time.Second)
	deadline := time.Now().Add(15 * time.Second)
	for {
		cn := &fabricv1.ClusterNetwork{}
		if err := c.Get(ctx, client.ObjectKey{Name: fabricv1.ClusterNetworkName}, cn); err != nil {
			return err
		}
		gw, _ := gatewayOf(cn, node)
		fresh, active := 0, 0
		for _, t := range gw.Tunnels {
			if t.State != fabricv1.TunnelActive {
				continue
			}
			active++
			if t.LastHandshakeTime != nil && !t.LastHandshakeTime.Time.Before(switched) {
				fresh++
			}
		}
		if (fresh == active && active > 0) || time.Now().After(deadline) {
			fmt.Fprintf(out, "gateway %s: %d of %d active tunnels handshook with the new key\n", node, fresh, active)
			if fresh < active {
				return fmt.Errorf("gateway %s: %d active tunnels have not handshaken since the switch (see weftctl status)", node, active-fresh)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func gatewayOf(cn *fabricv1.ClusterNetwork, node string) (fabricv1.GatewayStatus, bool) {
	for _, g := range cn.Status.Gateways {
		if g.Node == node {
			return g, true
		}
	}
	return fabricv1.GatewayStatus{}, false
}
