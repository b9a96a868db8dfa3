package testnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Dnsmasq is a dnsmasq process answering DNS on 127.0.0.1, UDP and TCP, on
// a port chosen at run time, started by StartDnsmasq. It answers from a
// hosts file the test writes (SetHosts, then Reload) and from the SRV
// records given at start, forwards nothing, and never touches the
// system's resolver configuration or service.
type Dnsmasq struct {
	tb    testing.TB
	bin   string
	dir   string
	addr  string
	hosts string
	args  []string // the SRV records, as --srv-host options

	mu   sync.Mutex // protects proc
	proc *process
}

// dnsmasqReadyName is a name the hosts file always holds, which the start
// looks up to see that the server answers.
const dnsmasqReadyName = "ready.connpool.test"

// StartDnsmasq starts dnsmasq with an empty hosts file and the SRV
// records srv, each in dnsmasq's --srv-host form
// ("_svc._tcp.example.test,target.test,8000,0,30": name, target, port,
// priority, weight). It kills the server when the test ends. The test
// fails, naming the package to install, if dnsmasq is not on PATH.
func StartDnsmasq(tb testing.TB, srv ...string) *Dnsmasq {
	tb.Helper()
	bin, err := exec.LookPath("dnsmasq")
	if err != nil {
		bin, err = exec.LookPath("/usr/sbin/dnsmasq") // not on a user's PATH
	}
	if err != nil {
		tb.Fatalf("testnet: dnsmasq is not installed; install it (Debian: apt-get install dnsmasq-base) to run this test: %v", err)
	}
	d := &Dnsmasq{tb: tb, bin: bin, dir: tb.TempDir()}
	d.hosts = filepath.Join(d.dir, "hosts")
	for _, s := range srv {
		d.args = append(d.args, "--srv-host="+s)
	}
	tb.Cleanup(d.Kill)
	d.SetHosts("")
	for attempt := 1; ; attempt++ {
		d.addr = freeUDPAndTCPPort(tb)
		err := d.start()
		if err == nil {
			return d
		}
		if !errors.Is(err, errPortTaken) || attempt == 20 {
			tb.Fatalf("testnet: %v", err)
		}
	}
}

// freeUDPAndTCPPort returns 127.0.0.1:port for a port the kernel chose that
// is free for both UDP and TCP at the moment, since dnsmasq binds both: a
// port free for UDP alone is often in use by one of the many TCP conns
// that tests in other packages open meanwhile.
func freeUDPAndTCPPort(tb testing.TB) string {
	tb.Helper()
	for range 100 {
		tcp, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatalf("testnet: finding a free port: %v", err)
		}
		addr := tcp.Addr().String()
		udp, err := net.ListenPacket("udp", addr)
		tcp.Close()
		if err == nil {
			udp.Close()
			return addr
		}
	}
	tb.Fatal("testnet: no port free for both UDP and TCP in 100 tries")
	return ""
}

// Addr returns the address the server answers on, 127.0.0.1:port.
func (d *Dnsmasq) Addr() string { return d.addr }

// SetHosts writes the hosts file: lines of "address name". The server
// reads it at start and at Reload.
func (d *Dnsmasq) SetHosts(lines string) {
	d.tb.Helper()
	content := "127.0.0.1 " + dnsmasqReadyName + "\n" + lines + "\n"
	if err := os.WriteFile(d.hosts, []byte(content), 0o644); err != nil {
		d.tb.Fatalf("testnet: writing the hosts file: %v", err)
	}
}

// Reload sends SIGHUP: dnsmasq clears its cache and reads the hosts file
// again. It returns once the server answers from the new file; the
// caller's names are not checked, only that the server is up.
func (d *Dnsmasq) Reload() {
	d.tb.Helper()
	d.mu.Lock()
	p := d.proc
	d.mu.Unlock()
	if p == nil {
		d.tb.Fatal("testnet: dnsmasq is not running")
		return
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		d.tb.Fatalf("testnet: signalling dnsmasq: %v", err)
	}
	// dnsmasq handles the signal before the next query it reads.
	if err := d.ready(); err != nil {
		d.tb.Fatalf("testnet: dnsmasq after SIGHUP: %v", err)
	}
}

// Kill sends SIGKILL and waits until the process has exited. It does
// nothing if the server is not running.
func (d *Dnsmasq) Kill() {
	d.mu.Lock()
	p := d.proc
	d.proc = nil
	d.mu.Unlock()
	if p == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// Resolver returns a resolver that sends every query to this server.
func (d *Dnsmasq) Resolver() *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var nd net.Dialer
			return nd.DialContext(ctx, network, d.addr)
		},
	}
}

// Logs returns the output of the server, for failure messages.
func (d *Dnsmasq) Logs() string {
	data, err := os.ReadFile(filepath.Join(d.dir, "dnsmasq.out"))
	if err != nil {
		return err.Error()
	}
	return string(data)
}

// ready looks the ready name up.
func (d *Dnsmasq) ready() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	addrs, err := d.Resolver().LookupHost(ctx, dnsmasqReadyName)
	if err == nil && (len(addrs) != 1 || addrs[0] != "127.0.0.1") {
		err = fmt.Errorf("%s resolved to %v", dnsmasqReadyName, addrs)
	}
	return err
}

// start runs dnsmasq on d.addr and waits until it answers.
func (d *Dnsmasq) start() error {
	_, port, err := net.SplitHostPort(d.addr)
	if err != nil {
		return err
	}
	args := []string{
		"--keep-in-foreground", "--conf-file=/dev/null", "--pid-file=",
		"--port=" + port, "--listen-address=127.0.0.1", "--bind-interfaces",
		"--no-resolv", "--no-hosts", "--addn-hosts=" + d.hosts, "--no-negcache",
		"--log-facility=-",
	}
	if os.Geteuid() == 0 {
		args = append(args, "--user=root") // read the test's files; do not drop to nobody
	}
	args = append(args, d.args...)
	p, err := startProcess("dnsmasq on "+d.addr, d.dir, filepath.Join(d.dir, "dnsmasq.out"), d.bin, args...)
	if err != nil {
		return err
	}
	if err := p.waitReady(d.ready, d.Logs); err != nil {
		return err
	}
	d.mu.Lock()
	d.proc = p
	d.mu.Unlock()
	return nil
}
