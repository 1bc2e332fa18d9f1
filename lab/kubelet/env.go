package kubelet

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// Expand replaces $(VAR) with mapping's value when VAR is defined; $$ escapes a $; an
// undefined or unterminated reference is kept as written (Kubernetes' rules).
func Expand(input string, mapping func(string) (string, bool)) string {
	var b strings.Builder
	for i := 0; i < len(input); i++ {
		if input[i] != '$' || i+1 >= len(input) {
			b.WriteByte(input[i])
			continue
		}
		switch input[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(input[i+2:], ')')
			if end < 0 {
				b.WriteString(input[i:])
				return b.String()
			}
			name := input[i+2 : i+2+end]
			if v, ok := mapping(name); ok {
				b.WriteString(v)
			} else {
				b.WriteString("$(" + name + ")")
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// envSources is what container environments are resolved from.
type envSources struct {
	pod       *corev1.Pod
	podIPs    []string
	hostIP    string
	services  []*corev1.Service // in the pod's namespace
	master    *corev1.Service   // default/kubernetes
	configMap func(ns, name string) (*corev1.ConfigMap, error)
	secret    func(ns, name string) (*corev1.Secret, error)
	capacity  corev1.ResourceList
}

// envVar is one resolved variable, in definition order.
type envVar struct{ name, value string }

// containerEnv resolves a container's environment like the kubelet: service links, envFrom,
// then env in order, each value expanded against the variables before it.
func (s envSources) containerEnv(c *corev1.Container) ([]envVar, error) {
	var vars []envVar
	index := map[string]int{}
	set := func(name, value string) {
		if i, ok := index[name]; ok {
			vars[i].value = value
			return
		}
		index[name] = len(vars)
		vars = append(vars, envVar{name, value})
	}
	lookup := func(name string) (string, bool) {
		if i, ok := index[name]; ok {
			return vars[i].value, true
		}
		return "", false
	}

	for _, kv := range s.serviceEnv() {
		set(kv.name, kv.value)
	}
	for _, from := range c.EnvFrom {
		data, err := s.envFromData(from)
		if err != nil {
			return nil, err
		}
		keys := make([]string, 0, len(data))
		for k := range data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			set(from.Prefix+k, data[k])
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			set(e.Name, Expand(e.Value, lookup))
			continue
		}
		v, err := s.valueFrom(c, e.ValueFrom)
		if err != nil {
			return nil, fmt.Errorf("env %s: %w", e.Name, err)
		}
		set(e.Name, v)
	}
	return vars, nil
}

func (s envSources) envFromData(from corev1.EnvFromSource) (map[string]string, error) {
	switch {
	case from.ConfigMapRef != nil:
		cm, err := s.configMap(s.pod.Namespace, from.ConfigMapRef.Name)
		if err != nil {
			if optional(from.ConfigMapRef.Optional) {
				return nil, nil
			}
			return nil, fmt.Errorf("envFrom configmap %s: %w", from.ConfigMapRef.Name, err)
		}
		return cm.Data, nil
	case from.SecretRef != nil:
		sec, err := s.secret(s.pod.Namespace, from.SecretRef.Name)
		if err != nil {
			if optional(from.SecretRef.Optional) {
				return nil, nil
			}
			return nil, fmt.Errorf("envFrom secret %s: %w", from.SecretRef.Name, err)
		}
		out := map[string]string{}
		for k, v := range sec.Data {
			out[k] = string(v)
		}
		return out, nil
	}
	return nil, nil
}

func optional(b *bool) bool { return b != nil && *b }

func (s envSources) valueFrom(c *corev1.Container, from *corev1.EnvVarSource) (string, error) {
	switch {
	case from.FieldRef != nil:
		return s.fieldRef(from.FieldRef.FieldPath)
	case from.ResourceFieldRef != nil:
		return s.resourceFieldRef(c, from.ResourceFieldRef)
	case from.ConfigMapKeyRef != nil:
		ref := from.ConfigMapKeyRef
		cm, err := s.configMap(s.pod.Namespace, ref.Name)
		if err == nil {
			if v, ok := cm.Data[ref.Key]; ok {
				return v, nil
			}
			err = fmt.Errorf("configmap %s has no key %s", ref.Name, ref.Key)
		}
		if optional(ref.Optional) {
			return "", nil
		}
		return "", err
	case from.SecretKeyRef != nil:
		ref := from.SecretKeyRef
		sec, err := s.secret(s.pod.Namespace, ref.Name)
		if err == nil {
			if v, ok := sec.Data[ref.Key]; ok {
				return string(v), nil
			}
			err = fmt.Errorf("secret %s has no key %s", ref.Name, ref.Key)
		}
		if optional(ref.Optional) {
			return "", nil
		}
		return "", err
	}
	return "", fmt.Errorf("unsupported valueFrom")
}

func (s envSources) fieldRef(path string) (string, error) {
	p := s.pod
	switch path {
	case "metadata.name":
		return p.Name, nil
	case "metadata.namespace":
		return p.Namespace, nil
	case "metadata.uid":
		return string(p.UID), nil
	case "spec.nodeName":
		return p.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return p.Spec.ServiceAccountName, nil
	case "status.hostIP":
		return s.hostIP, nil
	case "status.hostIPs":
		return s.hostIP, nil
	case "status.podIP":
		if len(s.podIPs) > 0 {
			return s.podIPs[0], nil
		}
		return "", nil
	case "status.podIPs":
		return strings.Join(s.podIPs, ","), nil
	}
	for prefix, m := range map[string]map[string]string{"metadata.labels": p.Labels, "metadata.annotations": p.Annotations} {
		if rest, ok := strings.CutPrefix(path, prefix+"['"); ok && strings.HasSuffix(rest, "']") {
			return m[strings.TrimSuffix(rest, "']")], nil
		}
	}
	return "", fmt.Errorf("unsupported fieldRef %q", path)
}

func (s envSources) resourceFieldRef(c *corev1.Container, ref *corev1.ResourceFieldSelector) (string, error) {
	kind, name, ok := strings.Cut(ref.Resource, ".")
	if !ok {
		return "", fmt.Errorf("unsupported resourceFieldRef %q", ref.Resource)
	}
	list := c.Resources.Limits
	if kind == "requests" {
		list = c.Resources.Requests
	}
	q, ok := list[corev1.ResourceName(name)]
	if !ok {
		q = s.capacity[corev1.ResourceName(name)] // an unset limit means the node's capacity
	}
	divisor := ref.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	v := (q.MilliValue() + divisor.MilliValue() - 1) / divisor.MilliValue() // ceiling, like the kubelet
	return strconv.FormatInt(v, 10), nil
}

// serviceEnv is KUBERNETES_SERVICE_* and, when service links are on, the Docker-link style
// variables of every service in the pod's namespace.
func (s envSources) serviceEnv() []envVar {
	var out []envVar
	add := func(svc *corev1.Service) {
		if svc == nil || svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone || len(svc.Spec.Ports) == 0 {
			return
		}
		prefix := strings.ToUpper(strings.ReplaceAll(svc.Name, "-", "_"))
		ip := svc.Spec.ClusterIP
		first := svc.Spec.Ports[0]
		out = append(out, envVar{prefix + "_SERVICE_HOST", ip}, envVar{prefix + "_SERVICE_PORT", strconv.Itoa(int(first.Port))})
		for _, port := range svc.Spec.Ports {
			if port.Name != "" {
				out = append(out, envVar{prefix + "_SERVICE_PORT_" + strings.ToUpper(strings.ReplaceAll(port.Name, "-", "_")), strconv.Itoa(int(port.Port))})
			}
		}
		proto := strings.ToLower(string(first.Protocol))
		out = append(out, envVar{prefix + "_PORT", fmt.Sprintf("%s://%s:%d", proto, ip, first.Port)})
		for _, port := range svc.Spec.Ports {
			pr := strings.ToLower(string(port.Protocol))
			base := fmt.Sprintf("%s_PORT_%d_%s", prefix, port.Port, strings.ToUpper(pr))
			out = append(out, envVar{base, fmt.Sprintf("%s://%s:%d", pr, ip, port.Port)},
				envVar{base + "_PROTO", pr}, envVar{base + "_PORT", strconv.Itoa(int(port.Port))}, envVar{base + "_ADDR", ip})
		}
	}
	links := s.pod.Spec.EnableServiceLinks == nil || *s.pod.Spec.EnableServiceLinks
	if links {
		for _, svc := range s.services {
			if !(s.pod.Namespace == "default" && svc.Name == "kubernetes") {
				add(svc)
			}
		}
	}
	add(s.master)
	return out
}
