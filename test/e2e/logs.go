package e2e

import (
	"regexp"
	"strings"
	"testing"
)

// errorLine is a log line at error level: zap's JSON, klog's E1206 prefix, or an embedded
// WireGuard device's ERROR.
var errorLine = regexp.MustCompile(`"level":"error"|^E\d{4} |^ERROR: `)

// NoErrorLogs checks that weft's components (operator, agents, gateways, weft-dns) in every
// cluster of the lab have logged no error: normal operation, start-up included, is logged as
// information, so that an error line means something to look at.
func NoErrorLogs(t *testing.T, l *Lab) {
	t.Helper()
	for _, c := range l.Clusters {
		pods, _ := l.KubectlRun(c, "", "-n", "weft-system", "get", "pods", "-o", "name")
		for _, pod := range strings.Fields(pods) {
			logs, code := l.KubectlRun(c, "", "-n", "weft-system", "logs", pod, "--all-containers")
			if code != 0 {
				t.Errorf("%s %s: kubectl logs: exit %d: %s", c, pod, code, logs)
				continue
			}
			var bad []string
			for _, line := range strings.Split(logs, "\n") {
				if errorLine.MatchString(line) {
					bad = append(bad, line)
				}
			}
			if len(bad) > 0 {
				t.Errorf("%s %s logged %d errors:\n%s", c, pod, len(bad), strings.Join(bad, "\n"))
			}
		}
	}
}
