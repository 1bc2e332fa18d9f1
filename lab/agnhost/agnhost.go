// Package agnhost is the lab's stand-in for registry.k8s.io/e2e-test-images/agnhost: the
// subcommands tests use most (netexec, pause, serve-hostname, connect, porter), with the same
// flags and HTTP endpoints. It is not the upstream program; unknown subcommands say so.
package agnhost

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Main runs agnhost with argv (argv[0] is the subcommand) and returns the exit code.
func Main(argv []string) int {
	if len(argv) == 0 {
		fmt.Fprintln(os.Stderr, usage)
		return 2
	}
	cmds := map[string]func([]string) error{
		"netexec": netexec, "pause": pause, "serve-hostname": serveHostname,
		"connect": connect, "porter": porter,
	}
	run, ok := cmds[argv[0]]
	if !ok {
		fmt.Fprintf(os.Stderr, "agnhost: unknown subcommand %q\n%s\n", argv[0], usage)
		return 2
	}
	if err := run(argv[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "agnhost "+argv[0]+":", err)
		return 1
	}
	return 0
}

const usage = "agnhost (weft lab build) supports: netexec, pause, serve-hostname, connect, porter"

func pause([]string) error {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	return nil
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}

func netexec(args []string) error {
	fs := flag.NewFlagSet("netexec", flag.ContinueOnError)
	httpPort := fs.Int("http-port", 8080, "HTTP port")
	udpPort := fs.Int("udp-port", 8081, "UDP port; -1 disables")
	_ = fs.Int("sctp-port", -1, "ignored")
	delay := fs.Int("delay-shutdown", 0, "seconds to keep serving after SIGTERM")
	if err := fs.Parse(args); err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintf(w, "NOW: %v", time.Now())
	})
	mux.HandleFunc("/hostname", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, hostname()) })
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, r.URL.Query().Get("msg")) })
	mux.HandleFunc("/clientip", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, r.RemoteAddr) })
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "ok") })
	mux.HandleFunc("/header", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, r.Header.Get(r.URL.Query().Get("key"))) })
	mux.HandleFunc("/exit", func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(r.URL.Query().Get("code"))
		go func() { time.Sleep(50 * time.Millisecond); os.Exit(code) }()
		fmt.Fprint(w, "exiting")
	})
	mux.HandleFunc("/shell", func(w http.ResponseWriter, r *http.Request) {
		out, err := exec.Command("sh", "-c", r.URL.Query().Get("shellCommand")).CombinedOutput()
		res := map[string]string{"output": string(out)}
		if err != nil {
			res["error"] = err.Error()
		}
		_ = json.NewEncoder(w).Encode(res)
	})
	mux.HandleFunc("/dial", dial)
	if *udpPort > 0 {
		go func() { _ = serveUDP(*udpPort) }()
	}
	srv := &http.Server{Addr: ":" + strconv.Itoa(*httpPort), Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		time.Sleep(time.Duration(*delay) * time.Second)
		_ = srv.Close()
	}()
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// dial asks another netexec for something (?request=hostname&host=...&port=...&protocol=http|udp&tries=N).
func dial(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	tries, _ := strconv.Atoi(q.Get("tries"))
	if tries < 1 {
		tries = 1
	}
	addr := net.JoinHostPort(q.Get("host"), q.Get("port"))
	var res struct {
		Responses []string `json:"responses"`
		Errors    []string `json:"errors"`
	}
	for range tries {
		var out string
		var err error
		if q.Get("protocol") == "udp" {
			out, err = askUDP(addr, q.Get("request"))
		} else {
			out, err = askHTTP("http://" + addr + "/" + strings.TrimPrefix(q.Get("request"), "/"))
		}
		if err != nil {
			res.Errors = append(res.Errors, err.Error())
		} else {
			res.Responses = append(res.Responses, out)
		}
	}
	_ = json.NewEncoder(w).Encode(res)
}

func askHTTP(url string) (string, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func askUDP(addr, request string) (string, error) {
	conn, err := net.DialTimeout("udp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte(request)); err != nil {
		return "", err
	}
	buf := make([]byte, 2048)
	n, err := conn.Read(buf)
	return string(buf[:n]), err
}

// serveUDP answers "hostname", "echo <text>" and "clientip".
func serveUDP(port int) error {
	pc, err := net.ListenPacket("udp", ":"+strconv.Itoa(port))
	if err != nil {
		return err
	}
	buf := make([]byte, 2048)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return err
		}
		req := strings.TrimSpace(string(buf[:n]))
		var out string
		switch {
		case req == "hostname":
			out = hostname()
		case strings.HasPrefix(req, "echo "):
			out = strings.TrimPrefix(req, "echo ")
		case req == "clientip":
			out = from.String()
		default:
			out = "unknown request " + req
		}
		_, _ = pc.WriteTo([]byte(out), from)
	}
}

func serveHostname(args []string) error {
	fs := flag.NewFlagSet("serve-hostname", flag.ContinueOnError)
	port := fs.Int("port", 9376, "port")
	udp := fs.Bool("udp", false, "serve UDP")
	tcp := fs.Bool("tcp", false, "serve raw TCP")
	httpOn := fs.Bool("http", true, "serve HTTP")
	if err := fs.Parse(args); err != nil {
		return err
	}
	errs := make(chan error, 3)
	if *udp {
		go func() {
			pc, err := net.ListenPacket("udp", ":"+strconv.Itoa(*port))
			if err != nil {
				errs <- err
				return
			}
			buf := make([]byte, 1024)
			for {
				_, from, err := pc.ReadFrom(buf)
				if err != nil {
					errs <- err
					return
				}
				_, _ = pc.WriteTo([]byte(hostname()), from)
			}
		}()
	}
	if *tcp {
		go func() {
			l, err := net.Listen("tcp", ":"+strconv.Itoa(*port))
			if err != nil {
				errs <- err
				return
			}
			for {
				c, err := l.Accept()
				if err != nil {
					errs <- err
					return
				}
				_, _ = c.Write([]byte(hostname()))
				_ = c.Close()
			}
		}()
	}
	if *httpOn && !*tcp {
		go func() {
			errs <- http.ListenAndServe(":"+strconv.Itoa(*port), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				fmt.Fprint(w, hostname())
			}))
		}()
	}
	return <-errs
}

// connect exits 0 when a TCP connection to host:port succeeds.
func connect(args []string) error {
	fs := flag.NewFlagSet("connect", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 5*time.Second, "timeout")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: connect [--timeout d] host:port")
	}
	c, err := net.DialTimeout("tcp", fs.Arg(0), *timeout)
	if err != nil {
		return err
	}
	return c.Close()
}

// porter serves, on each port named by an environment variable SERVE_PORT_<n>, the variable's
// value (and SERVE_TLS_PORT_<n> is served as plain HTTP here).
func porter([]string) error {
	errs := make(chan error, 1)
	n := 0
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		for _, prefix := range []string{"SERVE_PORT_", "SERVE_TLS_PORT_"} {
			if port, ok := strings.CutPrefix(k, prefix); ok {
				n++
				go func() {
					errs <- http.ListenAndServe(":"+port, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
						fmt.Fprint(w, v)
					}))
				}()
			}
		}
	}
	if n == 0 {
		return errors.New("no SERVE_PORT_<port> variables")
	}
	return <-errs
}
