// Package peering issues the credentials that let two clusters read each other: in each
// cluster, a ServiceAccount that may only read what peers need, a token for it, and, in the
// other cluster, a Secret with a kubeconfig for it and the ClusterPeer that names it. It is
// what `weftctl peer join` does; it talks to both API servers as an administrator.
package peering

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// ReaderRole is the ClusterRole peers are bound to: read-only, and only what a peer needs.
const ReaderRole = "weft:peer-reader"

// ReaderRules are what a peer may read.
var ReaderRules = []rbacv1.PolicyRule{
	{APIGroups: []string{"fabric.weft.dev"}, Resources: []string{"clusternetworks"}, Verbs: []string{"get", "list", "watch"}},
}

// RecordReaderRole is the Role, in the operator's namespace, that lets peers read the
// records of what this cluster exports (Multi-Cluster Services): the ExportRecords there,
// nothing in other namespaces.
const RecordReaderRole = "weft:peer-record-reader"

// RecordReaderRules are what a peer may read in the operator's namespace.
var RecordReaderRules = []rbacv1.PolicyRule{
	{APIGroups: []string{"fabric.weft.dev"}, Resources: []string{"exportrecords"}, Verbs: []string{"get", "list", "watch"}},
}

// Cluster is one side of a peering.
type Cluster struct {
	Name   string // kubeconfig context, for messages
	Config *rest.Config
	Client client.Client
}

// Options tune a join.
type Options struct {
	// Namespace holds the peer ServiceAccounts and Secrets (the operator's namespace).
	Namespace string
	// TokenDuration is how long issued tokens live; re-running the join renews them.
	TokenDuration time.Duration
	// ServerFrom and ServerTo override the API server addresses peers use to reach each
	// cluster (default: the address the cluster's `kubernetes` Service points at).
	ServerFrom, ServerTo string
}

// Join lets each cluster read the other. It is idempotent: running it again renews the tokens.
func Join(ctx context.Context, a, b Cluster, opts Options) error {
	if opts.Namespace == "" {
		opts.Namespace = "weft-system"
	}
	if opts.TokenDuration == 0 {
		opts.TokenDuration = 365 * 24 * time.Hour
	}
	idA, err := clusterID(ctx, a)
	if err != nil {
		return err
	}
	idB, err := clusterID(ctx, b)
	if err != nil {
		return err
	}
	if idA == idB {
		return fmt.Errorf("%s and %s have the same clusterID %q; a cluster does not peer with itself", a.Name, b.Name, idA)
	}
	if err := grant(ctx, a, b, idA, idB, opts.ServerTo, opts); err != nil {
		return err
	}
	return grant(ctx, b, a, idB, idA, opts.ServerFrom, opts)
}

func clusterID(ctx context.Context, c Cluster) (string, error) {
	cn := &fabricv1.ClusterNetwork{}
	if err := c.Client.Get(ctx, client.ObjectKey{Name: fabricv1.ClusterNetworkName}, cn); err != nil {
		return "", fmt.Errorf("%s: reading ClusterNetwork %q (is weft installed and configured there?): %w", c.Name, fabricv1.ClusterNetworkName, err)
	}
	return cn.Spec.ClusterID, nil
}

// grant lets reader read target: an identity in target, its kubeconfig and a ClusterPeer in
// reader.
func grant(ctx context.Context, reader, target Cluster, readerID, targetID, server string, opts Options) error {
	sa := "peer-" + readerID
	ns := opts.Namespace
	for _, o := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: ns, Labels: labels(readerID)}},
		&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: ReaderRole}, Rules: ReaderRules},
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "weft:peer:" + readerID, Labels: labels(readerID)},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: ReaderRole},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: ns}}},
		&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: RecordReaderRole, Namespace: ns}, Rules: RecordReaderRules},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "weft:peer-records:" + readerID, Namespace: ns, Labels: labels(readerID)},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: RecordReaderRole},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: ns}}},
	} {
		if err := upsert(ctx, target.Client, o); err != nil {
			return fmt.Errorf("%s: %w", target.Name, err)
		}
	}
	cs, err := kubernetes.NewForConfig(target.Config)
	if err != nil {
		return err
	}
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(opts.TokenDuration.Seconds()))}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("%s: issuing a token for %s/%s: %w", target.Name, ns, sa, err)
	}
	if server == "" {
		if server, err = advertisedServer(ctx, cs, target.Config); err != nil {
			return fmt.Errorf("%s: %w", target.Name, err)
		}
	}
	ca, err := clusterCA(ctx, cs, ns, target.Config)
	if err != nil {
		return fmt.Errorf("%s: %w", target.Name, err)
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters[targetID] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	kc.AuthInfos[sa] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	kc.Contexts[targetID] = &clientcmdapi.Context{Cluster: targetID, AuthInfo: sa}
	kc.CurrentContext = targetID
	data, err := clientcmd.Write(*kc)
	if err != nil {
		return err
	}
	secretName := "peer-" + targetID
	for _, o := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: secretName, Namespace: ns, Labels: labels(targetID)},
			Data: map[string][]byte{"kubeconfig": data}},
		&fabricv1.ClusterPeer{ObjectMeta: metav1.ObjectMeta{Name: targetID},
			Spec: fabricv1.ClusterPeerSpec{ClusterID: targetID,
				KubeconfigSecretRef: fabricv1.SecretKeyRef{Namespace: ns, Name: secretName, Key: "kubeconfig"}}},
	} {
		if err := upsert(ctx, reader.Client, o); err != nil {
			return fmt.Errorf("%s: %w", reader.Name, err)
		}
	}
	return nil
}

func labels(peer string) map[string]string {
	return map[string]string{"app.kubernetes.io/managed-by": "weftctl", "fabric.weft.dev/peer": peer}
}

// upsert creates an object or updates what peering owns in it (never a ClusterPeer's
// status), retrying when a controller wrote the object in between.
func upsert(ctx context.Context, c client.Client, desired client.Object) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error { return upsertOnce(ctx, c, desired) })
}

func upsertOnce(ctx context.Context, c client.Client, desired client.Object) error {
	err := c.Create(ctx, desired)
	if err == nil || !apierrors.IsAlreadyExists(err) {
		if err != nil {
			return fmt.Errorf("creating %T %s: %w", desired, desired.GetName(), err)
		}
		return nil
	}
	existing := desired.DeepCopyObject().(client.Object)
	if err := c.Get(ctx, client.ObjectKeyFromObject(desired), existing); err != nil {
		return err
	}
	switch d := desired.(type) {
	case *corev1.Namespace, *corev1.ServiceAccount:
		return nil
	case *rbacv1.ClusterRole:
		e := existing.(*rbacv1.ClusterRole)
		e.Rules = d.Rules
	case *rbacv1.ClusterRoleBinding:
		e := existing.(*rbacv1.ClusterRoleBinding)
		if e.RoleRef != d.RoleRef { // roleRef is immutable: replace the binding
			if err := c.Delete(ctx, e); err != nil {
				return err
			}
			return c.Create(ctx, d)
		}
		e.Subjects = d.Subjects
	case *rbacv1.Role:
		e := existing.(*rbacv1.Role)
		e.Rules = d.Rules
	case *rbacv1.RoleBinding:
		e := existing.(*rbacv1.RoleBinding)
		if e.RoleRef != d.RoleRef {
			if err := c.Delete(ctx, e); err != nil {
				return err
			}
			return c.Create(ctx, d)
		}
		e.Subjects = d.Subjects
	case *corev1.Secret:
		e := existing.(*corev1.Secret)
		e.Data = d.Data
	case *fabricv1.ClusterPeer:
		e := existing.(*fabricv1.ClusterPeer)
		if e.Spec.ClusterID != d.Spec.ClusterID {
			return fmt.Errorf("ClusterPeer %s exists with clusterID %q", e.Name, e.Spec.ClusterID)
		}
		e.Spec.KubeconfigSecretRef = d.Spec.KubeconfigSecretRef
	}
	return c.Update(ctx, existing)
}

// advertisedServer is the address the cluster's own `kubernetes` Service points at: the one
// peers can reach (not the administrator's local forward).
func advertisedServer(ctx context.Context, cs kubernetes.Interface, cfg *rest.Config) (string, error) {
	slices, err := cs.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{
		LabelSelector: discoveryv1.LabelServiceName + "=kubernetes"})
	if err == nil {
		for _, s := range slices.Items {
			for _, ep := range s.Endpoints {
				for _, p := range s.Ports {
					if len(ep.Addresses) > 0 && p.Port != nil {
						return "https://" + net.JoinHostPort(ep.Addresses[0], strconv.Itoa(int(*p.Port))), nil
					}
				}
			}
		}
	}

	eps, err := cs.CoreV1().Endpoints("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err == nil && len(eps.Subsets) > 0 && len(eps.Subsets[0].Addresses) > 0 && len(eps.Subsets[0].Ports) > 0 {
		return "https://" + net.JoinHostPort(eps.Subsets[0].Addresses[0].IP, strconv.Itoa(int(eps.Subsets[0].Ports[0].Port))), nil
	}
	if cfg.Host != "" {
		return cfg.Host, nil
	}
	return "", errors.New("cannot tell the API server's address for peers; pass --server")
}

// clusterCA is the CA that signs the API server's certificate: the cluster's published root
// CA, or the administrator's kubeconfig's.
func clusterCA(ctx context.Context, cs kubernetes.Interface, ns string, cfg *rest.Config) ([]byte, error) {
	if cm, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, "kube-root-ca.crt", metav1.GetOptions{}); err == nil && cm.Data["ca.crt"] != "" {
		return []byte(cm.Data["ca.crt"]), nil
	}
	if len(cfg.CAData) > 0 {
		return cfg.CAData, nil
	}
	return nil, errors.New("no CA certificate: neither kube-root-ca.crt nor the kubeconfig has one")
}

func ptr[T any](v T) *T { return &v }
