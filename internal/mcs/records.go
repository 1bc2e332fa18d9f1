package mcs

import (
	"crypto/sha256"
	"encoding/base32"
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

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// A cluster publishes what it exports as records in its operator's namespace, where its
// peers (allowed to read that namespace only) find them: per valid ServiceExport, an
// ExportRecord (named "<namespace>.<name>") with the Service's shape — type, ports, session
// affinity — and its ready endpoints. Each cluster merges its own and its peers' records
// into the ServiceImports, derived Services and EndpointSlices its workloads use.
const (
	// LabelServiceNamespace is the exported Service's namespace, on records and imports
	// (mcsv1.LabelServiceName has its name, mcsv1.LabelSourceCluster the exporting cluster).
	LabelServiceNamespace = "fabric.weft.dev/service-namespace"
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

// RecordLabels select the records of one Service (k), of one cluster's when cluster is set.
func RecordLabels(k Key, cluster string) map[string]string {
	l := map[string]string{mcsv1.LabelServiceName: k.Name, LabelServiceNamespace: k.Namespace}
	if cluster != "" {
		l[mcsv1.LabelSourceCluster] = cluster
	}
	return l
}

// Record is the ExportRecord that publishes an export in namespace (the operator's), with
// the ready endpoints of the Service's EndpointSlices: one entry per address type, sorted so
// that an unchanged Service gives an unchanged record.
func Record(namespace string, k Key, e Export, slices []discoveryv1.EndpointSlice) *fabricv1.ExportRecord {
	r := &fabricv1.ExportRecord{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: RecordName(k), Labels: RecordLabels(k, e.Cluster)},
		Spec: fabricv1.ExportRecordSpec{Cluster: e.Cluster, Service: fabricv1.ServiceRef{Namespace: k.Namespace, Name: k.Name},
			ExportCreated: metav1.NewTime(e.Created.UTC()), Type: e.Type, Ports: e.Ports, SessionAffinity: e.SessionAffinity,
			SessionAffinityConfig: e.SessionAffinityConfig, InternalTrafficPolicy: e.InternalTrafficPolicy,
			TrafficDistribution: e.TrafficDistribution, IPFamilies: e.IPFamilies,
			ExportedLabels: e.Labels, ExportedAnnotations: e.Annotations},
	}
	byType := map[discoveryv1.AddressType]*fabricv1.RecordEndpoints{}
	for _, s := range slices {
		if s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		out := byType[s.AddressType]
		if out == nil {
			out = &fabricv1.RecordEndpoints{AddressType: s.AddressType, Ports: s.Ports}
			byType[s.AddressType] = out
		}
		for _, ep := range s.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready || len(ep.Addresses) == 0 {
				continue
			}
			out.Endpoints = append(out.Endpoints, discoveryv1.Endpoint{Addresses: ep.Addresses, Hostname: ep.Hostname,
				Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
		}
	}
	for _, t := range []discoveryv1.AddressType{discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6} {
		if eps := byType[t]; eps != nil {
			sort.Slice(eps.Endpoints, func(i, j int) bool { return eps.Endpoints[i].Addresses[0] < eps.Endpoints[j].Addresses[0] })
			r.Spec.Endpoints = append(r.Spec.Endpoints, *eps)
		}
	}
	return r
}

// FromRecord reads a record back; ok is false for a record that does not say which Service
// and cluster it is about.
func FromRecord(r *fabricv1.ExportRecord) (k Key, e Export, ok bool) {
	s := r.Spec
	if s.Cluster == "" || s.Service.Namespace == "" || s.Service.Name == "" {
		return Key{}, Export{}, false
	}
	e = Export{Cluster: s.Cluster, Created: s.ExportCreated.UTC(), Type: s.Type, Ports: s.Ports,
		SessionAffinity: s.SessionAffinity, SessionAffinityConfig: s.SessionAffinityConfig,
		InternalTrafficPolicy: s.InternalTrafficPolicy, TrafficDistribution: s.TrafficDistribution,
		IPFamilies: s.IPFamilies, Labels: s.ExportedLabels, Annotations: s.ExportedAnnotations}
	return Key{Namespace: s.Service.Namespace, Name: s.Service.Name}, e, true
}

// ImportedSlice is the EndpointSlice, in the Service's own namespace, that gives the
// derived Service a cluster's endpoints of one address type (from its record) for the ports
// in served, under the derived Service's names for them (see ServedPorts).
func ImportedSlice(k Key, cluster string, eps *fabricv1.RecordEndpoints, served map[string]string) *discoveryv1.EndpointSlice {
	var ports []discoveryv1.EndpointPort
	for _, p := range eps.Ports {
		if name, ok := served[ptr.Deref(p.Name, "")]; ok {
			p.Name = ptr.To(name)
			ports = append(ports, p)
		}
	}
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: k.Namespace,
			Name: DerivedName(k) + "-" + cluster + "-" + strings.ToLower(string(eps.AddressType)),
			Labels: map[string]string{discoveryv1.LabelServiceName: DerivedName(k), mcsv1.LabelServiceName: k.Name,
				mcsv1.LabelSourceCluster: cluster, discoveryv1.LabelManagedBy: ManagedBy}},
		AddressType: eps.AddressType, Endpoints: eps.Endpoints, Ports: ports,
	}
}
