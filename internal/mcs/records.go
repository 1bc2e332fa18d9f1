package mcs

import (
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	mcsv1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
)

// A cluster publishes what it exports as records in its operator's namespace, where its
// peers (allowed to read that namespace only) find them: per valid ServiceExport, a
// ServiceImport describing the Service (its type, ports, session affinity; named
// "<namespace>.<name>") and an EndpointSlice per address type with its ready endpoints.
// Each cluster merges its own and its peers' records into the ServiceImports, derived
// Services and EndpointSlices its workloads use.
const (
	// LabelRecord marks records (value "true").
	LabelRecord = "fabric.weft.dev/export-record"
	// LabelServiceNamespace is the exported Service's namespace, on records and imports.
	LabelServiceNamespace = "fabric.weft.dev/service-namespace"
	// AnnotationExportCreated is when the ServiceExport was created (RFC 3339): the oldest
	// export wins conflicts.
	AnnotationExportCreated = "fabric.weft.dev/export-created"
	// AnnotationExportedLabels and AnnotationExportedAnnotations carry, as JSON objects, a
	// record's exportedLabels and exportedAnnotations.
	AnnotationExportedLabels      = "fabric.weft.dev/exported-labels"
	AnnotationExportedAnnotations = "fabric.weft.dev/exported-annotations"
	// ManagedBy is the endpointslice.kubernetes.io/managed-by value of weft's slices: the
	// EndpointSlice controller leaves them alone.
	ManagedBy = "fabric.weft.dev"
	// LabelDerivedFrom is on the derived Service: the ServiceImport's name.
	LabelDerivedFrom = "fabric.weft.dev/derived-from"
)

// Key names an exported Service.
type Key struct{ Namespace, Name string }

func (k Key) String() string { return k.Namespace + "/" + k.Name }

// RecordName names a Service's records in the operator's namespace.
func RecordName(k Key) string { return k.Namespace + "." + k.Name }

// DerivedName names the Service weft derives from a ServiceImport in its namespace: its
// ClusterIP is the import's VIP. A hash keeps it a DNS label of fixed length, unique per
// namespace and name.
func DerivedName(k Key) string {
	sum := sha256.Sum256([]byte(k.Namespace + "/" + k.Name))
	return "weft-" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:])[:16])
}

// ExportOf describes a Service exported by se for the clusterset; ExternalName Services
// cannot be exported.
func ExportOf(cluster string, se *mcsv1.ServiceExport, svc *corev1.Service) (Export, error) {
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return Export{}, fmt.Errorf("service %s/%s is of type ExternalName, which cannot be exported", svc.Namespace, svc.Name)
	}
	e := Export{Cluster: cluster, Created: se.CreationTimestamp.UTC().Truncate(time.Second), Type: mcsv1.ClusterSetIP,
		SessionAffinity: svc.Spec.SessionAffinity, SessionAffinityConfig: svc.Spec.SessionAffinityConfig.DeepCopy(),
		InternalTrafficPolicy: svc.Spec.InternalTrafficPolicy, TrafficDistribution: svc.Spec.TrafficDistribution,
		IPFamilies: slices.Clone(svc.Spec.IPFamilies),
		Labels:     maps.Clone(se.Spec.ExportedLabels), Annotations: maps.Clone(se.Spec.ExportedAnnotations)}
	if e.SessionAffinity == "" {
		e.SessionAffinity = corev1.ServiceAffinityNone
	}
	if svc.Spec.ClusterIP == corev1.ClusterIPNone {
		e.Type = mcsv1.Headless
	}
	for _, p := range svc.Spec.Ports {
		proto := p.Protocol
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		e.Ports = append(e.Ports, mcsv1.ServicePort{Name: p.Name, Protocol: proto, AppProtocol: p.AppProtocol, Port: p.Port})
	}
	return e, nil
}

// Record is the ServiceImport that publishes an export in namespace (the operator's).
func Record(namespace string, k Key, e Export) *mcsv1.ServiceImport {
	si := &mcsv1.ServiceImport{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: RecordName(k),
			Labels: map[string]string{LabelRecord: "true", mcsv1.LabelServiceName: k.Name,
				LabelServiceNamespace: k.Namespace, mcsv1.LabelSourceCluster: e.Cluster},
			Annotations: map[string]string{AnnotationExportCreated: e.Created.UTC().Format(time.RFC3339)}},
		Spec: mcsv1.ServiceImportSpec{Type: e.Type, Ports: e.Ports, SessionAffinity: e.SessionAffinity,
			SessionAffinityConfig: e.SessionAffinityConfig, InternalTrafficPolicy: e.InternalTrafficPolicy,
			TrafficDistribution: e.TrafficDistribution, IPFamilies: e.IPFamilies},
	}
	for key, m := range map[string]map[string]string{AnnotationExportedLabels: e.Labels, AnnotationExportedAnnotations: e.Annotations} {
		if len(m) > 0 {
			b, _ := json.Marshal(m) // a map of strings always marshals
			si.Annotations[key] = string(b)
		}
	}
	return si
}

// FromRecord reads a record back; ok is false for objects that are not records.
func FromRecord(si *mcsv1.ServiceImport) (k Key, e Export, ok bool) {
	l := si.Labels
	if l[LabelRecord] != "true" || l[mcsv1.LabelServiceName] == "" || l[LabelServiceNamespace] == "" || l[mcsv1.LabelSourceCluster] == "" {
		return Key{}, Export{}, false
	}
	created, err := time.Parse(time.RFC3339, si.Annotations[AnnotationExportCreated])
	if err != nil {
		return Key{}, Export{}, false
	}
	e = Export{Cluster: l[mcsv1.LabelSourceCluster], Created: created, Type: si.Spec.Type, Ports: si.Spec.Ports,
		SessionAffinity: si.Spec.SessionAffinity, SessionAffinityConfig: si.Spec.SessionAffinityConfig,
		InternalTrafficPolicy: si.Spec.InternalTrafficPolicy, TrafficDistribution: si.Spec.TrafficDistribution,
		IPFamilies: si.Spec.IPFamilies}
	for key, m := range map[string]*map[string]string{AnnotationExportedLabels: &e.Labels, AnnotationExportedAnnotations: &e.Annotations} {
		if v, ok := si.Annotations[key]; ok {
			if err := json.Unmarshal([]byte(v), m); err != nil {
				return Key{}, Export{}, false
			}
		}
	}
	return Key{Namespace: l[LabelServiceNamespace], Name: l[mcsv1.LabelServiceName]}, e, true
}

// EndpointRecords publish the ready endpoints of a Service's EndpointSlices: one slice per
// address type, in namespace (the operator's), named after the record. Endpoints are
// sorted so that an unchanged Service gives unchanged records.
func EndpointRecords(namespace string, k Key, cluster string, slices []discoveryv1.EndpointSlice) []*discoveryv1.EndpointSlice {
	byType := map[discoveryv1.AddressType]*discoveryv1.EndpointSlice{}
	for _, s := range slices {
		if s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		out := byType[s.AddressType]
		if out == nil {
			out = &discoveryv1.EndpointSlice{
				ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: RecordName(k) + "-" + strings.ToLower(string(s.AddressType)),
					Labels: map[string]string{LabelRecord: "true", mcsv1.LabelServiceName: k.Name, LabelServiceNamespace: k.Namespace,
						mcsv1.LabelSourceCluster: cluster, discoveryv1.LabelManagedBy: ManagedBy}},
				AddressType: s.AddressType, Ports: s.Ports}
			byType[s.AddressType] = out
		}
		for _, ep := range s.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			out.Endpoints = append(out.Endpoints, discoveryv1.Endpoint{Addresses: ep.Addresses, Hostname: ep.Hostname,
				Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
		}
	}
	var out []*discoveryv1.EndpointSlice
	for _, t := range []discoveryv1.AddressType{discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6} {
		if s := byType[t]; s != nil {
			sort.Slice(s.Endpoints, func(i, j int) bool { return s.Endpoints[i].Addresses[0] < s.Endpoints[j].Addresses[0] })
			out = append(out, s)
		}
	}
	return out
}

// ImportedSlice is the EndpointSlice, in the Service's own namespace, that gives the
// derived Service a cluster's endpoints (from that cluster's endpoint record) for the ports
// named in served (see ServedPorts).
func ImportedSlice(k Key, record *discoveryv1.EndpointSlice, served map[string]bool) *discoveryv1.EndpointSlice {
	cluster := record.Labels[mcsv1.LabelSourceCluster]
	var ports []discoveryv1.EndpointPort
	for _, p := range record.Ports {
		if served[ptr.Deref(p.Name, "")] {
			ports = append(ports, p)
		}
	}
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: k.Namespace,
			Name: DerivedName(k) + "-" + cluster + "-" + strings.ToLower(string(record.AddressType)),
			Labels: map[string]string{discoveryv1.LabelServiceName: DerivedName(k), mcsv1.LabelServiceName: k.Name,
				mcsv1.LabelSourceCluster: cluster, discoveryv1.LabelManagedBy: ManagedBy}},
		AddressType: record.AddressType, Endpoints: record.Endpoints, Ports: ports,
	}
}
