package mcs

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
	mcsv1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
)

var t0 = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

func export(cluster string, age time.Duration, ports ...mcsv1.ServicePort) Export {
	return Export{Cluster: cluster, Created: t0.Add(-age), Type: mcsv1.ClusterSetIP, Ports: ports, SessionAffinity: corev1.ServiceAffinityNone}
}

func port(name string, n int32, proto corev1.Protocol) mcsv1.ServicePort {
	return mcsv1.ServicePort{Name: name, Port: n, Protocol: proto}
}

func reasons(m Merged) string {
	var out []string
	for _, c := range m.Conflicts {
		out = append(out, string(c.Reason))
	}
	return strings.Join(out, ",")
}

func TestMerge(t *testing.T) {
	http := port("http", 80, corev1.ProtocolTCP)
	for _, c := range []struct {
		name      string
		exports   []Export
		wantPorts []mcsv1.ServicePort
		wantType  mcsv1.ServiceImportType
		wantAff   corev1.ServiceAffinity
		conflicts string
		clusters  string
		labels    string // the import's labels and annotations, "k=v,...;k=v,..."
		traffic   string // the import's internal traffic policy and traffic distribution, "itp/td"
	}{{
		name:      "one export is the import",
		exports:   []Export{export("c1", time.Hour, http)},
		wantPorts: []mcsv1.ServicePort{http}, wantType: mcsv1.ClusterSetIP, wantAff: corev1.ServiceAffinityNone, clusters: "c1",
	}, {
		name:      "identical exports do not conflict",
		exports:   []Export{export("c2", time.Minute, http), export("c1", time.Hour, http)},
		wantPorts: []mcsv1.ServicePort{http}, wantType: mcsv1.ClusterSetIP, wantAff: corev1.ServiceAffinityNone, clusters: "c1,c2",
	}, {
		name: "an empty protocol is TCP",
		exports: []Export{export("c1", time.Hour, port("http", 80, "")),
			export("c2", time.Minute, http)},
		wantPorts: []mcsv1.ServicePort{http}, wantType: mcsv1.ClusterSetIP, wantAff: corev1.ServiceAffinityNone, clusters: "c1,c2",
	}, {
		name: "different ports: the union, and a conflict",
		exports: []Export{export("c2", time.Minute, http, port("metrics", 9090, corev1.ProtocolTCP)),
			export("c1", time.Hour, http, port("dns", 53, corev1.ProtocolUDP))},
		wantPorts: []mcsv1.ServicePort{http, port("dns", 53, corev1.ProtocolUDP), port("metrics", 9090, corev1.ProtocolTCP)},
		wantType:  mcsv1.ClusterSetIP, wantAff: corev1.ServiceAffinityNone, conflicts: "PortConflict", clusters: "c1,c2",
	}, {
		name: "a port name defined twice: the oldest export's definition",
		exports: []Export{export("young", time.Minute, port("http", 8080, corev1.ProtocolTCP)),
			export("old", time.Hour, http)},
		wantPorts: []mcsv1.ServicePort{http}, wantType: mcsv1.ClusterSetIP, wantAff: corev1.ServiceAffinityNone,
		conflicts: "PortConflict", clusters: "old,young",
	}, {
		name: "type and affinity: the oldest export's",
		exports: []Export{
			{Cluster: "c2", Created: t0, Type: mcsv1.Headless, Ports: []mcsv1.ServicePort{http}, SessionAffinity: corev1.ServiceAffinityClientIP,
				SessionAffinityConfig: &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To[int32](60)}}},
			export("c1", time.Hour, http)},
		wantPorts: []mcsv1.ServicePort{http}, wantType: mcsv1.ClusterSetIP, wantAff: corev1.ServiceAffinityNone,
		conflicts: "TypeConflict,SessionAffinityConflict,SessionAffinityConfigConflict", clusters: "c1,c2",
	}, {
		name: "same age: the lower cluster ID is older",
		exports: []Export{{Cluster: "b", Created: t0, Type: mcsv1.Headless, Ports: []mcsv1.ServicePort{http}},
			{Cluster: "a", Created: t0, Type: mcsv1.ClusterSetIP, Ports: []mcsv1.ServicePort{http}}},
		wantPorts: []mcsv1.ServicePort{http}, wantType: mcsv1.ClusterSetIP, conflicts: "TypeConflict", clusters: "a,b",
	}, {
		name: "exported labels and annotations: the oldest export's, and a conflict each when they differ",
		exports: []Export{
			withMeta(export("young", time.Minute, http), map[string]string{"tier": "web"}, map[string]string{"owner": "b"}),
			withMeta(export("old", time.Hour, http), map[string]string{"tier": "web", "team": "shop"}, map[string]string{"owner": "a"})},
		wantPorts: []mcsv1.ServicePort{http}, wantType: mcsv1.ClusterSetIP, wantAff: corev1.ServiceAffinityNone,
		conflicts: "LabelsConflict,AnnotationsConflict", clusters: "old,young", labels: "team=shop,tier=web;owner=a",
	}, {
		name: "internal traffic policy and traffic distribution: the oldest export's, and a conflict each",
		exports: []Export{
			{Cluster: "young", Created: t0, Type: mcsv1.ClusterSetIP, Ports: []mcsv1.ServicePort{http}, SessionAffinity: corev1.ServiceAffinityNone,
				InternalTrafficPolicy: ptr.To(corev1.ServiceInternalTrafficPolicyLocal), TrafficDistribution: ptr.To("PreferClose")},
			{Cluster: "old", Created: t0.Add(-time.Hour), Type: mcsv1.ClusterSetIP, Ports: []mcsv1.ServicePort{http}, SessionAffinity: corev1.ServiceAffinityNone,
				InternalTrafficPolicy: ptr.To(corev1.ServiceInternalTrafficPolicyCluster)}},
		wantPorts: []mcsv1.ServicePort{http}, wantType: mcsv1.ClusterSetIP, wantAff: corev1.ServiceAffinityNone,
		conflicts: "InternalTrafficPolicyConflict,TrafficDistributionConflict", clusters: "old,young", traffic: "Cluster/",
	}, {
		name: "the same exported labels do not conflict",
		exports: []Export{withMeta(export("c2", time.Minute, http), map[string]string{"tier": "web"}, nil),
			withMeta(export("c1", time.Hour, http), map[string]string{"tier": "web"}, map[string]string{})},
		wantPorts: []mcsv1.ServicePort{http}, wantType: mcsv1.ClusterSetIP, wantAff: corev1.ServiceAffinityNone,
		clusters: "c1,c2", labels: "tier=web;",
	}} {
		t.Run(c.name, func(t *testing.T) {
			m := Merge(c.exports)
			if got := strings.Join(m.Clusters, ","); got != c.clusters {
				t.Errorf("clusters %s, want %s", got, c.clusters)
			}
			if m.Spec.Type != c.wantType || m.Spec.SessionAffinity != c.wantAff {
				t.Errorf("type %s affinity %s, want %s %s", m.Spec.Type, m.Spec.SessionAffinity, c.wantType, c.wantAff)
			}
			if got := portsString(m.Spec.Ports); got != portsString(c.wantPorts) {
				t.Errorf("ports %s, want %s", got, portsString(c.wantPorts))
			}
			if got := kv(m.Labels) + ";" + kv(m.Annotations); c.labels != "" && got != c.labels {
				t.Errorf("labels;annotations %q, want %q", got, c.labels)
			}
			if got := string(ptr.Deref(m.Spec.InternalTrafficPolicy, "")) + "/" + ptr.Deref(m.Spec.TrafficDistribution, ""); got != c.traffic && c.traffic != "" {
				t.Errorf("internal traffic policy/traffic distribution %s, want %s", got, c.traffic)
			}
			if got := reasons(m); got != c.conflicts {
				t.Errorf("conflicts %q, want %q (%+v)", got, c.conflicts, m.Conflicts)
			}
			for _, cf := range m.Conflicts {
				if cf.Message == "" {
					t.Errorf("conflict %s without a message", cf.Reason)
				}
			}
			// Every cluster computes the same from the exports in any order.
			rev := append([]Export(nil), c.exports...)
			for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
				rev[i], rev[j] = rev[j], rev[i]
			}
			if again := Merge(rev); portsString(again.Spec.Ports) != portsString(m.Spec.Ports) || reasons(again) != reasons(m) || again.Spec.Type != m.Spec.Type {
				t.Errorf("the order of the exports changed the result: %+v vs %+v", again, m)
			}
		})
	}
}

func withMeta(e Export, labels, annotations map[string]string) Export {
	e.Labels, e.Annotations = labels, annotations
	return e
}

func kv(m map[string]string) string {
	var out []string
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

func portsString(ps []mcsv1.ServicePort) string {
	var out []string
	for _, p := range ps {
		out = append(out, fmt.Sprintf("%s:%s:%d", p.Name, p.Protocol, p.Port))
	}
	return strings.Join(out, " ")
}

// Under a port conflict a port is served by the clusters that define it as the import does.
func TestServedPorts(t *testing.T) {
	old := export("c1", time.Hour, port("tcp", 42, corev1.ProtocolTCP), port("udp", 42, corev1.ProtocolUDP))
	renumbered := export("c2", time.Minute, port("tcp", 4242, corev1.ProtocolTCP))
	renamed := export("c3", time.Minute, port("tcp2", 4242, corev1.ProtocolTCP), port("", 53, ""))
	m := Merge([]Export{old, renumbered, renamed})
	for _, c := range []struct {
		e    Export
		want string
	}{{old, "tcp>tcp,udp>udp"}, {renumbered, ""}, {renamed, ">tcp-53,tcp2>tcp2"}} {
		var got []string
		for name, derived := range ServedPorts(m, c.e) {
			got = append(got, name+">"+derived)
		}
		sort.Strings(got)
		if strings.Join(got, ",") != c.want {
			t.Errorf("%s serves %q of %s, want %q", c.e.Cluster, got, portsString(m.Spec.Ports), c.want)
		}
	}
}

// A Service with several ports names each: an unnamed port of a multi-port import gets a
// name (unique among the others); a single port keeps its own, even none.
func TestDerivedPortNames(t *testing.T) {
	for _, c := range []struct {
		ports []mcsv1.ServicePort
		want  string
	}{
		{[]mcsv1.ServicePort{port("", 80, "")}, ""},
		{[]mcsv1.ServicePort{port("http", 80, corev1.ProtocolTCP)}, "http"},
		{[]mcsv1.ServicePort{port("", 80, ""), port("", 8080, corev1.ProtocolTCP)}, "tcp-80,tcp-8080"},
		{[]mcsv1.ServicePort{port("", 53, corev1.ProtocolUDP), port("tcp-53", 53, corev1.ProtocolTCP)}, "udp-53,tcp-53"},
		{[]mcsv1.ServicePort{port("tcp-80", 81, corev1.ProtocolTCP), port("", 80, "")}, "tcp-80,tcp-80-2"},
	} {
		if got := strings.Join(DerivedPortNames(c.ports), ","); got != c.want {
			t.Errorf("DerivedPortNames(%s) = %q, want %q", portsString(c.ports), got, c.want)
		}
	}
}
