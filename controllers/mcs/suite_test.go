package mcs_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	mcsv1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/cmd/weft-operator/manager/managertest"
	mcsctrl "github.com/weft-net/weft/controllers/mcs"
	"github.com/weft-net/weft/internal/mcs"
	"github.com/weft-net/weft/internal/operator"
	"github.com/weft-net/weft/internal/peering"
	"github.com/weft-net/weft/internal/testenv"
)

// Two API servers, "east" and "west", peered with weftctl's join and each running the whole
// operator, as in a real clusterset.
var east, west *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &east, &west) }

// startOperator runs the whole operator against e; several run in this process.
func startOperator(t *testing.T, e *testenv.Env) {
	managertest.Start(t, e, func(cfg *operator.Config) {
		cfg.LeaderElect = false
		cfg.SeveralInProcess = true
		cfg.PeerResync = 2 * time.Second
	})
}

func mustCreate(t *testing.T, e *testenv.Env, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := e.Client.Create(context.Background(), o); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
		}
	}
}

func namespace(name string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
}

func service(ns, name string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{Ports: ports, Selector: map[string]string{"app": name}}}
}

func endpoints(ns, svc, ip string, port int32) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: svc + "-abcde",
		Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(port), Protocol: ptr.To(corev1.ProtocolTCP)}}}
}

func endpointsNamed(ns, svc, ip, portName string, port int32) *discoveryv1.EndpointSlice {
	s := endpoints(ns, svc, ip, port)
	s.Ports[0].Name = ptr.To(portName)
	return s
}

// countingClient is a client of e that reads from the API server and records every write.
func countingClient(t *testing.T, e *testenv.Env) (client.Client, *[]string) {
	t.Helper()
	direct, err := client.NewWithWatch(e.Config, client.Options{Scheme: operator.NewScheme()})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	writes := &[]string{}
	note := func(verb string, o client.Object) {
		mu.Lock()
		defer mu.Unlock()
		*writes = append(*writes, fmt.Sprintf("%s %T %s/%s", verb, o, o.GetNamespace(), o.GetName()))
	}
	return interceptor.NewClient(direct, interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.CreateOption) error {
			note("create", o)
			return c.Create(ctx, o, opts...)
		},
		Update: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.UpdateOption) error {
			note("update", o)
			return c.Update(ctx, o, opts...)
		},
		Patch: func(ctx context.Context, c client.WithWatch, o client.Object, p client.Patch, opts ...client.PatchOption) error {
			note("patch", o)
			return c.Patch(ctx, o, p, opts...)
		},
		Delete: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.DeleteOption) error {
			note("delete", o)
			return c.Delete(ctx, o, opts...)
		},
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, o client.Object, opts ...client.SubResourceUpdateOption) error {
			note("update "+sub, o)
			return c.SubResource(sub).Update(ctx, o, opts...)
		},
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, o client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
			note("patch "+sub, o)
			return c.SubResource(sub).Patch(ctx, o, p, opts...)
		},
	}), writes
}

func export(ns, name string) *mcsv1.ServiceExport {
	return &mcsv1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
}

// exportConds waits until the export's conditions read as want ("Type=Status/Reason" each).
func exportConds(t *testing.T, e *testenv.Env, ns, name string, want ...string) *mcsv1.ServiceExport {
	t.Helper()
	se := &mcsv1.ServiceExport{}
	testenv.Eventually(t, 30*time.Second, func() error {
		if err := e.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, se); err != nil {
			return err
		}
		for _, w := range want {
			typ, rest, _ := strings.Cut(w, "=")
			status, reason, _ := strings.Cut(rest, "/")
			if err := testenv.CheckCondition(se.Status.Conditions, typ, metav1.ConditionStatus(status), reason); err != nil {
				return err
			}
		}
		for _, c := range se.Status.Conditions {
			if c.ObservedGeneration != se.Generation {
				return fmt.Errorf("condition %s observed generation %d, want %d", c.Type, c.ObservedGeneration, se.Generation)
			}
		}
		return nil
	})
	return se
}

// imported waits for the import of ns/name in e to come from the clusters given, and checks
// it against its derived Service and EndpointSlices; it returns the import and the imported
// endpoint addresses by source cluster.
func imported(t *testing.T, e *testenv.Env, ns, name string, clusters ...string) (*mcsv1.ServiceImport, map[string][]string) {
	t.Helper()
	ctx := context.Background()
	si := &mcsv1.ServiceImport{}
	addrs := map[string][]string{}
	testenv.Eventually(t, 30*time.Second, func() error {
		if err := e.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, si); err != nil {
			return err
		}
		var got []string
		for _, c := range si.Status.Clusters {
			got = append(got, c.Cluster)
		}
		if strings.Join(got, ",") != strings.Join(clusters, ",") {
			return fmt.Errorf("import %s/%s from %v, want %v", ns, name, got, clusters)
		}
		svc := &corev1.Service{}
		if err := e.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: mcs.DerivedName(mcs.Key{Namespace: ns, Name: name})}, svc); err != nil {
			return fmt.Errorf("derived service: %w", err)
		}
		if si.Spec.Type == mcsv1.ClusterSetIP && (len(si.Spec.IPs) != 1 || si.Spec.IPs[0] != svc.Spec.ClusterIP) {
			return fmt.Errorf("import IPs %v, want the derived Service's ClusterIP %s", si.Spec.IPs, svc.Spec.ClusterIP)
		}
		slices := &discoveryv1.EndpointSliceList{}
		if err := e.Client.List(ctx, slices, client.InNamespace(ns), client.MatchingLabels{discoveryv1.LabelServiceName: svc.Name,
			mcsv1.LabelServiceName: name}); err != nil {
			return err
		}
		addrs = map[string][]string{}
		for _, s := range slices.Items {
			for _, ep := range s.Endpoints {
				addrs[s.Labels[mcsv1.LabelSourceCluster]] = append(addrs[s.Labels[mcsv1.LabelSourceCluster]], ep.Addresses...)
			}
		}
		if len(addrs) != len(clusters) {
			return fmt.Errorf("imported EndpointSlices from %v, want %v", addrs, clusters)
		}
		return nil
	})
	return si, addrs
}

func ports(si *mcsv1.ServiceImport) string {
	var out []string
	for _, p := range si.Spec.Ports {
		out = append(out, fmt.Sprintf("%s/%d/%s", p.Name, p.Port, p.Protocol))
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

func TestMultiClusterServices(t *testing.T) {
	ctx := context.Background()
	mustCreate(t, east, &fabricv1.ClusterNetwork{ObjectMeta: metav1.ObjectMeta{Name: "default"},
		Spec: fabricv1.ClusterNetworkSpec{ClusterID: "east", PodCIDRs: []fabricv1.CIDR{"10.244.0.0/16"}, ServiceCIDRs: []fabricv1.CIDR{"10.96.0.0/16"}}})
	mustCreate(t, west, &fabricv1.ClusterNetwork{ObjectMeta: metav1.ObjectMeta{Name: "default"},
		Spec: fabricv1.ClusterNetworkSpec{ClusterID: "west", PodCIDRs: []fabricv1.CIDR{"10.245.0.0/16"}, ServiceCIDRs: []fabricv1.CIDR{"10.97.0.0/16"}}})
	if err := peering.Join(ctx, peering.Cluster{Name: "east", Config: east.Config, Client: east.Client},
		peering.Cluster{Name: "west", Config: west.Config, Client: west.Client},
		peering.Options{ServerFrom: east.Config.Host, ServerTo: west.Config.Host}); err != nil {
		t.Fatal(err)
	}
	startOperator(t, east)
	startOperator(t, west)
	for _, e := range []*testenv.Env{east, west} {
		mustCreate(t, e, namespace("shop"))
	}
	http := corev1.ServicePort{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}

	t.Run("an export in west is imported in both clusters, with a VIP and west's endpoints", func(t *testing.T) {
		mustCreate(t, west, service("shop", "web", http), endpoints("shop", "web", "10.245.1.5", 8080), export("shop", "web"))
		exportConds(t, west, "shop", "web", "Valid=True/Valid", "Ready=True/Exported", "Conflict=False/NoConflicts")
		for _, e := range []*testenv.Env{east, west} {
			si, addrs := imported(t, e, "shop", "web", "west")
			if si.Spec.Type != mcsv1.ClusterSetIP || ports(si) != "http/80/TCP" {
				t.Errorf("import spec %+v", si.Spec)
			}
			if strings.Join(addrs["west"], ",") != "10.245.1.5" {
				t.Errorf("imported endpoints %v, want west's 10.245.1.5", addrs)
			}
		}
	})

	t.Run("the operator counts exports and imports and observes the export-to-import lag", func(t *testing.T) {
		// The process's registry holds the operator started last (west's). An export made
		// now, while it runs, is imported here: its lag is observed (the first export above
		// was made before the operators read anything, and is not).
		mustCreate(t, west, service("shop", "lagged", http), endpoints("shop", "lagged", "10.245.1.6", 8080), export("shop", "lagged"))
		imported(t, west, "shop", "lagged", "west")
		testenv.Eventually(t, 10*time.Second, func() error {
			got := gathered(t)
			if got[`weft_mcs_export_to_import_seconds_count{source_cluster="west"}`] < 1 || got[`weft_mcs_export_to_import_seconds_sum{source_cluster="west"}`] > 30 {
				return fmt.Errorf("export-to-import lag not observed for west's export: %v", got)
			}
			for _, m := range []string{`weft_mcs_exports`, `weft_mcs_imports`} {
				if got[m] < 2 {
					return fmt.Errorf("%s = %v, want at least 2: %v", m, got[m], got)
				}
			}
			if got[`weft_mcs_cluster_exports{source_cluster="west"}`] < 2 {
				return fmt.Errorf("west's exports counted %v, want 2: %v", got[`weft_mcs_cluster_exports{source_cluster="west"}`], got)
			}
			if _, ok := got[`weft_mcs_cluster_exports{source_cluster="east"}`]; !ok {
				return fmt.Errorf("no count of the peer east's exports: %v", got)
			}
			return nil
		})
		if err := west.Client.Delete(context.Background(), export("shop", "lagged")); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("a peer's endpoints outside the pod ranges it may claim are not imported", func(t *testing.T) {
		eps := endpoints("shop", "stray", "10.245.1.40", 8080)
		eps.Endpoints = append(eps.Endpoints, discoveryv1.Endpoint{Addresses: []string{"192.168.77.7"},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
		mustCreate(t, west, service("shop", "stray", http), eps, export("shop", "stray"))
		si, addrs := imported(t, east, "shop", "stray", "west")
		if strings.Join(addrs["west"], ",") != "10.245.1.40" {
			t.Errorf("east imported west's endpoints %v, want only 10.245.1.40 (192.168.77.7 is outside west's pod range)", addrs["west"])
		}
		testenv.Eventually(t, 30*time.Second, func() error {
			events := &corev1.EventList{}
			if err := east.Client.List(ctx, events, client.InNamespace("shop")); err != nil {
				return err
			}
			for _, e := range events.Items {
				if e.InvolvedObject.UID == si.UID && e.Reason == mcsctrl.ReasonEndpointsOutsidePeerRanges &&
					strings.Contains(e.Message, "192.168.77.7") {
					return nil
				}
			}
			return fmt.Errorf("no %s event on east's ServiceImport shop/stray", mcsctrl.ReasonEndpointsOutsidePeerRanges)
		})
	})

	t.Run("a derived Service made again keeps its import's VIP", func(t *testing.T) {
		si, _ := imported(t, east, "shop", "web", "west")
		vip := strings.Join(si.Spec.IPs, ",")
		key := client.ObjectKey{Namespace: "shop", Name: mcs.DerivedName(mcs.Key{Namespace: "shop", Name: "web"})}
		old := &corev1.Service{}
		if err := east.Client.Get(ctx, key, old); err != nil {
			t.Fatal(err)
		}
		if err := east.Client.Delete(ctx, old); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 30*time.Second, func() error {
			svc := &corev1.Service{}
			if err := east.Client.Get(ctx, key, svc); err != nil {
				return err
			}
			if svc.UID == old.UID {
				return errors.New("the derived Service is not made again yet")
			}
			if got := strings.Join(svc.Spec.ClusterIPs, ","); got != vip {
				return fmt.Errorf("the derived Service came back with %s, want the import's VIP %s", got, vip)
			}
			now := &mcsv1.ServiceImport{}
			if err := east.Client.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "web"}, now); err != nil {
				return err
			}
			if got := strings.Join(now.Spec.IPs, ","); got != vip {
				return fmt.Errorf("the import's VIP moved from %s to %s", vip, got)
			}
			return nil
		})
	})

	t.Run("a second, younger export that differs conflicts; ports are the union, the oldest wins the rest", func(t *testing.T) {
		time.Sleep(1100 * time.Millisecond) // creation times have a second's resolution
		svc := service("shop", "web", http, corev1.ServicePort{Name: "metrics", Port: 9090, Protocol: corev1.ProtocolTCP})
		svc.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		mustCreate(t, east, svc, endpoints("shop", "web", "10.244.2.7", 8080), export("shop", "web"))
		for _, e := range []*testenv.Env{east, west} {
			se := exportConds(t, e, "shop", "web", "Valid=True/Valid", "Ready=True/Exported", "Conflict=True/PortConflict")
			msg := testenv.Describe(se.Status.Conditions)
			if !strings.Contains(msg, "SessionAffinityConflict") {
				t.Errorf("conflict does not name the session affinity: %s", msg)
			}
			si, addrs := imported(t, e, "shop", "web", "east", "west")
			if ports(si) != "http/80/TCP metrics/9090/TCP" || si.Spec.SessionAffinity != corev1.ServiceAffinityNone {
				t.Errorf("import spec %+v: want the union of ports and west's (the oldest) session affinity", si.Spec)
			}
			if strings.Join(addrs["east"], ",") != "10.244.2.7" || strings.Join(addrs["west"], ",") != "10.245.1.5" {
				t.Errorf("imported endpoints %v", addrs)
			}
		}
	})

	t.Run("bad exports: no Service, an ExternalName Service", func(t *testing.T) {
		mustCreate(t, west, export("shop", "missing"))
		exportConds(t, west, "shop", "missing", "Valid=False/NoService", "Ready=False/NoService")
		ext := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "ext"},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "example.com"}}
		mustCreate(t, west, ext, export("shop", "ext"))
		exportConds(t, west, "shop", "ext", "Valid=False/InvalidServiceType", "Ready=False/InvalidServiceType")
		for _, name := range []string{"missing", "ext"} {
			err := east.Client.Get(ctx, client.ObjectKey{Namespace: "shop", Name: name}, &mcsv1.ServiceImport{})
			if !apierrors.IsNotFound(err) {
				t.Errorf("an invalid export was imported in east: %v", err)
			}
		}
		// The Service appears: the export becomes valid.
		mustCreate(t, west, service("shop", "missing", http), endpoints("shop", "missing", "10.245.1.9", 8080))
		exportConds(t, west, "shop", "missing", "Valid=True/Valid", "Ready=True/Exported")
		imported(t, east, "shop", "missing", "west")
	})

	t.Run("imports appear only in namespaces that exist, and follow one created later", func(t *testing.T) {
		mustCreate(t, west, namespace("later"), service("later", "api", http), endpoints("later", "api", "10.245.1.10", 8080), export("later", "api"))
		exportConds(t, west, "later", "api", "Ready=True/Exported")
		time.Sleep(2 * time.Second)
		if err := east.Client.Get(ctx, client.ObjectKey{Namespace: "later", Name: "api"}, &mcsv1.ServiceImport{}); !apierrors.IsNotFound(err) {
			t.Fatalf("import in a namespace east does not have: %v", err)
		}
		mustCreate(t, east, namespace("later"))
		imported(t, east, "later", "api", "west")
	})

	t.Run("exported labels and annotations go onto the import; differing ones conflict", func(t *testing.T) {
		se := export("shop", "labelled")
		se.Spec.ExportedLabels = map[string]string{"tier": "web", "fabric.weft.dev/anything": "x"} // weft's own keys are not copied
		se.Spec.ExportedAnnotations = map[string]string{"example.com/owner": "shop-team"}
		mustCreate(t, west, service("shop", "labelled", http), endpoints("shop", "labelled", "10.245.1.11", 8080), se)
		testenv.Eventually(t, 30*time.Second, func() error {
			si := &mcsv1.ServiceImport{}
			if err := east.Client.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "labelled"}, si); err != nil {
				return err
			}
			if si.Labels["tier"] != "web" || si.Annotations["example.com/owner"] != "shop-team" || si.Labels["app.kubernetes.io/managed-by"] != "fabric.weft.dev" ||
				si.Labels["fabric.weft.dev/anything"] != "" {
				return fmt.Errorf("import labels %v annotations %v", si.Labels, si.Annotations)
			}
			return nil
		})
		time.Sleep(1100 * time.Millisecond) // creation times have a second's resolution
		other := export("shop", "labelled")
		other.Spec.ExportedLabels = map[string]string{"tier": "api"}
		other.Spec.ExportedAnnotations = se.Spec.ExportedAnnotations
		mustCreate(t, east, service("shop", "labelled", http), endpoints("shop", "labelled", "10.244.1.11", 8080), other)
		for _, e := range []*testenv.Env{east, west} {
			exportConds(t, e, "shop", "labelled", "Valid=True/Valid", "Conflict=True/LabelsConflict")
			if si, _ := imported(t, e, "shop", "labelled", "east", "west"); si.Labels["tier"] != "web" {
				t.Errorf("import labels %v: want the oldest export's (west: tier=web)", si.Labels)
			}
		}
	})

	t.Run("a headless export is imported as Headless, with the exported Service's IP families and no VIP", func(t *testing.T) {
		hl := service("shop", "hl", http)
		hl.Spec.ClusterIP = corev1.ClusterIPNone
		mustCreate(t, west, hl, endpoints("shop", "hl", "10.245.1.12", 8080), export("shop", "hl"))
		si, _ := imported(t, east, "shop", "hl", "west")
		// (The derived selector-less headless Service is given both families even here.)
		if si.Spec.Type != mcsv1.Headless || len(si.Spec.IPs) != 0 || fmt.Sprint(si.Spec.IPFamilies) != "[IPv4]" {
			t.Errorf("headless import spec: type %s, IPs %v, IP families %v", si.Spec.Type, si.Spec.IPs, si.Spec.IPFamilies)
		}
	})

	t.Run("unnamed ports of two clusters make a valid union (named as a multi-port Service must be)", func(t *testing.T) {
		// What `kubectl expose` makes: one unnamed port, a different one in each cluster.
		mustCreate(t, west, service("shop", "hello", corev1.ServicePort{Port: 80, Protocol: corev1.ProtocolTCP}),
			endpointsNamed("shop", "hello", "10.245.1.20", "", 8080), export("shop", "hello"))
		imported(t, east, "shop", "hello", "west")
		time.Sleep(1100 * time.Millisecond) // creation times have a second's resolution
		mustCreate(t, east, service("shop", "hello", corev1.ServicePort{Port: 8000, Protocol: corev1.ProtocolTCP}),
			endpointsNamed("shop", "hello", "10.244.1.20", "", 8000), export("shop", "hello"))
		for _, e := range []*testenv.Env{east, west} {
			si, _ := imported(t, e, "shop", "hello", "east", "west")
			if ports(si) != "/80/TCP /8000/TCP" {
				t.Errorf("import ports %q, want the union of both clusters' unnamed ports", ports(si))
			}
			if err := testenv.CheckCondition(si.Status.Conditions, "Ready", metav1.ConditionTrue, "Ready"); err != nil {
				t.Errorf("import: %v", err)
			}
			svc := &corev1.Service{}
			if err := e.Client.Get(ctx, client.ObjectKey{Namespace: "shop", Name: mcs.DerivedName(mcs.Key{Namespace: "shop", Name: "hello"})}, svc); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range svc.Spec.Ports {
				got = append(got, fmt.Sprintf("%s/%d", p.Name, p.Port))
			}
			if strings.Join(got, " ") != "tcp-80/80 tcp-8000/8000" {
				t.Errorf("derived Service ports %v, want tcp-80/80 tcp-8000/8000", got)
			}
			// Each cluster's endpoints serve its own port, under the derived Service's name.
			want := map[string]string{"west": "tcp-80/8080", "east": "tcp-8000/8000"}
			testenv.Eventually(t, 30*time.Second, func() error {
				slices := &discoveryv1.EndpointSliceList{}
				if err := e.Client.List(ctx, slices, client.InNamespace("shop"), client.MatchingLabels{discoveryv1.LabelServiceName: svc.Name}); err != nil {
					return err
				}
				for _, sl := range slices.Items {
					cluster := sl.Labels[mcsv1.LabelSourceCluster]
					if len(sl.Ports) != 1 || fmt.Sprintf("%s/%d", ptr.Deref(sl.Ports[0].Name, ""), ptr.Deref(sl.Ports[0].Port, 0)) != want[cluster] {
						return fmt.Errorf("%s's imported slice has ports %+v, want %s", cluster, sl.Ports, want[cluster])
					}
				}
				if len(slices.Items) != 2 {
					return fmt.Errorf("%d imported slices, want 2", len(slices.Items))
				}
				return nil
			})
		}
	})

	t.Run("an import whose Service cannot be written says so, and recovers", func(t *testing.T) {
		// An admission policy of the cluster's (as Kyverno or Gatekeeper would) refuses
		// Services in the namespace.
		fail := admissionv1.Fail
		policy := &admissionv1.ValidatingAdmissionPolicy{ObjectMeta: metav1.ObjectMeta{Name: "no-services-in-quota"},
			Spec: admissionv1.ValidatingAdmissionPolicySpec{FailurePolicy: &fail,
				MatchConstraints: &admissionv1.MatchResources{ResourceRules: []admissionv1.NamedRuleWithOperations{{
					RuleWithOperations: admissionv1.RuleWithOperations{Operations: []admissionv1.OperationType{admissionv1.Create},
						Rule: admissionv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"services"}}}}}},
				Validations: []admissionv1.Validation{{Expression: "object.metadata.namespace != 'quota'", Message: "no Services in namespace quota"}}}}
		binding := &admissionv1.ValidatingAdmissionPolicyBinding{ObjectMeta: metav1.ObjectMeta{Name: "no-services-in-quota"},
			Spec: admissionv1.ValidatingAdmissionPolicyBindingSpec{PolicyName: policy.Name,
				ValidationActions: []admissionv1.ValidationAction{admissionv1.Deny}}}
		mustCreate(t, east, namespace("quota"), policy, binding)
		// The policy is in force once it refuses a Service of our own.
		testenv.Eventually(t, 30*time.Second, func() error {
			err := east.Client.Create(ctx, service("quota", "probe", http))
			if err == nil {
				_ = east.Client.Delete(ctx, service("quota", "probe", http))
				return errors.New("the admission policy is not in force yet")
			}
			return nil
		})
		mustCreate(t, west, namespace("quota"), service("quota", "api", http), endpoints("quota", "api", "10.245.1.30", 8080), export("quota", "api"))
		testenv.Eventually(t, 30*time.Second, func() error {
			si := &mcsv1.ServiceImport{}
			if err := east.Client.Get(ctx, client.ObjectKey{Namespace: "quota", Name: "api"}, si); err != nil {
				return err
			}
			if err := testenv.CheckCondition(si.Status.Conditions, "Ready", metav1.ConditionFalse, mcsctrl.ReasonDerivedObjectsFailed); err != nil {
				return err
			}
			if msg := testenv.Describe(si.Status.Conditions); !strings.Contains(msg, "no Services in namespace quota") {
				return fmt.Errorf("the condition does not say why: %s", msg)
			}
			return nil
		})
		if err := east.Client.Delete(ctx, binding); err != nil {
			t.Fatal(err)
		}
		si, _ := imported(t, east, "quota", "api", "west")
		testenv.Eventually(t, 30*time.Second, func() error {
			if err := east.Client.Get(ctx, client.ObjectKey{Namespace: "quota", Name: "api"}, si); err != nil {
				return err
			}
			return testenv.CheckCondition(si.Status.Conditions, "Ready", metav1.ConditionTrue, "Ready")
		})
	})

	t.Run("reconciling an unchanged import or export writes nothing", func(t *testing.T) {
		for _, e := range []*testenv.Env{east, west} {
			imported(t, e, "shop", "hello", "east", "west")
		}
		for _, e := range []*testenv.Env{east, west} {
			c, writes := countingClient(t, e)
			view := &mcsctrl.View{Client: c, Namespace: "weft-system", Scheme: c.Scheme()}
			if err := view.SyncPeers(ctx); err != nil {
				t.Fatal(err)
			}
			imports := &mcsctrl.ImportReconciler{Client: c, View: view}
			exports := &mcsctrl.ExportReconciler{Client: c, View: view}
			req := ctrl.Request{NamespacedName: types.NamespacedName{Namespace: "shop", Name: "hello"}}
			for range 3 {
				if _, err := imports.Reconcile(ctx, req); err != nil {
					t.Fatal(err)
				}
				if _, err := exports.Reconcile(ctx, req); err != nil {
					t.Fatal(err)
				}
			}
			if len(*writes) != 0 {
				t.Errorf("reconciling settled objects wrote: %s", strings.Join(*writes, "; "))
			}
		}
	})

	t.Run("a new leader that has not read a peer's records yet removes none of its imports", func(t *testing.T) {
		mustCreate(t, west, service("shop", "west-only", http), endpoints("shop", "west-only", "10.245.1.9", 8080), export("shop", "west-only"))
		before, _ := imported(t, east, "shop", "west-only", "west")
		// What a new leader's import reconciler has before its peer sync made west's informer.
		c, writes := countingClient(t, east)
		view := &mcsctrl.View{Client: c, Namespace: "weft-system", Scheme: c.Scheme()}
		imports := &mcsctrl.ImportReconciler{Client: c, View: view}
		req := ctrl.Request{NamespacedName: types.NamespacedName{Namespace: "shop", Name: "west-only"}}
		res, err := imports.Reconcile(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if len(*writes) != 0 || res.RequeueAfter == 0 {
			t.Errorf("west's records unread: the reconcile wrote %q (requeue %v); want nothing written, and a requeue", *writes, res.RequeueAfter)
		}
		// Once they are read, the import is judged as ever: unchanged, nothing to write.
		if err := view.SyncPeers(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := imports.Reconcile(ctx, req); err != nil {
			t.Fatal(err)
		}
		after, _ := imported(t, east, "shop", "west-only", "west")
		if len(*writes) != 0 || !slices.Equal(after.Spec.IPs, before.Spec.IPs) {
			t.Errorf("after the sync: wrote %q, VIP %v → %v; want nothing written and the same VIP", *writes, before.Spec.IPs, after.Spec.IPs)
		}
	})

	t.Run("unexporting removes the cluster, then the import", func(t *testing.T) {
		if err := west.Client.Delete(ctx, export("shop", "web")); err != nil {
			t.Fatal(err)
		}
		for _, e := range []*testenv.Env{east, west} {
			imported(t, e, "shop", "web", "east")
		}
		exportConds(t, east, "shop", "web", "Conflict=False/NoConflicts")
		if err := east.Client.Delete(ctx, export("shop", "web")); err != nil {
			t.Fatal(err)
		}
		for _, e := range []*testenv.Env{east, west} {
			testenv.Eventually(t, 30*time.Second, func() error {
				if err := e.Client.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "web"}, &mcsv1.ServiceImport{}); !apierrors.IsNotFound(err) {
					return fmt.Errorf("import still there: %w", err)
				}
				derived := mcs.DerivedName(mcs.Key{Namespace: "shop", Name: "web"})
				if err := e.Client.Get(ctx, client.ObjectKey{Namespace: "shop", Name: derived}, &corev1.Service{}); !apierrors.IsNotFound(err) {
					return fmt.Errorf("derived Service still there: %w", err)
				}
				slices := &discoveryv1.EndpointSliceList{}
				if err := e.Client.List(ctx, slices, client.InNamespace("shop"), client.MatchingLabels{discoveryv1.LabelServiceName: derived}); err != nil || len(slices.Items) != 0 {
					return fmt.Errorf("imported slices left: %d (%w)", len(slices.Items), err)
				}
				return nil
			})
		}
	})
}

// gathered reads the weft_mcs_ series of controller-runtime's registry as name{labels} →
// value (a histogram as its _count and _sum).
func gathered(t *testing.T) map[string]float64 {
	t.Helper()
	mfs, err := crmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "weft_mcs_") {
			continue
		}
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			key := mf.GetName()
			if len(ls) > 0 {
				key += "{" + strings.Join(ls, ",") + "}"
			}
			switch {
			case m.GetHistogram() != nil:
				out[strings.Replace(key, "{", "_count{", 1)] = float64(m.GetHistogram().GetSampleCount())
				out[strings.Replace(key, "{", "_sum{", 1)] = m.GetHistogram().GetSampleSum()
			case m.GetGauge() != nil:
				out[key] = m.GetGauge().GetValue()
			}
		}
	}
	return out
}
