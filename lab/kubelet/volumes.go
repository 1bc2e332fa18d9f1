package kubelet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/weft-net/weft/internal/statefile"
)

// volumes renders a pod's volumes under its directory and knows where each one lives.
type volumes struct {
	p     *Provider
	pod   *corev1.Pod
	root  string            // <podDir>/volumes
	paths map[string]string // volume name -> path on the machine
	// tokenExpiry is when the earliest projected token should be refreshed.
	tokenRefresh time.Time
}

func newVolumes(p *Provider, pod *corev1.Pod, podDir string) *volumes {
	return &volumes{p: p, pod: pod, root: filepath.Join(podDir, "volumes"), paths: map[string]string{}}
}

// setup creates every volume; render (re)writes the ones with API-backed content.
func (v *volumes) setup(ctx context.Context) error {
	for _, vol := range v.pod.Spec.Volumes {
		switch {
		case vol.HostPath != nil:
			path, err := v.hostPath(vol.HostPath)
			if err != nil {
				return fmt.Errorf("volume %s: %w", vol.Name, err)
			}
			v.paths[vol.Name] = path
		case vol.EmptyDir != nil, vol.ConfigMap != nil, vol.Secret != nil, vol.Projected != nil, vol.DownwardAPI != nil:
			dir := filepath.Join(v.root, vol.Name)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			v.paths[vol.Name] = dir
		default:
			return fmt.Errorf("volume %s: only hostPath, emptyDir, configMap, secret, projected and downwardAPI volumes run in the lab", vol.Name)
		}
	}
	return v.render(ctx, true)
}

// render writes ConfigMap, Secret, downward API and projected content. force re-requests
// service-account tokens.
func (v *volumes) render(ctx context.Context, force bool) error {
	refreshToken := force || time.Now().After(v.tokenRefresh)
	var errs []error
	for _, vol := range v.pod.Spec.Volumes {
		dir := v.paths[vol.Name]
		var files map[string]file
		var err error
		switch {
		case vol.ConfigMap != nil:
			files, err = v.configMapFiles(vol.ConfigMap.Name, vol.ConfigMap.Items, vol.ConfigMap.Optional, vol.ConfigMap.DefaultMode)
		case vol.Secret != nil:
			files, err = v.secretFiles(vol.Secret.SecretName, vol.Secret.Items, vol.Secret.Optional, vol.Secret.DefaultMode)
		case vol.DownwardAPI != nil:
			files, err = v.downwardFiles(vol.DownwardAPI.Items, vol.DownwardAPI.DefaultMode)
		case vol.Projected != nil:
			files, err = v.projectedFiles(ctx, vol.Projected, refreshToken)
		default:
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("volume %s: %w", vol.Name, err))
			continue
		}
		for rel, f := range files {
			if err := writeAtomic(filepath.Join(dir, rel), f.data, f.mode); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

type file struct {
	data []byte
	mode os.FileMode
}

func mode(m *int32, def os.FileMode) os.FileMode {
	if m == nil {
		return def
	}
	return os.FileMode(*m)
}

func keyed(data map[string][]byte, items []corev1.KeyToPath, defMode os.FileMode) (map[string]file, error) {
	out := map[string]file{}
	if len(items) == 0 {
		for k, d := range data {
			out[k] = file{d, defMode}
		}
		return out, nil
	}
	for _, it := range items {
		d, ok := data[it.Key]
		if !ok {
			return nil, fmt.Errorf("no key %s", it.Key)
		}
		out[it.Path] = file{d, mode(it.Mode, defMode)}
	}
	return out, nil
}

func (v *volumes) configMapFiles(name string, items []corev1.KeyToPath, opt *bool, defMode *int32) (map[string]file, error) {
	cm, err := v.p.configMap(v.pod.Namespace, name)
	if err != nil {
		if optional(opt) {
			return nil, nil
		}
		return nil, fmt.Errorf("configmap %s: %w", name, err)
	}
	data := map[string][]byte{}
	for k, s := range cm.Data {
		data[k] = []byte(s)
	}
	for k, b := range cm.BinaryData {
		data[k] = b
	}
	return keyed(data, items, mode(defMode, 0o644))
}

func (v *volumes) secretFiles(name string, items []corev1.KeyToPath, opt *bool, defMode *int32) (map[string]file, error) {
	sec, err := v.p.secret(v.pod.Namespace, name)
	if err != nil {
		if optional(opt) {
			return nil, nil
		}
		return nil, fmt.Errorf("secret %s: %w", name, err)
	}
	return keyed(sec.Data, items, mode(defMode, 0o644))
}

func (v *volumes) downwardFiles(items []corev1.DownwardAPIVolumeFile, defMode *int32) (map[string]file, error) {
	src := v.p.envSources(v.pod, nil)
	out := map[string]file{}
	for _, it := range items {
		var val string
		var err error
		switch {
		case it.FieldRef != nil && it.FieldRef.FieldPath == "metadata.labels":
			val = formatMap(v.pod.Labels)
		case it.FieldRef != nil && it.FieldRef.FieldPath == "metadata.annotations":
			val = formatMap(v.pod.Annotations)
		case it.FieldRef != nil:
			val, err = src.fieldRef(it.FieldRef.FieldPath)
		case it.ResourceFieldRef != nil:
			c := containerNamed(v.pod, it.ResourceFieldRef.ContainerName)
			val, err = src.resourceFieldRef(c, it.ResourceFieldRef)
		}
		if err != nil {
			return nil, err
		}
		out[it.Path] = file{[]byte(val), mode(it.Mode, mode(defMode, 0o644))}
	}
	return out, nil
}

func formatMap(m map[string]string) string {
	var lines []string
	for k, v := range m {
		lines = append(lines, fmt.Sprintf("%s=%q", k, v))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

func (v *volumes) projectedFiles(ctx context.Context, pr *corev1.ProjectedVolumeSource, refreshToken bool) (map[string]file, error) {
	out := map[string]file{}
	def := mode(pr.DefaultMode, 0o644)
	for _, src := range pr.Sources {
		var part map[string]file
		var err error
		switch {
		case src.ConfigMap != nil:
			part, err = v.configMapFiles(src.ConfigMap.Name, src.ConfigMap.Items, src.ConfigMap.Optional, ptr.To(int32(def)))
		case src.Secret != nil:
			part, err = v.secretFiles(src.Secret.Name, src.Secret.Items, src.Secret.Optional, ptr.To(int32(def)))
		case src.DownwardAPI != nil:
			part, err = v.downwardFiles(src.DownwardAPI.Items, ptr.To(int32(def)))
		case src.ServiceAccountToken != nil:
			if !refreshToken {
				continue
			}
			part, err = v.tokenFile(ctx, src.ServiceAccountToken, def)
		default:
			err = errors.New("only configMap, secret, downwardAPI and serviceAccountToken projections run in the lab")
		}
		if err != nil {
			return nil, err
		}
		for k, f := range part {
			out[k] = f
		}
	}
	return out, nil
}

// tokenFile requests a token bound to the pod, as the kubelet does, and schedules its
// refresh at 80% of its lifetime.
func (v *volumes) tokenFile(ctx context.Context, src *corev1.ServiceAccountTokenProjection, m os.FileMode) (map[string]file, error) {
	sa := v.pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: src.ExpirationSeconds,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: v.pod.Name, UID: v.pod.UID},
	}}
	if src.Audience != "" {
		req.Spec.Audiences = []string{src.Audience}
	}
	tr, err := v.p.client.CoreV1().ServiceAccounts(v.pod.Namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("service account %s/%s not found", v.pod.Namespace, sa)
		}
		return nil, fmt.Errorf("requesting a token for service account %s: %w", sa, err)
	}
	life := time.Until(tr.Status.ExpirationTimestamp.Time)
	next := time.Now().Add(life * 8 / 10)
	if v.tokenRefresh.IsZero() || next.Before(v.tokenRefresh) || time.Now().After(v.tokenRefresh) {
		v.tokenRefresh = next
	}
	return map[string]file{src.Path: {[]byte(tr.Status.Token), m}}, nil
}

// hostPath resolves a hostPath volume for this node and creates it when its type allows.
func (v *volumes) hostPath(hp *corev1.HostPathVolumeSource) (string, error) {
	path := v.p.cfg.HostPath(hp.Path)
	typ := corev1.HostPathUnset
	if hp.Type != nil {
		typ = *hp.Type
	}
	underRoot := strings.HasPrefix(path, v.p.cfg.Root+"/")
	st, err := os.Stat(path)
	switch {
	case err == nil:
		if typ == corev1.HostPathDirectory && !st.IsDir() || typ == corev1.HostPathFile && st.IsDir() {
			return "", fmt.Errorf("hostPath %s is not a %s", hp.Path, typ)
		}
		return path, nil
	case typ == corev1.HostPathFileOrCreate:
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return "", err
		}
		return path, os.WriteFile(path, nil, 0o644)
	case typ == corev1.HostPathDirectoryOrCreate, typ == corev1.HostPathUnset && underRoot:
		return path, os.MkdirAll(path, 0o755)
	default:
		return "", fmt.Errorf("hostPath %s (%s) does not exist on node %s", hp.Path, path, v.p.cfg.NodeName)
	}
}

// writeAtomic replaces a file's content in one rename, so readers never see half of it.
func writeAtomic(path string, data []byte, m os.FileMode) error {
	if old, err := os.ReadFile(path); err == nil && string(old) == string(data) {
		return nil
	}
	return statefile.Write(path, data, m, 0o755)
}

func containerNamed(pod *corev1.Pod, name string) *corev1.Container {
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == name || name == "" {
			return &pod.Spec.Containers[i]
		}
	}
	return &corev1.Container{}
}
