package kubelet

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// probe runs the container's startup, readiness and liveness probes while it runs.
func (c *containerRunner) probe(ctx context.Context) {
	spec := c.spec
	if spec.StartupProbe != nil {
		if !c.loop(ctx, spec.StartupProbe, func(ok bool, failures int32, msg string) bool {
			if ok {
				c.mu.Lock()
				c.started = true
				c.mu.Unlock()
				c.pr.changed()
				return false // done
			}
			if failures >= threshold(spec.StartupProbe.FailureThreshold, 3) {
				c.pr.event(corev1.EventTypeWarning, "Unhealthy", "Startup probe failed: %s", msg)
				c.kill()
				return false
			}
			return true
		}) {
			return
		}
	}
	if spec.ReadinessProbe == nil {
		c.mu.Lock()
		c.ready = c.state.Running != nil
		c.mu.Unlock()
		c.pr.changed()
	} else {
		go c.loop(ctx, spec.ReadinessProbe, func(ok bool, failures int32, msg string) bool {
			c.mu.Lock()
			was := c.ready
			switch {
			case ok:
				c.ready = true
			case failures >= threshold(spec.ReadinessProbe.FailureThreshold, 3) || !was:
				c.ready = false
			}
			now := c.ready
			c.mu.Unlock()
			if was != now {
				c.pr.changed()
				if !now {
					c.pr.event(corev1.EventTypeWarning, "Unhealthy", "Readiness probe failed: %s", msg)
				}
			}
			return true
		})
	}
	if spec.LivenessProbe != nil {
		c.loop(ctx, spec.LivenessProbe, func(ok bool, failures int32, msg string) bool {
			if !ok && failures >= threshold(spec.LivenessProbe.FailureThreshold, 3) {
				c.pr.event(corev1.EventTypeWarning, "Unhealthy", "Liveness probe failed: %s; restarting container %s", msg, spec.Name)
				c.kill()
				return false
			}
			return true
		})
	}
}

func threshold(v, def int32) int32 {
	if v <= 0 {
		return def
	}
	return v
}

// loop runs a probe every period until handle returns false or ctx ends; it returns false
// when ctx ended.
func (c *containerRunner) loop(ctx context.Context, p *corev1.Probe, handle func(ok bool, failures int32, msg string) bool) bool {
	if !sleepCtx(ctx, time.Duration(p.InitialDelaySeconds)*time.Second) {
		return false
	}
	period := time.Duration(threshold(p.PeriodSeconds, 10)) * time.Second
	var failures int32
	for {
		ok, msg := c.check(ctx, p)
		if ok {
			failures = 0
		} else {
			failures++
		}
		if !handle(ok, failures, msg) {
			return true
		}
		if !sleepCtx(ctx, period) {
			return false
		}
	}
}

// check runs one probe.
func (c *containerRunner) check(ctx context.Context, p *corev1.Probe) (bool, string) {
	timeout := time.Duration(threshold(p.TimeoutSeconds, 1)) * time.Second
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c.pr.mu.Lock()
	host := ""
	if len(c.pr.ips) > 0 {
		host = c.pr.ips[0]
	}
	c.pr.mu.Unlock()
	switch {
	case p.HTTPGet != nil:
		h := p.HTTPGet
		if h.Host != "" {
			host = h.Host
		}
		port, err := c.port(h.Port)
		if err != nil {
			return false, err.Error()
		}
		scheme := "http"
		if h.Scheme == corev1.URISchemeHTTPS {
			scheme = "https"
		}
		url := fmt.Sprintf("%s://%s%s", scheme, net.JoinHostPort(host, strconv.Itoa(port)), h.Path)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false, err.Error()
		}
		for _, hd := range h.HTTPHeaders {
			req.Header.Add(hd.Name, hd.Value)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return false, fmt.Sprintf("HTTP probe failed with statuscode: %d", resp.StatusCode)
		}
		return true, ""
	case p.TCPSocket != nil:
		if p.TCPSocket.Host != "" {
			host = p.TCPSocket.Host
		}
		port, err := c.port(p.TCPSocket.Port)
		if err != nil {
			return false, err.Error()
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return false, err.Error()
		}
		conn.Close()
		return true, ""
	case p.Exec != nil:
		out, err := c.outputOf(ctx, p.Exec.Command)
		if err != nil {
			return false, fmt.Sprintf("%v: %s", err, out)
		}
		return true, ""
	}
	return false, "only httpGet, tcpSocket and exec probes run in the lab"
}

// port resolves a probe port, by number or by the container's port name.
func (c *containerRunner) port(p intstr.IntOrString) (int, error) {
	if p.Type == intstr.Int {
		return p.IntValue(), nil
	}
	for _, cp := range c.spec.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("container %s has no port named %q", c.spec.Name, p.StrVal)
}
