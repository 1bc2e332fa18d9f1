// Package apiretry tells a broken connection to the API server (reset, closed, timed out)
// from an answer, so that callers retry the first quietly for a while and report the
// second. It imports no controller-runtime (the agent's flags stay its own).
package apiretry

import (
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Grace is how long broken connections are retried quietly; Retry how soon.
const (
	Grace = 30 * time.Second
	Retry = time.Second
)

// Transient says whether err is a connection to the API server that broke, not an answer.
func Transient(err error) bool {
	if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) || apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	// HTTP/2 closes a connection whose health-check ping went unanswered (or that it was told
	// to close) under the requests on it; its errors are not exported values.
	return strings.Contains(err.Error(), "http2: client connection force closed") ||
		strings.Contains(err.Error(), "http2: client connection lost")
}
