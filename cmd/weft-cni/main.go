// Command weft-cni is weft's CNI plugin. It is thin: it forwards every invocation to the
// weft-agent on the node over a unix socket and prints the agent's answer, so the binary
// the container runtime executes holds no state and never needs upgrading with the agent.
//
// Network configuration: {"cniVersion": "1.1.0", "name": "weft", "type": "weft-cni",
// "socket": "/var/run/weft/cni.sock"} (socket optional, that is its default).
package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/weft-net/weft/agent/cniproto"
)

// DefaultSocket is where the agent listens unless the configuration says otherwise.
const DefaultSocket = "/var/run/weft/cni.sock"

type netConf struct {
	types.NetConf
	Socket string `json:"socket,omitempty"`
}

func socketOf(stdin []byte) (string, error) {
	var c netConf
	if err := json.Unmarshal(stdin, &c); err != nil {
		return "", types.NewError(types.ErrDecodingFailure, "the network configuration is not JSON", err.Error())
	}
	if c.Socket == "" {
		return DefaultSocket, nil
	}
	if !filepath.IsAbs(c.Socket) {
		return "", types.NewError(types.ErrInvalidNetworkConfig, "invalid network configuration",
			`"socket" must be an absolute path, got `+c.Socket)
	}
	return c.Socket, nil
}

func forward(command string) func(*skel.CmdArgs) error {
	return func(a *skel.CmdArgs) error {
		socket, err := socketOf(a.StdinData)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), cniproto.DefaultTimeout)
		defer cancel()
		res, cerr := cniproto.Call(ctx, socket, cniproto.Request{Command: command, ContainerID: a.ContainerID,
			Netns: a.Netns, IfName: a.IfName, Args: a.Args, Path: a.Path, Config: a.StdinData})
		if cerr != nil {
			return types.NewError(cerr.Code, cerr.Msg, cerr.Details)
		}
		if command == "ADD" && len(res) > 0 {
			_, err := os.Stdout.Write(res)
			return err
		}
		return nil
	}
}

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add: forward("ADD"), Del: forward("DEL"), Check: forward("CHECK"),
		GC: forward("GC"), Status: forward("STATUS"),
	}, version.All, "weft-cni: forwards CNI calls to the weft-agent")
}
