package kubelet

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/libcni"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	corev1 "k8s.io/api/core/v1"
)

// cniRecord is what a pod's network was set up with; kept on disk so the network can be
// torn down (and its address released) even after a kubelet restart.
type cniRecord struct {
	Conf        json.RawMessage `json:"conf"`
	ContainerID string          `json:"containerID"`
	NetNS       string          `json:"netns"`
	IfName      string          `json:"ifName"`
	Args        [][2]string     `json:"args"`
}

// loadCNIConf reads the first configuration file in the node's CNI directory, in the order
// the kubelet uses (lexical), accepting .conflist and single-plugin .conf/.json files.
func loadCNIConf(dir string) (*libcni.NetworkConfigList, []byte, error) {
	files, err := libcni.ConfFiles(dir, []string{".conf", ".conflist", ".json"})
	if err != nil {
		return nil, nil, fmt.Errorf("reading CNI directory %s: %w", dir, err)
	}
	if len(files) == 0 {
		return nil, nil, fmt.Errorf("network plugin not ready: no CNI configuration file in %s", dir)
	}
	data, err := os.ReadFile(files[0])
	if err != nil {
		return nil, nil, err
	}
	if filepath.Ext(files[0]) != ".conflist" {
		var single map[string]any
		if err := json.Unmarshal(data, &single); err != nil {
			return nil, nil, fmt.Errorf("CNI configuration %s: %w", files[0], err)
		}
		data, _ = json.Marshal(map[string]any{"cniVersion": single["cniVersion"], "name": single["name"], "plugins": []any{single}})
	}
	list, err := libcni.NetworkConfFromBytes(data)
	if err != nil {
		return nil, nil, fmt.Errorf("CNI configuration %s: %w", files[0], err)
	}
	if len(list.Plugins) == 0 {
		return nil, nil, fmt.Errorf("CNI configuration %s has no plugins", files[0])
	}
	return list, data, nil
}

func (p *Provider) cni() *libcni.CNIConfig {
	return libcni.NewCNIConfigWithCacheDir(p.cfg.CNIBinDirs(), filepath.Join(p.cfg.State, "cni-cache"), nil)
}

// cniAdd attaches the pod's network namespace and returns the pod's IPs.
func (p *Provider) cniAdd(ctx context.Context, pod *corev1.Pod, netnsPath string) ([]string, cniRecord, error) {
	list, data, err := loadCNIConf(p.cfg.CNIConfDir())
	if err != nil {
		return nil, cniRecord{}, err
	}
	rec := cniRecord{
		Conf: data, ContainerID: sandboxID(pod), NetNS: netnsPath, IfName: "eth0",
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", pod.Namespace},
			{"K8S_POD_NAME", pod.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", sandboxID(pod)},
			{"K8S_POD_UID", string(pod.UID)},
		},
	}
	res, err := p.cni().AddNetworkList(ctx, list, rec.runtimeConf())
	if err != nil {
		return nil, rec, fmt.Errorf("CNI ADD (%s): %w", list.Name, err)
	}
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		return nil, rec, fmt.Errorf("CNI result: %w", err)
	}
	var ips []string
	for _, ip := range r.IPs {
		ips = append(ips, ip.Address.IP.String())
	}
	if len(ips) == 0 {
		return nil, rec, fmt.Errorf("CNI ADD (%s) returned no IP address", list.Name)
	}
	return ips, rec, nil
}

// cniDel detaches a pod's network as recorded. It is safe to repeat.
func (p *Provider) cniDel(ctx context.Context, rec cniRecord) error {
	list, err := libcni.NetworkConfFromBytes(rec.Conf)
	if err != nil {
		return err
	}
	if err := p.cni().DelNetworkList(ctx, list, rec.runtimeConf()); err != nil {
		return fmt.Errorf("CNI DEL (%s): %w", list.Name, err)
	}
	return nil
}

func (r cniRecord) runtimeConf() *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: r.ContainerID, NetNS: r.NetNS, IfName: r.IfName, Args: r.Args}
}

// sandboxID stands for the pod sandbox's container ID in CNI calls.
func sandboxID(pod *corev1.Pod) string { return "lab-" + string(pod.UID) }
