package connpool

import (
	"net"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"
	"unsafe"

	"github.com/seed73091bf1/connpool/internal/testnet"
)

// The benchmarks in this file measure how the pool scales with the number of
// addresses it knows: how long a Get of a new address can wait while the
// cleaner sweeps, and how much heap the addresses cost, held and after churn.
// Run them with a fixed count, say -benchtime=10x: each iteration is large.

// scaleAddrs is how many addresses the scale benchmarks hold.
const scaleAddrs = 100_000

// scaleDial dials a testnet.FakeConn and keeps nothing. testnet.FakeDialer
// remembers every conn it dialed, which would put the dialer's memory into
// the heap figures, keep released conns alive, and make a new-address Get
// wait now and then for the dialer's slice to grow.
func scaleDial(address string) (net.Conn, error) {
	return &testnet.FakeConn{Address: address}, nil
}

// newScalePool returns a pool of FakeConns keeping up to 4 idle conns per
// address for a minute, so nothing expires during a benchmark.
func newScalePool(tb testing.TB) *Pool {
	tb.Helper()
	p, err := New(scaleDial, 4, time.Minute)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// closeScalePool closes p and fails the benchmark on a close error.
func closeScalePool(tb testing.TB, p *Pool) {
	tb.Helper()
	if err := p.Close(); err != nil {
		tb.Error(err)
	}
}

// scaleKeys returns n distinct addresses starting with prefix.
func scaleKeys(prefix string, n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = prefix + strconv.Itoa(i) + ":11211"
	}
	return keys
}

// fillIdle leaves one idle conn at each of keys.
func fillIdle(tb testing.TB, p *Pool, keys []string) {
	tb.Helper()
	for _, k := range keys {
		c, err := p.Get(k)
		if err != nil {
			tb.Fatal(err)
		}
		if err := c.Close(); err != nil {
			tb.Fatal(err)
		}
	}
}

// release closes the socket of c and takes it out of the pool's counts.
func release(tb testing.TB, c net.Conn) {
	tb.Helper()
	if err := c.(interface{ Release() error }).Release(); err != nil {
		tb.Fatal(err)
	}
}

// liveHeap collects garbage and returns the bytes of live heap objects.
func liveHeap() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// knownAddrs returns how many addresses p knows.
func knownAddrs(p *Pool) int { return len(p.Stats().Destinations) }

// median returns the median of xs, which it sorts.
func median[T int | int64 | float64 | time.Duration](xs []T) T {
	slices.Sort(xs)
	return xs[len(xs)/2]
}

// BenchmarkSweepNewAddressGet measures how long a Get of an address the pool
// has never seen waits while a sweep runs over 100,000 addresses that each
// hold one idle conn and none of which expires.
//
// Each iteration starts p.sweep in a goroutine and, once it has started,
// Gets (and Closes) new addresses from the benchmark goroutine until the
// sweep returns, at most one Get every probeEvery, timing each Get. Only the
// Gets that started before the sweep returned count; an iteration in which
// none did is run again. Between iterations, with the timer stopped, the new
// addresses are released and swept away, so every sweep covers 100,000
// addresses, and garbage is collected.
//
// Metrics:
//   - max-wait-µs: the longest counted Get over all iterations;
//   - median-max-wait-µs: the median over iterations of each iteration's
//     longest counted Get;
//   - sweep-ms: the median duration of p.sweep;
//   - gets/sweep: the median number of counted Gets per sweep.
func BenchmarkSweepNewAddressGet(b *testing.B) {
	// probeEvery spaces the Gets so that a sweep that lets them through
	// adds some hundreds of addresses, not tens of thousands, and
	// allocates too little to start a collection mid-sweep.
	const probeEvery = 10 * time.Microsecond

	p := newScalePool(b)
	defer closeScalePool(b, p)
	fillIdle(b, p, scaleKeys("10.1.", scaleAddrs))

	type probe struct {
		start time.Time
		wait  time.Duration
	}
	var (
		probes          []probe
		fresh           []string // the new addresses of this iteration
		seq             int
		iterMax, sweeps []time.Duration
		counted         []int
		worst           time.Duration
	)
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		runtime.GC()
		b.StartTimer()

		for attempt := 0; ; attempt++ {
			started, done := make(chan struct{}), make(chan struct{})
			var sweepStart, sweepEnd time.Time
			go func() {
				close(started)
				sweepStart = time.Now()
				p.sweep(p.clock())
				p.buckets.builds.Wait()
				sweepEnd = time.Now()
				close(done)
			}()
			<-started
			probes = probes[:0]
			var last time.Time
		probing:
			for {
				for time.Since(last) < probeEvery {
				}
				select {
				case <-done:
					break probing
				default:
				}
				addr := "new-" + strconv.Itoa(seq) + ":11211"
				seq++
				fresh = append(fresh, addr)
				last = time.Now()
				c, err := p.Get(addr)
				wait := time.Since(last)
				if err != nil {
					b.Fatal(err)
				}
				if err := c.Close(); err != nil {
					b.Fatal(err)
				}
				probes = append(probes, probe{last, wait})
			}

			n, m := 0, time.Duration(0)
			for _, pr := range probes {
				if pr.start.Before(sweepEnd) {
					n++
					m = max(m, pr.wait)
				}
			}
			if n > 0 {
				iterMax = append(iterMax, m)
				sweeps = append(sweeps, sweepEnd.Sub(sweepStart))
				counted = append(counted, n)
				worst = max(worst, m)
				break
			}
			if attempt == 100 {
				b.Fatal("no Get started while the sweep ran in 100 attempts")
			}
		}

		b.StopTimer()
		for _, addr := range fresh {
			c, err := p.Get(addr)
			if err != nil {
				b.Fatal(err)
			}
			release(b, c)
		}
		fresh = fresh[:0]
		p.sweep(p.clock())
		p.buckets.builds.Wait()
		b.StartTimer()
	}
	b.StopTimer()
	if n := knownAddrs(p); n != scaleAddrs {
		b.Fatalf("the pool knows %d addresses after the benchmark, want %d", n, scaleAddrs)
	}
	b.ReportMetric(float64(worst)/1e3, "max-wait-µs")
	b.ReportMetric(float64(median(iterMax))/1e3, "median-max-wait-µs")
	b.ReportMetric(float64(median(sweeps))/1e6, "sweep-ms")
	b.ReportMetric(float64(median(counted)), "gets/sweep")
}

// BenchmarkHeapPerIdleConn measures the live heap that 100,000 addresses
// holding one idle conn each cost: the heap after filling an empty pool,
// minus the heap with the empty pool, over 100,000. The address strings are
// made beforehand and stay alive throughout, so their bytes are not counted;
// the FakeConns are. Each iteration builds, measures and closes a pool of its
// own.
//
// Metrics (medians over iterations):
//   - B/idle-conn: all of it, FakeConn included;
//   - B/idle-conn-pool-only: minus unsafe.Sizeof(testnet.FakeConn{}) (64
//     bytes on 64-bit platforms, a size class of its own, so that is what
//     each FakeConn takes in the heap).
func BenchmarkHeapPerIdleConn(b *testing.B) {
	keys := scaleKeys("10.2.", scaleAddrs)
	fake := int64(unsafe.Sizeof(testnet.FakeConn{}))
	var per []float64
	b.ReportAllocs()
	for b.Loop() {
		p := newScalePool(b)
		before := liveHeap()
		fillIdle(b, p, keys)
		after := liveHeap()
		per = append(per, float64(after-before)/scaleAddrs)
		closeScalePool(b, p)
	}
	runtime.KeepAlive(keys)
	m := median(per)
	b.ReportMetric(m, "B/idle-conn")
	b.ReportMetric(m-float64(fake), "B/idle-conn-pool-only")
}

// BenchmarkRegistryAfterChurn measures the heap a pool keeps after 100,000
// addresses came and went, against the heap its live addresses need.
//
// Each iteration builds two pools. The live pool gets 1,000 addresses with
// one idle conn each. The churned pool gets the same 1,000 live addresses,
// then 100,000 other addresses that each dial a conn and Release it, so
// nothing stays bound to them; then p.sweep runs twice, and more times (up
// to 10 in all) until the pool knows only the live addresses. Each pool's
// figure is its live heap minus the live heap it had when empty. The live
// addresses' strings are made beforehand and stay alive, so neither figure
// counts them; the churned addresses' strings are made during the churn, so
// any the pool keeps are counted.
//
// Metrics (medians over iterations):
//   - B-retained-after-churn: the churned pool's heap after the sweeps;
//   - B-for-1000-live: the live pool's heap;
//   - churn/live: their ratio; the aim is at most 2;
//   - sweeps: how many sweeps it took to forget the churned addresses.
func BenchmarkRegistryAfterChurn(b *testing.B) {
	const live = 1000
	liveKeys := scaleKeys("10.3.", live)
	var retained, needed, ratios []float64
	var sweeps []int
	b.ReportAllocs()
	for b.Loop() {
		p := newScalePool(b)
		base := liveHeap()
		fillIdle(b, p, liveKeys)
		need := liveHeap() - base
		closeScalePool(b, p)

		p = newScalePool(b)
		base = liveHeap()
		fillIdle(b, p, liveKeys)
		for i := range scaleAddrs {
			c, err := p.Get("10.4." + strconv.Itoa(i) + ":11211")
			if err != nil {
				b.Fatal(err)
			}
			release(b, c)
		}
		n := 0
		for ; n < 2 || (n < 10 && knownAddrs(p) > live); n++ {
			p.sweep(p.clock())
			p.buckets.builds.Wait()
		}
		if k := knownAddrs(p); k != live {
			b.Fatalf("the pool knows %d addresses after %d sweeps, want %d", k, n, live)
		}
		kept := liveHeap() - base
		closeScalePool(b, p)

		retained = append(retained, float64(kept))
		needed = append(needed, float64(need))
		ratios = append(ratios, float64(kept)/float64(need))
		sweeps = append(sweeps, n)
	}
	runtime.KeepAlive(liveKeys)
	b.ReportMetric(median(retained), "B-retained-after-churn")
	b.ReportMetric(median(needed), "B-for-1000-live")
	b.ReportMetric(median(ratios), "churn/live")
	b.ReportMetric(float64(median(sweeps)), "sweeps")
}

// BenchmarkHeapPerAddress measures the heap a pool takes per address with
// one idle conn, at 100,000 addresses, after each address saw a number of
// checkouts (Get and Close): Checkouts=1 is an address used once,
// Checkouts=32 one used often. Quiet=true measures again after two sweeps,
// as for addresses that then saw no checkout for a while. The FakeConns are
// subtracted, so the metric is the pool's own memory.
//
// The conns are addrConns, which, like a *net.TCPConn, return addresses
// they hold rather than allocate them; FakeConn makes two strings per
// conn for its addresses, which are the conn's memory, not the pool's.
func BenchmarkHeapPerAddress(b *testing.B) {
	keys := scaleKeys("10.4.", scaleAddrs)
	fake := int64(unsafe.Sizeof(addrConn{}))
	for _, checkouts := range []int{1, 32} {
		for _, quiet := range []bool{false, true} {
			name := "Checkouts=" + strconv.Itoa(checkouts) + "/Quiet=" + strconv.FormatBool(quiet)
			b.Run(name, func(b *testing.B) {
				var per []float64
				for b.Loop() {
					p, err := New(func(string) (net.Conn, error) { return &addrConn{}, nil }, 4, time.Minute)
					if err != nil {
						b.Fatal(err)
					}
					before := liveHeap()
					for range checkouts {
						fillIdle(b, p, keys)
					}
					if quiet {
						p.sweep(p.readClock())
						p.sweep(p.readClock())
					}
					after := liveHeap()
					per = append(per, float64(after-before)/scaleAddrs-float64(fake))
					closeScalePool(b, p)
				}
				runtime.KeepAlive(keys)
				b.ReportMetric(median(per), "B/address")
			})
		}
	}
}

// BenchmarkHeapPerIdleConnTCP measures the heap each further idle conn
// takes at one address, on real loopback TCP sockets with the liveness
// check on. The 1,000 sockets are dialed before the first heap reading and
// stay reachable until after the second, so the metric is the pool's own
// memory per conn, not the socket's.
func BenchmarkHeapPerIdleConnTCP(b *testing.B) {
	const conns = 1000
	srv := testnet.StartEcho(b)
	var per []float64
	for b.Loop() {
		dialed := make([]net.Conn, 0, conns)
		for range conns {
			nc, err := net.Dial("tcp", srv.Addr())
			if err != nil {
				b.Fatal(err)
			}
			dialed = append(dialed, nc)
		}
		next := 0
		p, err := New(func(string) (net.Conn, error) { next++; return dialed[next-1], nil }, conns, time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		c, err := p.Get(srv.Addr()) // the address's bucket, which is not per conn
		if err != nil {
			b.Fatal(err)
		}
		held := make([]net.Conn, 0, conns)
		before := liveHeap()
		for range conns - 1 {
			c, err := p.Get(srv.Addr())
			if err != nil {
				b.Fatal(err)
			}
			held = append(held, c)
		}
		for _, c := range held {
			if err := c.Close(); err != nil {
				b.Fatal(err)
			}
		}
		held = nil
		// The address's spare handles are the address's memory, not the
		// conns': two sweeps find it quiet and drop them.
		p.sweep(p.readClock())
		p.sweep(p.readClock())
		after := liveHeap()
		per = append(per, float64(after-before)/(conns-1))
		runtime.KeepAlive(held)
		runtime.KeepAlive(dialed)
		c.Close()
		closeScalePool(b, p)
	}
	b.ReportMetric(median(per), "B/idle-conn")
}

// addrConn is a conn that does nothing and returns the same addresses
// every time, allocating nothing.
type addrConn struct{ net.Conn }

var fixedAddr net.Addr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 11211}

func (*addrConn) LocalAddr() net.Addr  { return fixedAddr }
func (*addrConn) RemoteAddr() net.Addr { return fixedAddr }
func (*addrConn) Close() error         { return nil }
