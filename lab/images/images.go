// Package images maps container image names to programs on this machine, for the lab
// kubelet. The lab pulls nothing: an image is a directory of commands (first on PATH) and a
// default entrypoint. The table is the one place that says which images the lab can run.
package images

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	weftimages "github.com/weft-net/weft/internal/images"
)

// Image is what a container of that image runs.
type Image struct {
	// Name is the repository the image was matched by.
	Name string
	// Bin holds the image's commands; it is first on PATH.
	Bin string
	// Closed images see only Bin on PATH (busybox), not the host's directories.
	Closed bool
	// Entrypoint is the default command when a container gives none.
	Entrypoint []string
	// Cmd is the image's default arguments (its CMD): what runs after the entrypoint when
	// the container gives neither command nor args.
	Cmd []string
}

// hostPath is the PATH tail of images that are not closed.
const hostPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// PATH returns the PATH a container of this image starts with.
func (im Image) PATH() string {
	if im.Closed {
		return im.Bin
	}
	return im.Bin + ":" + hostPath
}

// ErrUnknownImage is returned for images the table does not know.
var ErrUnknownImage = errors.New("image is not in the lab's image table")

// Table resolves image references.
type Table struct {
	images map[string]Image // by repository
}

// Repository strips a reference to its repository: no tag, no digest, no docker.io/library.
func Repository(ref string) string {
	if i := strings.Index(ref, "@"); i >= 0 {
		ref = ref[:i]
	}
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		ref = ref[:i]
	}
	for _, p := range []string{"docker.io/library/", "docker.io/", "index.docker.io/library/", "library/"} {
		ref = strings.TrimPrefix(ref, p)
	}
	return ref
}

// Resolve returns the image for a reference, or ErrUnknownImage listing what is known.
func (t *Table) Resolve(ref string) (Image, error) {
	if im, ok := t.images[Repository(ref)]; ok {
		return im, nil
	}
	return Image{}, fmt.Errorf("%w: %q (the lab runs: %s)", ErrUnknownImage, ref, strings.Join(t.Known(), ", "))
}

// Known lists the repositories in the table.
func (t *Table) Known() []string {
	names := make([]string, 0, len(t.images))
	for n := range t.images {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Command resolves a container's command and args against the image, the way a container
// runtime would: command replaces the entrypoint, args follow; the program is looked up in the
// image's PATH, and an absolute path names the image's command of that base name first.
func (im Image) Command(command, args []string) ([]string, error) {
	argv := slices.Clone(command)
	if len(argv) == 0 {
		argv = slices.Clone(im.Entrypoint)
		if len(args) == 0 {
			args = im.Cmd
		}
	}
	argv = append(argv, args...)
	if len(argv) == 0 {
		return nil, fmt.Errorf("image %s has no entrypoint and the container gives no command", im.Name)
	}
	prog := argv[0]
	if strings.Contains(prog, "/") {
		if p := filepath.Join(im.Bin, filepath.Base(prog)); executable(p) {
			argv[0] = p
			return argv, nil
		}
		if !im.Closed && executable(prog) {
			return argv, nil
		}
		return nil, fmt.Errorf("%s: no such executable in image %s", prog, im.Name)
	}
	for _, dir := range filepath.SplitList(im.PATH()) {
		if p := filepath.Join(dir, prog); executable(p) {
			argv[0] = p
			return argv, nil
		}
	}
	return nil, fmt.Errorf("%s: executable not found in image %s (PATH %s)", prog, im.Name, im.PATH())
}

// hostTools links the host's programs of these names that exist (a missing one is left
// out: in an image with busybox, busybox's applet of that name stays).
func hostTools(names ...string) map[string]string {
	links := map[string]string{}
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			links[n] = p
		}
	}
	return links
}

func executable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// Config says where the lab's programs are.
type Config struct {
	// Dir receives one directory of commands per image.
	Dir string
	// WeftBin holds weft's binaries: image ghcr.io/weft-net/<name> runs WeftBin/<name>.
	WeftBin string
	// CoreDNS is the coredns binary.
	CoreDNS string
	// Multicall is the weftctl binary, which acts as agnhost and pause when called by those names.
	Multicall string
}

// Lab builds the lab's table, creating the image directories under cfg.Dir.
func Lab(cfg Config) (*Table, error) {
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		return nil, fmt.Errorf("busybox not found (apt-get install busybox): %w", err)
	}
	socat, err := exec.LookPath("socat")
	if err != nil {
		return nil, fmt.Errorf("socat not found (apt-get install socat): %w", err)
	}
	t := &Table{images: map[string]Image{}}
	mk := func(name string, closed bool, entry []string, withBusybox bool, links map[string]string) error {
		dir := filepath.Join(cfg.Dir, strings.NewReplacer("/", "_", ".", "_").Replace(name))
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if withBusybox {
			if out, err := exec.Command(busybox, "--install", "-s", dir).CombinedOutput(); err != nil {
				return fmt.Errorf("busybox --install: %w: %s", err, out)
			}
		}
		for link, target := range links {
			_ = os.Remove(filepath.Join(dir, link))
			if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
				return err
			}
		}
		im := Image{Name: name, Bin: dir, Closed: closed, Entrypoint: entry}
		if entry == nil {
			im.Cmd = []string{"sh"} // no entrypoint: a shell is the default command
		}
		t.images[name] = im
		return nil
	}
	steps := []error{
		mk("busybox", true, []string{"sh"}, true, nil),
		mk("registry.k8s.io/e2e-test-images/busybox", true, []string{"sh"}, true, nil),
		mk("alpine/socat", true, []string{"socat"}, true, map[string]string{"socat": socat}),
		// The network toolbox the mcs-api conformance suite asks from: busybox plus the host's
		// BIND nslookup/dig/host and OpenBSD nc (whose options and output it parses).
		mk("nicolaka/netshoot", true, nil, true, hostTools("nslookup", "dig", "host", "nc")),
		mk("registry.k8s.io/e2e-test-images/agnhost", true, []string{"agnhost"}, true,
			map[string]string{"agnhost": cfg.Multicall}),
		mk("registry.k8s.io/pause", true, []string{"pause"}, false, map[string]string{"pause": cfg.Multicall}),
		mk("registry.k8s.io/coredns/coredns", true, []string{"coredns"}, false, map[string]string{"coredns": cfg.CoreDNS}),
	}
	if err := errors.Join(steps...); err != nil {
		return nil, err
	}
	// weft's images, from the table their Dockerfile is generated from: each of its
	// binaries from WeftBin, and the host's copies of the programs its packages carry.
	for _, im := range weftimages.All {
		links := hostTools(im.Programs()...)
		for _, c := range im.Commands {
			p := filepath.Join(cfg.WeftBin, c)
			if !executable(p) {
				return nil, fmt.Errorf("image %s: %s is not built (make build)", im.Name, p)
			}
			links[c] = p
		}
		if err := mk(weftimages.Registry+"/"+im.Name, true, []string{im.Commands[0]}, false, links); err != nil {
			return nil, err
		}
	}
	return t, nil
}
