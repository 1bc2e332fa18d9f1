// Package cniserver is the agent's side of the weft-cni protocol: it listens on the unix
// socket, decodes each CNI invocation (command, CNI_ARGS, configuration, prevResult),
// serializes calls for the same container, hands them to a Handler, and encodes the result
// in the CNI version the runtime asked for. What a call does to pods is the Handler's.
package cniserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/weft-net/weft/agent/cniproto"
)

// Call is a decoded CNI invocation.
type Call struct {
	Command                       string
	ContainerID, Netns, IfName    string
	PodNamespace, PodName, PodUID string
	// Conf is the network configuration (name, cniVersion, prevResult, valid attachments).
	Conf       types.NetConf
	PrevResult *current.Result
}

// Handler does the work of each command.
type Handler interface {
	Add(ctx context.Context, c Call) (*current.Result, error)
	Del(ctx context.Context, c Call) error
	Check(ctx context.Context, c Call) error
	// Status reports whether ADD can succeed now.
	Status(ctx context.Context) error
	// GC releases every attachment not in valid.
	GC(ctx context.Context, valid []types.GCAttachment) error
}

// Server serves the protocol.
type Server struct {
	Handler Handler
	Socket  string

	mu    sync.Mutex
	locks map[string]*sync.Mutex
}

// Serve listens until ctx ends. A stale socket from an earlier run is replaced.
func (s *Server) Serve(ctx context.Context) error {
	if err := os.MkdirAll(filepath.Dir(s.Socket), 0o755); err != nil {
		return err
	}
	_ = os.Remove(s.Socket)
	l, err := net.Listen("unix", s.Socket)
	if err != nil {
		return err
	}
	if err := os.Chmod(s.Socket, 0o600); err != nil {
		l.Close()
		return err
	}
	srv := &http.Server{Handler: http.HandlerFunc(s.serveHTTP), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (s *Server) lockFor(id string) *sync.Mutex {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.locks == nil {
		s.locks = map[string]*sync.Mutex{}
	}
	l, ok := s.locks[id]
	if !ok {
		l = &sync.Mutex{}
		s.locks[id] = l
	}
	return l
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	var req cniproto.Request
	resp := cniproto.Response{}
	if r.URL.Path != cniproto.Path || r.Method != http.MethodPost {
		http.NotFound(w, r)
		return
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		resp.Error = &cniproto.Error{Code: cniproto.CodeDecodingFailure, Msg: "the request is not understood", Details: err.Error()}
	} else {
		resp.Result, resp.Error = s.dispatch(r.Context(), req)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

func (s *Server) dispatch(ctx context.Context, req cniproto.Request) (json.RawMessage, *cniproto.Error) {
	call, cerr := decode(req)
	if cerr != nil {
		return nil, cerr
	}
	if call.ContainerID != "" {
		l := s.lockFor(call.ContainerID)
		l.Lock()
		defer l.Unlock()
	}
	switch call.Command {
	case "ADD":
		res, err := s.Handler.Add(ctx, call)
		if err != nil {
			return nil, asCNIError(err)
		}
		out, err := res.GetAsVersion(call.Conf.CNIVersion)
		if err != nil {
			return nil, &cniproto.Error{Code: cniproto.CodeIncompatibleVersion, Msg: "cannot express the result in CNI " + call.Conf.CNIVersion, Details: err.Error()}
		}
		data, err := json.Marshal(out)
		if err != nil {
			return nil, asCNIError(err)
		}
		return data, nil
	case "DEL":
		return nil, asCNIError(s.Handler.Del(ctx, call))
	case "CHECK":
		return nil, asCNIError(s.Handler.Check(ctx, call))
	case "STATUS":
		return nil, asCNIError(s.Handler.Status(ctx))
	case "GC":
		return nil, asCNIError(s.Handler.GC(ctx, call.Conf.ValidAttachments))
	}
	return nil, &cniproto.Error{Code: cniproto.CodeInvalidEnvironment, Msg: fmt.Sprintf("unknown CNI command %q", req.Command)}
}

func decode(req cniproto.Request) (Call, *cniproto.Error) {
	c := Call{Command: req.Command, ContainerID: req.ContainerID, Netns: req.Netns, IfName: req.IfName}
	if err := json.Unmarshal(req.Config, &c.Conf); err != nil {
		return c, &cniproto.Error{Code: cniproto.CodeDecodingFailure, Msg: "the network configuration is not understood", Details: err.Error()}
	}
	if c.Conf.Name == "" {
		return c, &cniproto.Error{Code: cniproto.CodeInvalidNetworkConfig, Msg: "invalid network configuration", Details: `"name" is missing`}
	}
	if ok, _ := version.GreaterThanOrEqualTo(c.Conf.CNIVersion, "0.4.0"); !ok && req.Command == "CHECK" {
		return c, &cniproto.Error{Code: cniproto.CodeIncompatibleVersion, Msg: "CHECK needs CNI 0.4.0 or later", Details: "cniVersion " + c.Conf.CNIVersion}
	}
	for _, kv := range strings.Split(req.Args, ";") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "K8S_POD_NAMESPACE":
			c.PodNamespace = v
		case "K8S_POD_NAME":
			c.PodName = v
		case "K8S_POD_UID":
			c.PodUID = v
		}
	}
	if req.Command == "ADD" || req.Command == "CHECK" {
		if c.PodNamespace == "" || c.PodName == "" {
			return c, &cniproto.Error{Code: cniproto.CodeInvalidEnvironment, Msg: "CNI_ARGS lack K8S_POD_NAMESPACE and K8S_POD_NAME",
				Details: "weft wires Kubernetes pods; args were " + req.Args}
		}
		if c.Netns == "" {
			return c, &cniproto.Error{Code: cniproto.CodeInvalidEnvironment, Msg: "CNI_NETNS is empty"}
		}
	}
	if c.Conf.RawPrevResult != nil {
		if err := version.ParsePrevResult(&c.Conf); err != nil {
			return c, &cniproto.Error{Code: cniproto.CodeDecodingFailure, Msg: "prevResult is not understood", Details: err.Error()}
		}
		if pr, err := current.NewResultFromResult(c.Conf.PrevResult); err == nil {
			c.PrevResult = pr
		}
	}
	return c, nil
}

func asCNIError(err error) *cniproto.Error {
	if err == nil {
		return nil
	}
	var ce *cniproto.Error
	if errors.As(err, &ce) {
		return ce
	}
	return &cniproto.Error{Code: cniproto.CodeInternal, Msg: "weft-agent failed", Details: err.Error()}
}
