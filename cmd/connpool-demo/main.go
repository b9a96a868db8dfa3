// Command connpool-demo shows connpool and its balancer under load.
//
// With no arguments it starts five line-echo backends on loopback, one of
// them slow, drives concurrent requests through a balancer.Pool for about ten
// seconds, stops one backend midway and brings it back, and prints a status
// line every second and a table per backend at the end. It exits with status
// 0 if no request failed.
//
//	go run ./cmd/connpool-demo
//	go run ./cmd/connpool-demo -policy maglev -c 32 -d 20s
//	go run ./cmd/connpool-demo -backends 10.0.0.1:7,10.0.0.2:7
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/balancer"
	"github.com/seed73091bf1/connpool/internal/testnet"
)

// policies are the balancer policies the demo can run.
var policies = map[string]func([]balancer.Endpoint, ...balancer.Option) balancer.Balancer{
	"round-robin": func(e []balancer.Endpoint, o ...balancer.Option) balancer.Balancer {
		return balancer.NewRoundRobin(e, o...)
	},
	"weighted": func(e []balancer.Endpoint, o ...balancer.Option) balancer.Balancer {
		return balancer.NewWeightedRoundRobin(e, o...)
	},
	"random": func(e []balancer.Endpoint, o ...balancer.Option) balancer.Balancer {
		return balancer.NewRandom(e, o...)
	},
	"least-request": func(e []balancer.Endpoint, o ...balancer.Option) balancer.Balancer {
		return balancer.NewLeastRequest(e, o...)
	},
	"peak-ewma": func(e []balancer.Endpoint, o ...balancer.Option) balancer.Balancer {
		return balancer.NewPeakEWMA(e, o...)
	},
	"maglev": func(e []balancer.Endpoint, o ...balancer.Option) balancer.Balancer {
		return balancer.NewMaglev(e, o...)
	},
}

func main() {
	names := make([]string, 0, len(policies))
	for name := range policies {
		names = append(names, name)
	}
	slices.Sort(names)

	concurrency := flag.Int("c", 16, "number of concurrent clients")
	duration := flag.Duration("d", 10*time.Second, "how long to drive load")
	policy := flag.String("policy", "peak-ewma", "balancer policy: "+strings.Join(names, ", "))
	backendList := flag.String("backends", "", "comma-separated host:port of real line-echo servers to drive instead of the built-in ones (no backend is stopped)")
	flag.Usage = func() {
		_, _ = fmt.Fprintf(flag.CommandLine.Output(), "Usage: connpool-demo [flags]\n\n"+
			"Drives load through connpool and its balancer against five built-in\n"+
			"loopback backends (one slow), stopping one midway, and reports.\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	newBalancer, ok := policies[*policy]
	if !ok || *concurrency < 1 || *duration <= 0 {
		flag.Usage()
		os.Exit(2)
	}
	os.Exit(run(*concurrency, *duration, newBalancer, *policy, *backendList))
}

// backend is one destination and what the demo saw of it.
type backend struct {
	addr   string
	server *testnet.EchoServer // nil for real backends

	mu        sync.Mutex // protects latencies
	latencies []time.Duration
	requests  atomic.Int64
	ejections atomic.Int64
}

func run(concurrency int, duration time.Duration, newBalancer func([]balancer.Endpoint, ...balancer.Option) balancer.Balancer, policy, backendList string) int {
	backends, err := startBackends(backendList)
	if err != nil {
		fmt.Fprintln(os.Stderr, "connpool-demo:", err)
		return 1
	}
	defer func() {
		for _, b := range backends {
			if b.server != nil {
				b.server.Close()
			}
		}
	}()

	dial := func(ctx context.Context, address string) (net.Conn, error) {
		d := net.Dialer{Timeout: time.Second}
		return d.DialContext(ctx, "tcp", address)
	}
	pool, err := connpool.New(nil, 16, 30*time.Second, connpool.WithDialContext(dial))
	if err != nil {
		fmt.Fprintln(os.Stderr, "connpool-demo:", err)
		return 1
	}
	defer func() { _ = pool.Close() }() // idle conns to loopback backends; nothing to report at exit

	var eps []balancer.Endpoint
	byAddr := map[string]*backend{}
	for _, b := range backends {
		eps = append(eps, balancer.Endpoint{Address: b.addr})
		byAddr[b.addr] = b
	}
	// Ejections and re-admissions are printed by the balancer's trace
	// hooks, as they happen.
	start := time.Now()
	trace := &balancer.Trace{
		Ejected: func(e balancer.EjectionInfo) {
			if b := byAddr[e.Address]; b != nil {
				b.ejections.Add(1)
			}
			fmt.Printf("%5.1fs  backend %s ejected for %.1fs (%s)\n",
				time.Since(start).Seconds(), e.Address, e.Duration.Seconds(), strings.ReplaceAll(string(e.Reason), "_", " "))
		},
		Readmitted: func(addr string, out time.Duration) {
			fmt.Printf("%5.1fs  backend %s re-admitted after %.1fs\n", time.Since(start).Seconds(), addr, out.Seconds())
		},
	}
	bal := newBalancer(nil, balancer.WithEjection(3, time.Second, 4*time.Second))
	bp := balancer.NewPool(pool, bal, balancer.WithTrace(trace))
	bp.Update(eps)

	fmt.Printf("connpool-demo: %d backends, policy %s, %d clients, %v\n", len(backends), policy, concurrency, duration)
	for _, b := range backends {
		fmt.Printf("  backend %s\n", describe(b))
	}

	var (
		failed   atomic.Int64
		done     atomic.Int64
		allMu    sync.Mutex
		all      []time.Duration
		stop     = make(chan struct{})
		wg       sync.WaitGroup
		deadline = time.Now().Add(duration)
	)
	for w := range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				ctx := balancer.WithKey(context.Background(), "key-"+strconv.Itoa(rand.IntN(1000)))
				addr, err := request(ctx, bp, fmt.Sprintf("client %d request %d", w, i))
				elapsed := time.Since(start)
				if err != nil {
					failed.Add(1)
					fmt.Printf("  request failed: %v\n", err)
					continue
				}
				done.Add(1)
				b := byAddr[addr]
				b.requests.Add(1)
				b.mu.Lock()
				b.latencies = append(b.latencies, elapsed)
				b.mu.Unlock()
				allMu.Lock()
				all = append(all, elapsed)
				allMu.Unlock()
			}
		}()
	}

	// The script: stop one backend a third of the way in, restart it at
	// half way, and report once a second.
	victim := backends[len(backends)-1]
	stopAt, restartAt := time.Now().Add(duration/3), time.Now().Add(duration/2)
	stopped, restarted := false, false
	tick := time.NewTicker(time.Second)
	var last int64
	for now := range tick.C {
		if !stopped && victim.server != nil && now.After(stopAt) {
			victim.server.Refuse()
			stopped = true
			fmt.Printf("%5.1fs  stopped backend %s\n", time.Since(start).Seconds(), victim.addr)
		}
		if stopped && !restarted && now.After(restartAt) {
			if err := victim.server.Restart(); err != nil {
				fmt.Fprintln(os.Stderr, "connpool-demo: restart:", err)
			} else {
				fmt.Printf("%5.1fs  restarted backend %s\n", time.Since(start).Seconds(), victim.addr)
			}
			restarted = true
		}
		n := done.Load()
		s := pool.Stats()
		allMu.Lock()
		p50, p99 := percentile(all, 50), percentile(all, 99)
		allMu.Unlock()
		reuse := 0.0
		if s.Reuses+s.Dials > 0 {
			reuse = 100 * float64(s.Reuses) / float64(s.Reuses+s.Dials)
		}
		fmt.Printf("%5.1fs  %6d req/s  errors %d  dials %d  reuse %.1f%%  p50 %v  p99 %v\n",
			time.Since(start).Seconds(), n-last, failed.Load(), s.Dials, reuse, round(p50), round(p99))
		last = n
		if now.After(deadline) {
			break
		}
	}
	tick.Stop()
	close(stop)
	wg.Wait()

	fmt.Printf("\n%-22s %9s %10s %10s %7s %10s\n", "backend", "requests", "p50", "p99", "dials", "ejections")
	for _, b := range backends {
		b.mu.Lock()
		p50, p99 := percentile(b.latencies, 50), percentile(b.latencies, 99)
		b.mu.Unlock()
		var dials int64
		for _, d := range pool.Stats().Destinations {
			if d.Address == b.addr {
				dials = d.Dials
			}
		}
		fmt.Printf("%-22s %9d %10v %10v %7d %10d\n", b.addr, b.requests.Load(), round(p50), round(p99), dials, b.ejections.Load())
	}
	s := pool.Stats()
	fmt.Printf("\npool: total %d, idle %d, in use %d; dials %d, dial errors %d, reuses %d, dead at checkout %d, released %d\n",
		s.Total, s.Idle, s.InUse, s.Dials, s.DialErrors, s.Reuses, s.ClosedDeadAtCheckout, s.Released)
	fmt.Printf("requests: %d ok, %d failed\n", done.Load(), failed.Load())
	if failed.Load() > 0 {
		return 1
	}
	return 0
}

// request sends one line and reads the echo. A failure may be a conn the
// backend closed while it sat idle or a backend that just went down: the conn
// is released (reporting the failure to the balancer) and the request
// retried, up to three tries in all, as a client of an idempotent service
// would.
func request(ctx context.Context, bp *balancer.Pool, msg string) (string, error) {
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		conn, err := bp.Get(ctx)
		if err != nil {
			return "", err
		}
		c := conn.(*balancer.Conn)
		err = c.SetDeadline(time.Now().Add(2 * time.Second))
		if err == nil {
			err = testnet.RoundTrip(c, msg)
		}
		if err == nil {
			err = c.SetDeadline(time.Time{})
		}
		if err == nil {
			addr := c.Address()
			_ = c.Close() // the request succeeded; a close error cannot change that
			return addr, nil
		}
		_ = c.Release() // the request's error is the one to report
		lastErr = fmt.Errorf("%s: %w", c.Address(), err)
	}
	return "", lastErr
}

// startBackends starts the built-in backends, or names the real ones.
func startBackends(list string) ([]*backend, error) {
	if list != "" {
		var out []*backend
		for _, addr := range strings.Split(list, ",") {
			if addr = strings.TrimSpace(addr); addr != "" {
				out = append(out, &backend{addr: addr})
			}
		}
		if len(out) == 0 {
			return nil, errors.New("-backends names no address")
		}
		return out, nil
	}
	var out []*backend
	for i := range 5 {
		delay := time.Millisecond
		if i == 1 {
			delay = 20 * time.Millisecond
		}
		srv, err := testnet.ListenFault("127.0.0.1:0", testnet.Faults{Delay: delay})
		if err != nil {
			for _, b := range out {
				b.server.Close()
			}
			return nil, err
		}
		out = append(out, &backend{addr: srv.Addr(), server: srv})
	}
	return out, nil
}

func describe(b *backend) string {
	if b.server == nil {
		return b.addr
	}
	return b.addr + " (built-in)"
}

func percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[(len(s)-1)*p/100]
}

func round(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }
