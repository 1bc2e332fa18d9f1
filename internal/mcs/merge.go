// Package mcs holds the pure logic of Multi-Cluster Services (KEP-1645) in weft: how the
// exports of one Service by several clusters merge into the ServiceImport every cluster
// sees, which properties conflict, and the names of the objects weft derives from them.
// It reads and writes nothing; the controllers do.
package mcs

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
	mcsv1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
)

// Export is one cluster's export of a Service: what every cluster of the clusterset knows
// of it.
type Export struct {
	Cluster string    // the exporting cluster's ID
	Created time.Time // when its ServiceExport was created: the oldest export wins conflicts

	Type                  mcsv1.ServiceImportType
	Ports                 []mcsv1.ServicePort
	SessionAffinity       corev1.ServiceAffinity
	SessionAffinityConfig *corev1.SessionAffinityConfig
	InternalTrafficPolicy *corev1.ServiceInternalTrafficPolicy
	TrafficDistribution   *string
	IPFamilies            []corev1.IPFamily // the exported Service's

	// Labels and Annotations are the ServiceExport's exportedLabels and
	// exportedAnnotations: the ServiceImport carries them.
	Labels, Annotations map[string]string
}

// Conflict is a property on which the exports disagree. Every export of the Service
// reports the same conflicts (each cluster computes them from the same exports).
type Conflict struct {
	Reason  mcsv1.ServiceExportConditionReason
	Message string
}

// Merged is the clusterset's view of a Service exported by one or more clusters.
type Merged struct {
	// Spec of the ServiceImport, but for its IPs (the derived Service's, per cluster).
	Spec mcsv1.ServiceImportSpec
	// Labels and Annotations for the ServiceImport: the oldest export's.
	Labels, Annotations map[string]string
	// Clusters exporting the Service, sorted.
	Clusters []string
	// Conflicts found, in a fixed order (type, ports, session affinity, its config, internal
	// traffic policy, traffic distribution, labels, annotations).
	Conflicts []Conflict
}

// Older orders exports: by creation, then by cluster ID (a total order every cluster
// agrees on).
func Older(a, b Export) bool {
	if !a.Created.Equal(b.Created) {
		return a.Created.Before(b.Created)
	}
	return a.Cluster < b.Cluster
}

// Merge combines the exports of one Service. The oldest export decides the type, session
// affinity, internal traffic policy, traffic distribution, IP families and exported labels
// and annotations; the ports are the union, the oldest export deciding a port name that two
// exports define differently. exports must not be empty.
func Merge(exports []Export) Merged {
	ex := slices.Clone(exports)
	sort.Slice(ex, func(i, j int) bool { return Older(ex[i], ex[j]) })
	oldest := ex[0]
	m := Merged{Spec: mcsv1.ServiceImportSpec{Type: oldest.Type, SessionAffinity: oldest.SessionAffinity,
		SessionAffinityConfig: oldest.SessionAffinityConfig.DeepCopy(),
		InternalTrafficPolicy: oldest.InternalTrafficPolicy, TrafficDistribution: oldest.TrafficDistribution,
		IPFamilies: slices.Clone(oldest.IPFamilies)},
		Labels: maps.Clone(oldest.Labels), Annotations: maps.Clone(oldest.Annotations)}
	for _, e := range ex {
		m.Clusters = append(m.Clusters, e.Cluster)
	}
	sort.Strings(m.Clusters)

	var typeOff, portsOff, affinityOff, configOff, itpOff, distOff, labelsOff, annotationsOff []string
	for _, e := range ex[1:] {
		if e.Type != oldest.Type {
			typeOff = append(typeOff, fmt.Sprintf("%s (%s)", e.Cluster, e.Type))
		}
		if !samePorts(e.Ports, oldest.Ports) {
			portsOff = append(portsOff, e.Cluster)
		}
		if e.SessionAffinity != oldest.SessionAffinity {
			affinityOff = append(affinityOff, fmt.Sprintf("%s (%s)", e.Cluster, e.SessionAffinity))
		}
		if !reflect.DeepEqual(e.SessionAffinityConfig, oldest.SessionAffinityConfig) {
			configOff = append(configOff, e.Cluster)
		}
		if ptr.Deref(e.InternalTrafficPolicy, "") != ptr.Deref(oldest.InternalTrafficPolicy, "") {
			itpOff = append(itpOff, fmt.Sprintf("%s (%s)", e.Cluster, ptr.Deref(e.InternalTrafficPolicy, "unset")))
		}
		if ptr.Deref(e.TrafficDistribution, "") != ptr.Deref(oldest.TrafficDistribution, "") {
			distOff = append(distOff, fmt.Sprintf("%s (%s)", e.Cluster, ptr.Deref(e.TrafficDistribution, "unset")))
		}
		if !maps.Equal(e.Labels, oldest.Labels) {
			labelsOff = append(labelsOff, e.Cluster)
		}
		if !maps.Equal(e.Annotations, oldest.Annotations) {
			annotationsOff = append(annotationsOff, e.Cluster)
		}
	}
	m.Spec.Ports = unionPorts(ex)
	add := func(off []string, reason mcsv1.ServiceExportConditionReason, format string, args ...any) {
		if len(off) > 0 {
			m.Conflicts = append(m.Conflicts, Conflict{Reason: reason,
				Message: fmt.Sprintf(format, args...) + ": " + strings.Join(off, ", ")})
		}
	}
	add(typeOff, mcsv1.ServiceExportReasonTypeConflict, "the oldest export (cluster %s) makes the service %s; other types", oldest.Cluster, oldest.Type)
	add(portsOff, mcsv1.ServiceExportReasonPortConflict, "ports differ from the oldest export's (cluster %s); the import has the union, the oldest deciding ports defined twice; differing", oldest.Cluster)
	add(affinityOff, mcsv1.ServiceExportReasonSessionAffinityConflict, "the oldest export (cluster %s) sets session affinity %s; others", oldest.Cluster, oldest.SessionAffinity)
	add(configOff, mcsv1.ServiceExportReasonSessionAffinityConfigConflict, "session affinity config differs from the oldest export's (cluster %s)", oldest.Cluster)
	add(itpOff, mcsv1.ServiceExportReasonInternalTrafficPolicyConflict, "the oldest export (cluster %s) sets internal traffic policy %s; others", oldest.Cluster, ptr.Deref(oldest.InternalTrafficPolicy, "unset"))
	add(distOff, mcsv1.ServiceExportReasonTrafficDistributionConflict, "the oldest export (cluster %s) sets traffic distribution %s; others", oldest.Cluster, ptr.Deref(oldest.TrafficDistribution, "unset"))
	add(labelsOff, mcsv1.ServiceExportReasonLabelsConflict, "exported labels differ from the oldest export's (cluster %s), which the import carries", oldest.Cluster)
	add(annotationsOff, mcsv1.ServiceExportReasonAnnotationsConflict, "exported annotations differ from the oldest export's (cluster %s), which the import carries", oldest.Cluster)
	return m
}

// portKey identifies a port of a ServiceImport: its name (unique within a Service), or for
// an unnamed port its number and protocol.
func portKey(p mcsv1.ServicePort) string {
	if p.Name != "" {
		return "name:" + p.Name
	}
	return fmt.Sprintf("%d/%s", p.Port, protocol(p))
}

func protocol(p mcsv1.ServicePort) corev1.Protocol {
	if p.Protocol == "" {
		return corev1.ProtocolTCP
	}
	return p.Protocol
}

func samePorts(a, b []mcsv1.ServicePort) bool {
	key := func(ps []mcsv1.ServicePort) []string {
		out := make([]string, 0, len(ps))
		for _, p := range ps {
			app := ""
			if p.AppProtocol != nil {
				app = *p.AppProtocol
			}
			out = append(out, fmt.Sprintf("%s|%d|%s|%s", p.Name, p.Port, protocol(p), app))
		}
		sort.Strings(out)
		return out
	}
	return slices.Equal(key(a), key(b))
}

// unionPorts takes the ports of every export, oldest first; a port already defined (by
// name, or number and protocol) keeps its first definition. A port number and protocol
// taken already is not added again under another name.
func unionPorts(sorted []Export) []mcsv1.ServicePort {
	var out []mcsv1.ServicePort
	seen := map[string]bool{}
	for _, e := range sorted {
		for _, p := range e.Ports {
			num := fmt.Sprintf("%d/%s", p.Port, protocol(p))
			if seen[portKey(p)] || seen[num] {
				continue
			}
			seen[portKey(p)], seen[num] = true, true
			p.Protocol = protocol(p)
			out = append(out, p)
		}
	}
	return out
}

// DerivedPortNames names the import's ports for its derived Service, in order. A Service
// with more than one port must name every one, so in a multi-port import an unnamed port
// (what `kubectl expose` makes, exported by one cluster beside another cluster's other
// port) is named after its protocol and number ("tcp-80"), made unique against the names
// the ports already have. A single port keeps its name, even none.
func DerivedPortNames(ports []mcsv1.ServicePort) []string {
	names := make([]string, len(ports))
	taken := map[string]bool{}
	for i, p := range ports {
		names[i] = p.Name
		taken[p.Name] = p.Name != ""
	}
	if len(ports) < 2 {
		return names
	}
	for i, p := range ports {
		if p.Name != "" {
			continue
		}
		base := strings.ToLower(fmt.Sprintf("%s-%d", protocol(p), p.Port))
		name := base
		for n := 2; taken[name]; n++ {
			name = fmt.Sprintf("%s-%d", base, n)
		}
		names[i], taken[name] = name, true
	}
	return names
}

// ServedPorts maps the ports of an export's endpoints (by their name in the exporting
// cluster) that the import serves to the derived Service's names for them (see
// DerivedPortNames). A port is served when the export defines it exactly as the import does
// (name, number, protocol). A cluster's endpoints get the traffic of these ports only, so
// under a port conflict a port reaches just the clusters that agree with the import
// (KEP-1645 leaves this open; the mcs-api conformance suite's strict port conflict specs
// expect it).
func ServedPorts(m Merged, e Export) map[string]string {
	served := map[string]string{}
	derived := DerivedPortNames(m.Spec.Ports)
	for i, p := range m.Spec.Ports {
		for _, q := range e.Ports {
			if q.Name == p.Name && q.Port == p.Port && protocol(q) == protocol(p) {
				served[p.Name] = derived[i]
			}
		}
	}
	return served
}
