//go:build integration

package discovery

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/balancer"
	"github.com/seed73091bf1/connpool/internal/testnet"
)

// backendIPs are the loopback addresses the backends listen on.
var backendIPs = []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"}

// startBackends starts an echo server on each of ips, all on one port
// chosen at run time, and returns the port.
func startBackends(t *testing.T, ips []string) string {
	t.Helper()
	for attempt := 0; attempt < 10; attempt++ {
		var servers []*testnet.EchoServer
		port := "0"
		ok := true
		for _, ip := range ips {
			s, err := testnet.ListenEchoOn(net.JoinHostPort(ip, port))
			if err != nil {
				ok = false
				break
			}
			servers = append(servers, s)
			_, port, _ = net.SplitHostPort(s.Addr())
		}
		if ok {
			for _, s := range servers {
				t.Cleanup(s.Close)
			}
			return port
		}
		for _, s := range servers {
			s.Close()
		}
	}
	t.Fatal("no port free on every backend address")
	return ""
}

func newBalancedPool(t *testing.T, b balancer.Balancer) (*connpool.Pool, *balancer.Pool) {
	t.Helper()
	dial := func(address string) (net.Conn, error) { return net.DialTimeout("tcp", address, time.Second) }
	p, err := connpool.New(dial, 4, time.Minute)
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	return p, balancer.NewPool(p, b)
}

// send makes n requests through bp, each a round trip on its conn.
func send(t *testing.T, bp *balancer.Pool, n int) {
	t.Helper()
	for range n {
		c, err := bp.Get(context.Background())
		require.NoError(t, err)
		require.NoError(t, testnet.RoundTrip(c, "ping"))
		require.NoError(t, c.Close())
	}
}

// checkouts returns how many conns of address the pool handed out.
func checkouts(p *connpool.Pool, address string) int64 {
	for _, d := range p.Stats().Destinations {
		if d.Address == address {
			return d.Dials + d.Reuses
		}
	}
	return 0
}

func destinationStats(p *connpool.Pool, address string) connpool.DestinationStats {
	for _, d := range p.Stats().Destinations {
		if d.Address == address {
			return d
		}
	}
	return connpool.DestinationStats{}
}

func hostsLines(name string, ips ...string) string {
	var b strings.Builder
	for _, ip := range ips {
		fmt.Fprintf(&b, "%s %s\n", ip, name)
	}
	return b.String()
}

func TestDNSAgainstDnsmasq(t *testing.T) {
	const name = "backends.connpool.test"
	port := startBackends(t, backendIPs)
	d := testnet.StartDnsmasq(t)
	d.SetHosts(hostsLines(name, backendIPs[:2]...))
	d.Reload()

	p, bp := newBalancedPool(t, balancer.NewRoundRobin(nil))
	var errs atomic.Int64
	w, err := NewDNS(context.Background(), name, port, bp, WithResolver(d.Resolver()),
		WithInterval(time.Hour), WithMinResolveInterval(0), WithTimeout(time.Second),
		WithErrorHandler(func(error) { errs.Add(1) }))
	require.NoError(t, err)
	defer w.Close()
	addr := func(ip string) string { return net.JoinHostPort(ip, port) }
	send(t, bp, 20)
	assert.Positive(t, checkouts(p, addr(backendIPs[0])))
	assert.Positive(t, checkouts(p, addr(backendIPs[1])))
	assert.Zero(t, checkouts(p, addr(backendIPs[2])))

	t.Run("an added address gets traffic after ResolveNow", func(t *testing.T) {
		d.SetHosts(hostsLines(name, backendIPs...))
		d.Reload()
		w.ResolveNow()
		require.Eventually(t, func() bool { return w.Stats().Endpoints == 3 }, 10*time.Second, time.Millisecond)
		send(t, bp, 30)
		assert.Positive(t, checkouts(p, addr(backendIPs[2])), "no traffic reached the new backend")
	})

	t.Run("a removed address is drained", func(t *testing.T) {
		require.Positive(t, destinationStats(p, addr(backendIPs[0])).Idle, "idle conns to drain")
		d.SetHosts(hostsLines(name, backendIPs[1:]...))
		d.Reload()
		w.ResolveNow()
		require.Eventually(t, func() bool { return w.Stats().Endpoints == 2 }, 10*time.Second, time.Millisecond)
		require.Eventually(t, func() bool { return destinationStats(p, addr(backendIPs[0])).Total == 0 }, 10*time.Second, time.Millisecond)
		before := checkouts(p, addr(backendIPs[0]))
		send(t, bp, 20)
		assert.Equal(t, before, checkouts(p, addr(backendIPs[0])), "traffic went to a removed backend")
		assert.Positive(t, p.Stats().ClosedDrained)
	})

	t.Run("with dnsmasq dead the last set stays", func(t *testing.T) {
		d.Kill()
		w.ResolveNow()
		require.Eventually(t, func() bool { return w.Stats().Errors > 0 && errs.Load() > 0 }, 10*time.Second, time.Millisecond)
		assert.Equal(t, 2, w.Stats().Endpoints)
		send(t, bp, 20) // requests keep flowing
	})
}

func TestDNSPicksUpAnAddressWithinAnInterval(t *testing.T) {
	const name = "interval.connpool.test"
	port := startBackends(t, backendIPs[:2])
	d := testnet.StartDnsmasq(t)
	d.SetHosts(hostsLines(name, backendIPs[0]))
	d.Reload()
	var u recorder
	w, err := NewDNS(context.Background(), name, port, &u, WithResolver(d.Resolver()), WithInterval(50*time.Millisecond))
	require.NoError(t, err)
	defer w.Close()
	d.SetHosts(hostsLines(name, backendIPs[:2]...))
	d.Reload()
	require.Eventually(t, func() bool { return len(u.updates()) == 2 }, 10*time.Second, time.Millisecond)
	assert.Len(t, u.updates()[1], 2)
}

func TestSRVAgainstDnsmasq(t *testing.T) {
	port := startBackends(t, backendIPs)
	srv := func(target, prio, weight string) string {
		return strings.Join([]string{"_echo._tcp.connpool.test", target, port, prio, weight}, ",")
	}
	d := testnet.StartDnsmasq(t,
		srv("a.connpool.test", "0", "30"), srv("b.connpool.test", "0", "10"), srv("backup.connpool.test", "1", "50"))
	d.SetHosts("127.0.0.2 a.connpool.test\n127.0.0.3 b.connpool.test\n127.0.0.4 backup.connpool.test")
	d.Reload()

	p, bp := newBalancedPool(t, balancer.NewWeightedRoundRobin(nil))
	w, err := NewSRV(context.Background(), "echo", "tcp", "connpool.test", bp,
		WithResolver(d.Resolver()), WithInterval(time.Hour))
	require.NoError(t, err)
	defer w.Close()
	send(t, bp, 400)
	a, b := checkouts(p, net.JoinHostPort("127.0.0.2", port)), checkouts(p, net.JoinHostPort("127.0.0.3", port))
	assert.Equal(t, int64(300), a, "a's share, weight 30 of 40")
	assert.Equal(t, int64(100), b, "b's share, weight 10 of 40")
	assert.Zero(t, checkouts(p, net.JoinHostPort("127.0.0.4", port)), "the priority-1 backup got traffic")
}

// BenchmarkDNSRound100 measures one resolution of a name with 100 A
// records against dnsmasq, and reports the heap a watcher of it keeps.
func BenchmarkDNSRound100(b *testing.B) {
	const name = "hundred.connpool.test"
	d := testnet.StartDnsmasq(b)
	var ips []string
	for i := 1; i <= 100; i++ {
		ips = append(ips, fmt.Sprintf("127.0.1.%d", i))
	}
	d.SetHosts(hostsLines(name, ips...))
	d.Reload()
	var u recorder
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	w, err := NewDNS(context.Background(), name, "80", &u, WithResolver(d.Resolver()), WithInterval(time.Hour))
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	u.sets = nil // what the recorder kept is not the watcher's
	kept := heap() - before
	b.ReportAllocs()
	for b.Loop() {
		if err := w.resolveOnce(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(kept), "watcher-heap-B")
	if w.Stats().Endpoints != 100 {
		b.Fatalf("%d endpoints", w.Stats().Endpoints)
	}
}
