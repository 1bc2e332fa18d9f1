package kubelet

import (
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "1", "B": "two"}
	m := func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
	for in, want := range map[string]string{
		"$(A)":           "1",
		"x$(A)y$(B)z":    "x1ytwoz",
		"$(C)":           "$(C)",
		"$$(A)":          "$(A)",
		"$$":             "$",
		"$(A":            "$(A",
		"cost $5":        "cost $5",
		"trailing $":     "trailing $",
		"$(A)$(A)$$$(B)": "11$two",
	} {
		if got := Expand(in, m); got != want {
			t.Errorf("Expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestContainerEnv(t *testing.T) {
	links := false
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "shop", UID: "u-1",
			Labels: map[string]string{"app": "web"}, Annotations: map[string]string{"team": "blue"}},
		Spec: corev1.PodSpec{NodeName: "n1", ServiceAccountName: "sa", EnableServiceLinks: &links},
	}
	master := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: "default"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.1", Ports: []corev1.ServicePort{{Name: "https", Port: 443, Protocol: "TCP"}}}}
	src := envSources{
		pod: pod, podIPs: []string{"10.244.1.5"}, hostIP: "172.30.1.11", master: master,
		services: []*corev1.Service{{ObjectMeta: metav1.ObjectMeta{Name: "db"}, Spec: corev1.ServiceSpec{ClusterIP: "10.96.3.3",
			Ports: []corev1.ServicePort{{Port: 5432, Protocol: "TCP"}}}}},
		configMap: func(ns, name string) (*corev1.ConfigMap, error) {
			if name != "cfg" {
				return nil, errors.New("not found")
			}
			return &corev1.ConfigMap{Data: map[string]string{"MODE": "fast", "LEVEL": "3"}}, nil
		},
		secret: func(ns, name string) (*corev1.Secret, error) {
			return &corev1.Secret{Data: map[string][]byte{"pw": []byte("hunter2")}}, nil
		},
		capacity: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("8")},
	}
	yes := true
	c := &corev1.Container{
		EnvFrom: []corev1.EnvFromSource{{Prefix: "CFG_", ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}},
		Env: []corev1.EnvVar{
			{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
			{Name: "NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "APP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['app']"}}},
			{Name: "URL", Value: "http://$(POD_IP):8080/$(NAME)?m=$(CFG_MODE)&x=$(MISSING)"},
			{Name: "PW", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{Key: "pw", LocalObjectReference: corev1.LocalObjectReference{Name: "s"}}}},
			{Name: "OPT", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{Key: "k", Optional: &yes, LocalObjectReference: corev1.LocalObjectReference{Name: "absent"}}}},
			{Name: "CPUS", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.cpu"}}},
		},
	}
	vars, err := src.containerEnv(c)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, v := range vars {
		got[v.name] = v.value
	}
	want := map[string]string{
		"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443", "KUBERNETES_SERVICE_PORT_HTTPS": "443",
		"CFG_MODE": "fast", "CFG_LEVEL": "3", "POD_IP": "10.244.1.5", "NAME": "web-1", "APP": "web",
		"URL": "http://10.244.1.5:8080/web-1?m=fast&x=$(MISSING)", "PW": "hunter2", "OPT": "", "CPUS": "8",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if _, ok := got["DB_SERVICE_HOST"]; ok {
		t.Errorf("service links are off but DB_SERVICE_HOST is set")
	}

	pod.Spec.EnableServiceLinks = nil
	vars, _ = src.containerEnv(&corev1.Container{})
	var names []string
	for _, v := range vars {
		names = append(names, v.name+"="+v.value)
	}
	if s := strings.Join(names, " "); !strings.Contains(s, "DB_SERVICE_HOST=10.96.3.3") || !strings.Contains(s, "DB_PORT_5432_TCP_ADDR=10.96.3.3") {
		t.Errorf("service links missing: %s", s)
	}

	c.Env = append(c.Env, corev1.EnvVar{Name: "BAD", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{Key: "k", LocalObjectReference: corev1.LocalObjectReference{Name: "absent"}}}})
	if _, err := src.containerEnv(c); err == nil || !strings.Contains(err.Error(), "env BAD") {
		t.Errorf("a missing required configmap key: err = %v", err)
	}
}
