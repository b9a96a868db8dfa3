// Command connpool-demo shows connpool and its balancer under load.
//
// With no arguments it starts five line-echo backends on loopback, one of
// them slow, and drives concurrent requests through a balancer.Pool for ten
// seconds. A third of the way in it stops one backend, and at half way it
// restarts it. Events are printed as they happen, with the time since the
// start: the stop and the restart, each ejection and re-admission by the
// balancer, and the first failed request of each kind (later ones of the
// same kind are only counted). Every interval (-i, 1 s) it reports the
// requests per second, p50 and p99 latency of the interval and since the
// start, failed requests, dials and failed dials. On a terminal that report
// is a live table per backend, redrawn in place; elsewhere, or with -plain,
// it is one line per interval. At the end it prints a table per backend and
// the errors by kind, and exits with status 0 if no request failed, 1 if
// some did, and 2 for bad flags.
//
//	go run ./cmd/connpool-demo
//	go run ./cmd/connpool-demo -policy maglev -c 32 -d 20s -i 500ms
//	go run ./cmd/connpool-demo -plain    # status lines, not the live table
//	go run ./cmd/connpool-demo -backends 10.0.0.1:7,10.0.0.2:7
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/balancer"
)

func main() {
	cfg, err := parseArgs(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		os.Exit(2)
	}
	os.Exit(run(cfg, !cfg.plain && isTerminal(os.Stdout), os.Stdout, os.Stderr))
}

// run drives the demo and returns the exit status: 0 if no request failed.
// With live set, the status is a table redrawn in place with ANSI escapes.
func run(cfg config, live bool, stdout, stderr io.Writer) int {
	backends, err := startBackends(cfg.backends)
	if err != nil {
		_, _ = fmt.Fprintln(stderr, "connpool-demo:", err)
		return 1
	}
	defer closeBackends(backends)

	dial := func(ctx context.Context, address string) (net.Conn, error) {
		d := net.Dialer{Timeout: time.Second}
		return d.DialContext(ctx, "tcp", address)
	}
	pool, err := connpool.New(nil, 16, 30*time.Second, connpool.WithDialContext(dial))
	if err != nil {
		_, _ = fmt.Fprintln(stderr, "connpool-demo:", err)
		return 1
	}
	defer func() { _ = pool.Close() }() // idle conns to loopback backends; nothing to report at exit

	start := time.Now()
	con := newConsole(stdout, live, start)
	defer con.Close()
	l := &load{con: con, byAddr: map[string]*backend{}}
	var eps []balancer.Endpoint
	var addrs []string
	for _, b := range backends {
		eps = append(eps, balancer.Endpoint{Address: b.addr})
		addrs = append(addrs, b.addr)
		l.byAddr[b.addr] = b
	}
	l.errs = newErrorLog(addrs)
	bal := cfg.newBalancer(nil, balancer.WithEjection(3, time.Second, 4*time.Second))
	l.bp = balancer.NewPool(pool, bal, balancer.WithTrace(trace(con, l.byAddr)))
	l.bp.Update(eps)

	printHeader(con, cfg, backends)
	m := newMeter(start, backends, pool, bal, &l.failed)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for id := range cfg.concurrency {
		wg.Go(func() { l.client(id, stop) })
	}
	drive(cfg, start, victim(backends), con, m, stderr)
	close(stop)
	wg.Wait()
	con.Status(m.sample(time.Now())) // the last interval, up to the end of the last request
	con.EndLive()
	printSummary(con, m, l)
	if l.failed.Load() > 0 {
		return 1
	}
	return 0
}

// trace prints ejections and re-admissions as the balancer makes them.
func trace(con *console, byAddr map[string]*backend) *balancer.Trace {
	return &balancer.Trace{
		Ejected: func(e balancer.EjectionInfo) {
			if b := byAddr[e.Address]; b != nil {
				b.ejections.Add(1)
			}
			con.Event("backend %s ejected for %.1fs (%s)",
				e.Address, e.Duration.Seconds(), strings.ReplaceAll(string(e.Reason), "_", " "))
		},
		Readmitted: func(addr string, out time.Duration) {
			con.Event("backend %s re-admitted after %.1fs", addr, out.Seconds())
		},
	}
}

// victim returns the backend the script stops and restarts: the last
// built-in one, or nil for real backends, which the demo leaves alone.
func victim(backends []*backend) *backend {
	if b := backends[len(backends)-1]; b.server != nil {
		return b
	}
	return nil
}

// drive runs the script until cfg.duration has passed since start: it
// stops the victim a third of the way in and restarts it at half way, each
// on its own timer, and reports the status every cfg.interval. The last
// interval, cut short by the end if need be, is left to the caller to
// report once the clients have stopped.
func drive(cfg config, start time.Time, victim *backend, con *console, m *meter, stderr io.Writer) {
	var stopped, restarted <-chan time.Time
	if victim != nil {
		stopTimer, restartTimer := time.NewTimer(cfg.duration/3), time.NewTimer(cfg.duration/2)
		defer stopTimer.Stop()
		defer restartTimer.Stop()
		stopped, restarted = stopTimer.C, restartTimer.C
	}
	deadline := start.Add(cfg.duration)
	next := func(n int) time.Duration { // until the n-th report, or the end
		return time.Until(start.Add(min(time.Duration(n)*cfg.interval, cfg.duration)))
	}
	report := time.NewTimer(next(1))
	defer report.Stop()
	for n := 1; ; {
		select {
		case <-stopped:
			con.Event("stopping backend %s: refusing conns, closing open ones", victim.addr)
			victim.server.Refuse()
		case <-restarted:
			if err := victim.server.Restart(); err != nil {
				_, _ = fmt.Fprintln(stderr, "connpool-demo: restart:", err)
				continue
			}
			con.Event("restarted backend %s", victim.addr)
		case now := <-report.C:
			if !now.Before(deadline) {
				return
			}
			con.Status(m.sample(now))
			n++
			report.Reset(next(n))
		}
	}
}
