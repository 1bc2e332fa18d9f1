// Package cniproto is the protocol between the thin weft-cni plugin and the weft-agent:
// the plugin forwards each CNI invocation (command, environment, configuration) over the
// agent's unix socket and prints what the agent answers. It holds the wire types and the
// plugin's client; it knows nothing about pods or datapaths.
package cniproto

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"
)

// Path is the HTTP path requests are posted to.
const Path = "/cni"

// Request is one CNI invocation.
type Request struct {
	Command     string          `json:"command"`
	ContainerID string          `json:"containerID,omitempty"`
	Netns       string          `json:"netns,omitempty"`
	IfName      string          `json:"ifName,omitempty"`
	Args        string          `json:"args,omitempty"` // CNI_ARGS
	Path        string          `json:"path,omitempty"`
	Config      json.RawMessage `json:"config"` // the plugin's stdin
}

// Response carries either the result (in the requested CNI version) or an error.
type Response struct {
	Result json.RawMessage `json:"result,omitempty"`
	Error  *Error          `json:"error,omitempty"`
}

// Error is a CNI error: a code from the spec, a message and details.
type Error struct {
	Code    uint   `json:"code"`
	Msg     string `json:"msg"`
	Details string `json:"details,omitempty"`
}

func (e *Error) Error() string {
	if e.Details != "" {
		return e.Msg + ": " + e.Details
	}
	return e.Msg
}

// CNI error codes used by weft (the spec's, plus its reserved range for plugins).
const (
	CodeIncompatibleVersion  uint = 1
	CodeUnknownContainer     uint = 3
	CodeInvalidEnvironment   uint = 4
	CodeIOFailure            uint = 5
	CodeDecodingFailure      uint = 6
	CodeInvalidNetworkConfig uint = 7
	CodeInvalidNetns         uint = 8
	CodeTryAgainLater        uint = 11
	CodePluginNotAvailable   uint = 50
	CodeLimitedConnectivity  uint = 51
	// CodeNoAddress: the node's block has no free address (plugin-specific range, ≥ 100).
	CodeNoAddress uint = 100
	// CodeAddressUnavailable: a requested fixed address is taken or outside the node's block.
	CodeAddressUnavailable uint = 101
	// CodeInternal: the agent failed for a reason its message gives.
	CodeInternal uint = 102
)

// Call sends a request to the agent at socket and returns the result, or a CNI error that
// says what went wrong: an agent that is not running is "try again later", not a hang.
func Call(ctx context.Context, socket string, req Request) (json.RawMessage, *Error) {
	if _, err := os.Stat(socket); err != nil {
		return nil, &Error{Code: CodeTryAgainLater, Msg: "weft-agent is not running on this node",
			Details: fmt.Sprintf("no agent socket at %s: %v", socket, err)}
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, &Error{Code: CodeDecodingFailure, Msg: "encoding the request", Details: err.Error()}
	}
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://weft-agent"+Path, bytes.NewReader(body))
	if err != nil {
		return nil, &Error{Code: CodeIOFailure, Msg: "building the request", Details: err.Error()}
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(hreq)
	if err != nil {
		switch {
		case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ENOENT):
			return nil, &Error{Code: CodeTryAgainLater, Msg: "weft-agent is not running on this node", Details: err.Error()}
		case errors.Is(err, context.DeadlineExceeded):
			return nil, &Error{Code: CodeTryAgainLater, Msg: "weft-agent did not answer in time", Details: err.Error()}
		}
		return nil, &Error{Code: CodeIOFailure, Msg: "talking to weft-agent", Details: err.Error()}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, &Error{Code: CodeIOFailure, Msg: "reading weft-agent's answer", Details: err.Error()}
	}
	var r Response
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, &Error{Code: CodeDecodingFailure, Msg: "weft-agent's answer is not understood",
			Details: fmt.Sprintf("HTTP %d: %s", resp.StatusCode, truncate(data))}
	}
	if r.Error != nil {
		return nil, r.Error
	}
	return r.Result, nil
}

func truncate(b []byte) string {
	if len(b) > 200 {
		b = b[:200]
	}
	return string(b)
}

// DefaultTimeout bounds one plugin call.
const DefaultTimeout = 90 * time.Second
