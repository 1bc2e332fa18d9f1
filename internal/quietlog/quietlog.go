// Package quietlog keeps a component's log honest about errors: what libraries report as an
// error but is part of normal operation is logged as information instead. Today that is
// client-go's leader election: a standby replica finding the lease held (or created a moment
// before by the other replica), or a renewal that times out and is retried. A lost election
// still ends the manager, which reports it as an error.
package quietlog

import (
	"strings"

	"github.com/go-logr/logr"
)

// Wrap returns l with those errors logged as information.
func Wrap(l logr.Logger) logr.Logger {
	return logr.New(&sink{LogSink: l.GetSink()})
}

type sink struct {
	logr.LogSink
	name string
}

func (s *sink) Error(err error, msg string, kv ...any) {
	if strings.Contains(s.name, "leaderelection") {
		s.LogSink.Info(0, msg+" (retrying)", append(kv, "reason", errString(err))...)
		return
	}
	s.LogSink.Error(err, msg, kv...)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func (s *sink) WithName(name string) logr.LogSink {
	full := name
	if s.name != "" {
		full = s.name + "." + name
	}
	return &sink{LogSink: s.LogSink.WithName(name), name: full}
}

func (s *sink) WithValues(kv ...any) logr.LogSink {
	return &sink{LogSink: s.LogSink.WithValues(kv...), name: s.name}
}
