package quietlog

import (
	"errors"
	"strings"
	"testing"

	"github.com/go-logr/logr/funcr"
)

func TestLeaderElectionErrorsAreInformation(t *testing.T) {
	var lines []string
	l := Wrap(funcr.New(func(prefix, args string) { lines = append(lines, prefix+" "+args) }, funcr.Options{}))
	l.WithName("leaderelection").Error(errors.New("leases \"x\" already exists"), "Error initially creating lease lock")
	l.WithName("controller").Error(errors.New("boom"), "Reconciler error")
	if len(lines) != 2 {
		t.Fatalf("got %d lines: %q", len(lines), lines)
	}
	if strings.Contains(lines[0], `"error"`) || !strings.Contains(lines[0], "already exists") || !strings.Contains(lines[0], "(retrying)") {
		t.Errorf("leader election: %s; want information with the reason", lines[0])
	}
	if !strings.Contains(lines[1], `"error"="boom"`) {
		t.Errorf("other errors stay errors: %s", lines[1])
	}
}
