package testnet

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// NginxConfig is what a test sets of the nginx that StartNginx runs. The
// server always listens on 127.0.0.1, on a port chosen at run time, and
// answers every request with 200 and the body "ok\n".
type NginxConfig struct {
	// KeepaliveTimeout is nginx's keepalive_timeout: how long it keeps an
	// idle keep-alive connection open before closing it. Zero means 1s.
	KeepaliveTimeout time.Duration
	// KeepaliveRequests is nginx's keepalive_requests: how many requests
	// one connection may serve. Zero means 1,000,000, so that no
	// connection is closed for its request count during a test.
	KeepaliveRequests int
}

// Nginx is an nginx process started by StartNginx, run from a temporary
// directory that holds its configuration, pid file, logs and temp paths.
// It never touches the system's nginx service or its files.
type Nginx struct {
	addr   string
	dir    string
	errLog string
	proc   *process
}

// NginxPath returns the nginx binary: the one on PATH, or else
// /usr/sbin/nginx (Debian's, which is not on a non-root user's PATH).
func NginxPath() (string, error) {
	if bin, err := exec.LookPath("nginx"); err == nil {
		return bin, nil
	}
	return exec.LookPath("/usr/sbin/nginx")
}

// StartNginx starts nginx in the foreground (daemon off, one process) on a
// loopback port chosen at run time, waits until it answers a request, and
// stops it when the test ends. It skips the test if nginx is not installed
// (Debian: apt-get install nginx-light).
//
// The port is found by listening on 127.0.0.1:0 and closing the listener,
// since nginx takes its port from the configuration; if another process
// takes the port in between, nginx exits at once and StartNginx tries again
// with a new one.
func StartNginx(tb testing.TB, cfg NginxConfig) *Nginx {
	tb.Helper()
	bin, err := NginxPath()
	if err != nil {
		tb.Skipf("nginx is not installed (Debian: apt-get install nginx-light): %v", err)
	}
	if cfg.KeepaliveTimeout == 0 {
		cfg.KeepaliveTimeout = time.Second
	}
	if cfg.KeepaliveRequests == 0 {
		cfg.KeepaliveRequests = 1_000_000
	}
	info, err := nginxBuildInfo(bin)
	if err != nil {
		tb.Fatalf("testnet: %v", err)
	}
	const attempts = 5
	for attempt := 1; ; attempt++ {
		n, err := startNginx(bin, info, tb.TempDir(), cfg)
		if err == nil {
			tb.Cleanup(func() {
				if err := n.Stop(); err != nil {
					tb.Errorf("testnet: stopping nginx: %v", err)
				}
			})
			return n
		}
		if !errors.Is(err, errPortTaken) || attempt == attempts {
			tb.Fatalf("testnet: %v", err)
		}
	}
}

// nginxInfo is what StartNginx needs to know of an nginx build.
type nginxInfo struct {
	errorLogFlag bool            // -e is supported (nginx 1.19.5 and later)
	tempPaths    map[string]bool // *_temp_path directives the build knows
}

// nginxBuildInfo reads bin's help (for -e) and configure arguments (for the
// modules built without, whose temp path directives would be rejected).
func nginxBuildInfo(bin string) (nginxInfo, error) {
	help, _ := exec.Command(bin, "-h").CombinedOutput() // exits 0; the output is what matters
	build, err := exec.Command(bin, "-V").CombinedOutput()
	if err != nil {
		return nginxInfo{}, fmt.Errorf("%s -V: %v: %s", bin, err, build)
	}
	info := nginxInfo{
		errorLogFlag: bytes.Contains(help, []byte("-e filename")),
		tempPaths:    map[string]bool{"client_body_temp_path": true},
	}
	for _, module := range []string{"proxy", "fastcgi", "uwsgi", "scgi"} {
		if !bytes.Contains(build, []byte("--without-http_"+module+"_module")) {
			info.tempPaths[module+"_temp_path"] = true
		}
	}
	return info, nil
}

// nginxConf returns a configuration that keeps every file nginx writes in
// dir and serves "ok\n" on addr.
func nginxConf(dir, addr string, info nginxInfo, cfg NginxConfig) string {
	path := func(name string) string { return strconv.Quote(filepath.Join(dir, name)) }
	var b strings.Builder
	fmt.Fprintf(&b, "daemon off;\nmaster_process off;\nworker_processes 1;\n")
	fmt.Fprintf(&b, "pid %s;\nerror_log %s info;\n", path("nginx.pid"), path("error.log"))
	fmt.Fprintf(&b, "events {\n\tworker_connections 1024;\n}\n")
	fmt.Fprintf(&b, "http {\n\taccess_log %s;\n", path("access.log"))
	for _, d := range []string{"client_body_temp_path", "proxy_temp_path", "fastcgi_temp_path", "uwsgi_temp_path", "scgi_temp_path"} {
		if info.tempPaths[d] {
			fmt.Fprintf(&b, "\t%s %s;\n", d, path(strings.TrimSuffix(d, "_path")))
		}
	}
	fmt.Fprintf(&b, "\tkeepalive_timeout %dms;\n\tkeepalive_requests %d;\n",
		cfg.KeepaliveTimeout.Milliseconds(), cfg.KeepaliveRequests)
	fmt.Fprintf(&b, "\tserver {\n\t\tlisten %s;\n\t\tlocation / {\n\t\t\treturn 200 \"ok\\n\";\n\t\t}\n\t}\n}\n", addr)
	return b.String()
}

// startNginx starts one nginx process in dir on a fresh port and waits
// until it answers or exits.
func startNginx(bin string, info nginxInfo, dir string, cfg NginxConfig) (*Nginx, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()

	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(nginxConf(dir, addr, info, cfg)), 0o644); err != nil {
		return nil, err
	}
	n := &Nginx{addr: addr, dir: dir, errLog: filepath.Join(dir, "error.log")}
	args := []string{"-p", dir + string(filepath.Separator), "-c", conf}
	if info.errorLogFlag {
		// Without -e, nginx opens its built-in error log path (often under
		// /var/log) before it reads the configuration.
		args = append(args, "-e", n.errLog)
	}
	if n.proc, err = startProcess("nginx on "+addr, dir, filepath.Join(dir, "stderr.log"), bin, args...); err != nil {
		return nil, err
	}
	if err := n.proc.waitReady(func() error { return probeNginx(addr) }, n.Logs); err != nil {
		return nil, err
	}
	return n, nil
}

// probeNginx sends one request to addr on a connection of its own.
func probeNginx(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	resp, err := RawGet(c)
	if err != nil {
		return err
	}
	if resp.Status != 200 {
		return fmt.Errorf("status %d", resp.Status)
	}
	return nil
}

// Addr returns the address nginx listens on, 127.0.0.1:port.
func (n *Nginx) Addr() string { return n.addr }

// Logs returns nginx's error log and standard error, for failure messages.
func (n *Nginx) Logs() string {
	var b strings.Builder
	for _, name := range []string{"error.log", "stderr.log"} {
		if data, err := os.ReadFile(filepath.Join(n.dir, name)); err == nil && len(data) > 0 {
			fmt.Fprintf(&b, "%s:\n%s", name, data)
		}
	}
	return b.String()
}

// Stop asks nginx to shut down gracefully (SIGQUIT), kills it if it has not
// exited within 10 seconds, and waits for it. It may be called more than
// once. It returns an error if nginx had to be killed or exited with an
// error of its own.
func (n *Nginx) Stop() error {
	p := n.proc
	select {
	case <-p.exited:
		return nil
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGQUIT); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case <-p.exited:
		if p.waitErr != nil {
			return fmt.Errorf("nginx exited with %v: %s", p.waitErr, n.Logs())
		}
		return nil
	case <-timer.C:
		_ = p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("nginx did not quit on SIGQUIT within 10s and was killed")
	}
}

// RawResponse is an HTTP/1.1 response read by RawGet.
type RawResponse struct {
	Status int
	Header map[string]string // lower-case names; the last value of a repeated header
	Body   []byte
	// Close is set when the server said it closes the connection
	// (Connection: close).
	Close bool
}

// RawGet sends "GET / HTTP/1.1" on rw and reads the response: status line,
// headers, and a body of exactly Content-Length bytes. It reads nothing
// beyond the response, so that rw can carry the next request: the head is
// read a byte at a time (a buffered reader would read ahead into whatever
// follows), the body with io.ReadFull. Chunked bodies are not supported.
//
// It returns io.EOF if the connection ended before the first byte of the
// response, and io.ErrUnexpectedEOF if it ended within the response.
func RawGet(rw io.ReadWriter) (*RawResponse, error) {
	if _, err := io.WriteString(rw, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return nil, err
	}
	r := &byteReader{r: rw}
	line, err := r.line()
	if err != nil {
		return nil, err // io.EOF if nothing came
	}
	proto, rest, _ := strings.Cut(line, " ")
	code, _, _ := strings.Cut(rest, " ")
	resp := &RawResponse{Header: map[string]string{}}
	if resp.Status, err = strconv.Atoi(code); err != nil || !strings.HasPrefix(proto, "HTTP/1.") {
		return nil, fmt.Errorf("testnet: bad status line %q", line)
	}
	for {
		line, err := r.line()
		if err != nil {
			return nil, noEOF(err)
		}
		if line == "" {
			break
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("testnet: bad header line %q", line)
		}
		resp.Header[strings.ToLower(strings.TrimSpace(name))] = strings.TrimSpace(value)
	}
	if te := resp.Header["transfer-encoding"]; te != "" {
		return nil, fmt.Errorf("testnet: Transfer-Encoding %q is not supported", te)
	}
	resp.Close = strings.EqualFold(resp.Header["connection"], "close")
	length, err := strconv.Atoi(resp.Header["content-length"])
	if err != nil || length < 0 {
		return nil, fmt.Errorf("testnet: bad or missing Content-Length %q", resp.Header["content-length"])
	}
	resp.Body = make([]byte, length)
	if _, err := io.ReadFull(rw, resp.Body); err != nil {
		return nil, noEOF(err)
	}
	return resp, nil
}

// noEOF turns io.EOF, met within a response or reply, into
// io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// byteReader reads a response head a byte at a time.
type byteReader struct {
	r    io.Reader
	buf  [1]byte
	read bool // a byte was read
}

// maxLine bounds a status or header line.
const maxLine = 8 << 10

// line returns the next line without its CRLF (or LF). It returns io.EOF
// only if the reader ended before its first byte ever, and
// io.ErrUnexpectedEOF if it ended later.
func (br *byteReader) line() (string, error) {
	var b []byte
	for {
		n, err := br.r.Read(br.buf[:])
		if n == 1 {
			br.read = true
			if br.buf[0] == '\n' {
				return strings.TrimSuffix(string(b), "\r"), nil
			}
			if b = append(b, br.buf[0]); len(b) > maxLine {
				return "", errors.New("testnet: line too long")
			}
			continue
		}
		if err == io.EOF && br.read {
			return "", io.ErrUnexpectedEOF
		}
		if err != nil {
			return "", err
		}
	}
}
