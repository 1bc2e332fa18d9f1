package images

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRepository(t *testing.T) {
	for ref, want := range map[string]string{
		"busybox":                                           "busybox",
		"busybox:1.36":                                      "busybox",
		"docker.io/library/busybox:1.36":                    "busybox",
		"docker.io/alpine/socat:1.7.4.3":                    "alpine/socat",
		"registry.k8s.io/e2e-test-images/agnhost:2.53":      "registry.k8s.io/e2e-test-images/agnhost",
		"localhost:5000/team/app:v1":                        "localhost:5000/team/app",
		"ghcr.io/weft-net/weft-operator@sha256:0123456789a": "ghcr.io/weft-net/weft-operator",
	} {
		if got := Repository(ref); got != want {
			t.Errorf("Repository(%q) = %q, want %q", ref, got, want)
		}
	}
}

func TestCommandResolution(t *testing.T) {
	dir := t.TempDir()
	prog := filepath.Join(dir, "agnhost")
	if err := os.WriteFile(prog, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	im := Image{Name: "agnhost", Bin: dir, Closed: true, Entrypoint: []string{"agnhost"}}
	tb := &Table{images: map[string]Image{"registry.k8s.io/e2e-test-images/agnhost": im}}

	cases := []struct {
		cmd, args []string
		want      string
		wantErr   string
	}{
		{nil, []string{"netexec", "--http-port=8080"}, prog + " netexec --http-port=8080", ""},
		{[]string{"/agnhost", "pause"}, nil, prog + " pause", ""},
		{[]string{"agnhost"}, []string{"pause"}, prog + " pause", ""},
		{[]string{"/bin/ls"}, nil, "", "no such executable in image agnhost"},
		{[]string{"curl"}, nil, "", "curl: executable not found in image agnhost"},
	}
	for _, c := range cases {
		got, err := im.Command(c.cmd, c.args)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("Command(%v, %v) error = %v, want %q", c.cmd, c.args, err, c.wantErr)
			}
			continue
		}
		if err != nil || strings.Join(got, " ") != c.want {
			t.Errorf("Command(%v, %v) = %v, %v; want %q", c.cmd, c.args, got, err, c.want)
		}
	}

	// An image with only a default command (CMD, like netshoot's shell): args replace it.
	sh := filepath.Join(dir, "sh")
	if err := os.WriteFile(sh, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	shell := Image{Name: "nicolaka/netshoot", Bin: dir, Closed: true, Cmd: []string{"sh"}}
	for _, c := range []struct {
		cmd, args []string
		want      string
	}{
		{nil, nil, sh},
		{nil, []string{"/bin/sh", "-ec", "sleep 1"}, sh + " -ec sleep 1"},
		{[]string{"sh"}, []string{"-c", "true"}, sh + " -c true"},
	} {
		if got, err := shell.Command(c.cmd, c.args); err != nil || strings.Join(got, " ") != c.want {
			t.Errorf("CMD image: Command(%v, %v) = %v, %v; want %q", c.cmd, c.args, got, err, c.want)
		}
	}

	if _, err := tb.Resolve("registry.k8s.io/e2e-test-images/agnhost:2.53"); err != nil {
		t.Errorf("agnhost with a tag: %v", err)
	}
	_, err := tb.Resolve("nginx:1.27")
	if !errors.Is(err, ErrUnknownImage) || !strings.Contains(err.Error(), `"nginx:1.27"`) ||
		!strings.Contains(err.Error(), "registry.k8s.io/e2e-test-images/agnhost") {
		t.Errorf("unknown image error = %v; want ErrUnknownImage naming the image and the known ones", err)
	}
}
