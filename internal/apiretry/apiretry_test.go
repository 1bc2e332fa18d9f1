package apiretry

import (
	"errors"
	"fmt"
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
	} {
		if got := Transient(err); got != want {
			t.Errorf("Transient(%v) = %v, want %v", err, got, want)
		}
	}
}
