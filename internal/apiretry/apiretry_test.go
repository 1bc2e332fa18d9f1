package apiretry

import (
	"errors"
	"fmt"
	"net/url"
	"syscall"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

func TestTransientTellsBrokenConnectionsFromAnswers(t *testing.T) {
	for err, want := range map[error]bool{
		fmt.Errorf("patch: %w", syscall.ECONNRESET):                           true,
		apierrors.NewTimeoutError("slow", 1):                                  true,
		apierrors.NewForbidden(schema.GroupResource{Resource: "x"}, "y", nil): false,
		apierrors.NewNotFound(schema.GroupResource{Resource: "x"}, "y"):       false,
		errors.New("something else"):                                          false,
		// As client-go returns it when HTTP/2 closed the connection under the request.
		&url.Error{Op: "Patch", URL: "https://10.96.0.1:443/apis/x", Err: errors.New("http2: client connection force closed via ClientConn.Close")}: true,
		&url.Error{Op: "Get", URL: "https://10.96.0.1:443/api", Err: errors.New("http2: client connection lost")}:                                   true,
	} {
		if got := Transient(err); got != want {
			t.Errorf("Transient(%v) = %v, want %v", err, got, want)
		}
	}
}
