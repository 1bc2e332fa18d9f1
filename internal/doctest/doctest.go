// Package doctest runs the command blocks of documentation pages that are marked for a lab,
// so that a page that drifts from the code fails a test. A block is marked by the comment
// line right before it:
//
//	<!-- docs-test: demo [fails] [retry=30s] -->
//
// A ```sh block runs as one bash script and must succeed. In a ```console block, each line
// "$ command" runs and the lines after it, up to the next command, are its expected output:
// each shown line must match a line of the output, in any order (see LineMatches:
// ages, addresses, keys, times and generated names may differ; "..." skips). With "fails" the
// commands must fail (bad input the page shows refused); with "retry" a block that fails is
// run again until it passes or the time is up (for state that settles).
package doctest

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"time"
)

// Block is a marked block of a page.
type Block struct {
	Line  int    // of the block's opening fence
	Lang  string // sh or console
	Body  []string
	Fails bool
	Retry time.Duration
}

var docMarker = regexp.MustCompile(`^<!-- docs-test: (\S+)((?: \S+)*) -->$`)

// Blocks reads the blocks of a page marked for tag.
func Blocks(path, tag string) ([]Block, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Block
	var pending *Block
	var in *Block
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case in != nil:
			if strings.TrimSpace(line) == "```" {
				out = append(out, *in)
				in = nil
				continue
			}
			in.Body = append(in.Body, line)
		case pending != nil:
			lang, ok := strings.CutPrefix(strings.TrimSpace(line), "```")
			if !ok {
				return nil, fmt.Errorf("%s:%d: a docs-test marker must come right before a fenced block", path, n)
			}
			if lang != "sh" && lang != "console" {
				return nil, fmt.Errorf("%s:%d: a marked block is ```sh or ```console, not ```%s", path, n, lang)
			}
			pending.Line, pending.Lang = n, lang
			in, pending = pending, nil
		default:
			m := docMarker.FindStringSubmatch(strings.TrimSpace(line))
			if m == nil || m[1] != tag {
				continue
			}
			b := &Block{}
			for _, opt := range strings.Fields(m[2]) {
				switch {
				case opt == "fails":
					b.Fails = true
				case strings.HasPrefix(opt, "retry="):
					d, err := time.ParseDuration(strings.TrimPrefix(opt, "retry="))
					if err != nil {
						return nil, fmt.Errorf("%s:%d: %w", path, n, err)
					}
					b.Retry = d
				default:
					return nil, fmt.Errorf("%s:%d: unknown docs-test option %q", path, n, opt)
				}
			}
			pending = b
		}
	}
	if in != nil || pending != nil {
		return nil, fmt.Errorf("%s: a marked block is not closed", path)
	}
	return out, sc.Err()
}

// Run runs the block in dir with env; the error says what differed from the page.
func (b Block) Run(dir string, env []string) error {
	if b.Lang == "sh" {
		out, err := shell(dir, env, strings.Join(b.Body, "\n"))
		if err != nil {
			return fmt.Errorf("the block failed: %w\n%s", err, out)
		}
		return nil
	}
	for _, c := range consoleCommands(b.Body) {
		out, err := shell(dir, env, c.command)
		if b.Fails != (err != nil) {
			return fmt.Errorf("$ %s: exit %w (the page says it %s)\n%s", c.command, err, map[bool]string{true: "fails", false: "succeeds"}[b.Fails], out)
		}
		if err := outputMatches(c.want, out); err != nil {
			return fmt.Errorf("$ %s: %w\nthe page shows:\n%s\nit printed:\n%s", c.command, err, strings.Join(c.want, "\n"), out)
		}
	}
	return nil
}

func shell(dir string, env []string, script string) (string, error) {
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", script)
	cmd.Dir, cmd.Env = dir, env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

type consoleCommand struct {
	command string
	want    []string
}

// consoleCommands splits a console block into commands ("$ " lines, with their "\"
// continuations) and the output shown after each.
func consoleCommands(body []string) []consoleCommand {
	var out []consoleCommand
	for i := 0; i < len(body); i++ {
		line := body[i]
		if cmd, ok := strings.CutPrefix(line, "$ "); ok {
			for strings.HasSuffix(cmd, "\\") && i+1 < len(body) {
				i++
				cmd += "\n" + body[i] // bash continues the line after the backslash
			}
			out = append(out, consoleCommand{command: cmd})
			continue
		}
		if len(out) > 0 && strings.TrimSpace(line) != "" {
			out[len(out)-1].want = append(out[len(out)-1].want, line)
		}
	}
	return out
}

// outputMatches checks the shown lines against the output: each shown line matches a line
// of the output, no output line matching two (the order of lines may differ: validation
// errors and lists are not always printed in one order).
func outputMatches(want []string, out string) error {
	got := strings.Split(out, "\n")
	used := make([]bool, len(got))
	for _, w := range want {
		if strings.TrimSpace(w) == "..." {
			continue
		}
		found := false
		for j := range got {
			if !used[j] && LineMatches(w, got[j]) {
				found, used[j] = true, true
				break
			}
		}
		if !found {
			return fmt.Errorf("no line matches %q", w)
		}
	}
	return nil
}

var (
	durationToken = regexp.MustCompile(`^(\d+(\.\d+)?(ms|µs|s|m|h|d))+$`)
	ipToken       = regexp.MustCompile(`^\[?"?(https?://)?\d{1,3}(\.\d{1,3}){3}(/\d+|:\d+)?"?\]?,?$`)
	keyToken      = regexp.MustCompile(`^[A-Za-z0-9+/]{42,43}=$`)
	timeToken     = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d`)
	generated     = regexp.MustCompile(`^(.*?[a-z0-9])-([a-z0-9]{5,10}-)?[a-z0-9]{5}$`)
	hashToken     = regexp.MustCompile(`^[a-z0-9]*[0-9][a-z0-9]*$`)
)

// LineMatches says whether an output line is what a page shows: the same words, where a
// shown word that is an age or duration, an address (or URL of one), a WireGuard key or a
// time matches any
// word of that kind, "<anything>" any word, a trailing "..." the rest of the line, and a
// generated name (hello-594998f5d9-bt4mc) any name generated from the same stem.
func LineMatches(want, got string) bool {
	w, g := strings.Fields(want), strings.Fields(got)
	for i, wt := range w {
		if wt == "..." && i == len(w)-1 {
			return true
		}
		if i >= len(g) {
			return false
		}
		if !tokenMatches(wt, g[i]) {
			return false
		}
	}
	return len(w) == len(g)
}

func tokenMatches(w, g string) bool {
	if w == g || strings.HasPrefix(w, "<") && strings.HasSuffix(w, ">") {
		return true
	}
	for _, kind := range []*regexp.Regexp{durationToken, ipToken, keyToken, timeToken} {
		if kind.MatchString(w) && kind.MatchString(g) {
			return true
		}
	}
	if mw, mg := generated.FindStringSubmatch(w), generated.FindStringSubmatch(g); mw != nil && mg != nil && mw[1] == mg[1] {
		return true
	}
	// weft's hashed names (weft-wg30117f54, weft-4rovmhmh3nrtaus6).
	if pw, sw, ok := strings.Cut(w, "weft-"); ok && pw == "" {
		if pg, sg, ok := strings.Cut(g, "weft-"); ok && pg == "" {
			return len(sw) == len(sg) && hashToken.MatchString(sw) && hashToken.MatchString(sg)
		}
	}
	return false
}
