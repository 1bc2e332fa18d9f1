package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weft-net/weft/internal/version"
)

func versionCommand() *cobra.Command {
	var kubeconfig, kctx, namespace string
	var clientOnly bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print weftctl's version and the operator's in the cluster",
		Long: `version prints weftctl's version and, unless --client, that of the weft operator installed in
the cluster of the current (or --context) context: its Deployment's image and how many of
its replicas are ready.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			fmt.Printf("weftctl: %s\n", version.Version)
			if clientOnly {
				return nil
			}
			cl, err := contextCluster(kubeconfig, kctx)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(c.Context(), 15*time.Second)
			defer cancel()
			return writeOperatorVersion(ctx, os.Stdout, cl.Client, namespace)
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig (default: $KUBECONFIG or ~/.kube/config)")
	f.StringVar(&kctx, "context", "", "context of the cluster (default: the current context)")
	f.StringVar(&namespace, "namespace", "weft-system", "weft's namespace")
	f.BoolVar(&clientOnly, "client", false, "weftctl's version only")
	return cmd
}

// writeOperatorVersion prints the operator Deployment's image (its tag is the version) and
// its ready replicas.
func writeOperatorVersion(ctx context.Context, w io.Writer, c client.Client, namespace string) error {
	d := &appsv1.Deployment{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "weft-operator"}, d); err != nil {
		return fmt.Errorf("the weft operator (Deployment %s/weft-operator): %w", namespace, err)
	}
	image := ""
	for _, ctr := range d.Spec.Template.Spec.Containers {
		if ctr.Name == "operator" || image == "" {
			image = ctr.Image
		}
	}
	v := image
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		v = image[i+1:]
	}
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	fmt.Fprintf(w, "weft-operator: %s (image %s, %d/%d replicas ready)\n", v, image, d.Status.ReadyReplicas, want)
	return nil
}
