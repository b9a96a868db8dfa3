package prometheus_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/balancer"
	"github.com/seed73091bf1/connpool/clientpool"
	connpoolprom "github.com/seed73091bf1/connpool/prometheus"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Both pool faces and every balancer are sources.
var (
	_ connpoolprom.StatsSource = (*connpool.Pool)(nil)
	_ connpoolprom.StatsSource = (*clientpool.Pool[io.Closer])(nil)
	_ connpoolprom.StateSource = (*balancer.RoundRobin)(nil)
	_ connpoolprom.StateSource = (*balancer.WeightedRoundRobin)(nil)
	_ connpoolprom.StateSource = (*balancer.Random)(nil)
	_ connpoolprom.StateSource = (*balancer.LeastRequest)(nil)
	_ connpoolprom.StateSource = (*balancer.PeakEWMA)(nil)
	_ connpoolprom.StateSource = (*balancer.Maglev)(nil)
)

// unreachable is an address the test pools' dial refuses.
const unreachable = "unreachable.invalid:1"

var errUnreachable = errors.New("no route to unreachable.invalid")

// startServer starts a loopback server that accepts conns and holds them,
// reading nothing and writing nothing, until the test ends, and returns its
// address.
func startServer(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// newPool returns a pool that dials TCP and refuses [unreachable], closed
// when the test ends. Idle conns do not expire within a test, so the pool
// forgets no address while the test runs.
func newPool(t testing.TB, capacity int, opts ...connpool.Option) *connpool.Pool {
	t.Helper()
	dial := func(address string) (net.Conn, error) {
		if address == unreachable {
			return nil, errUnreachable
		}
		return net.DialTimeout("tcp", address, 5*time.Second)
	}
	p, err := connpool.New(dial, capacity, time.Hour, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	return p
}

// get checks out a conn to address and requires it to work.
func get(t testing.TB, p *connpool.Pool, address string) *connpool.Conn {
	t.Helper()
	c, err := p.Get(address)
	require.NoError(t, err)
	return c.(*connpool.Conn)
}

// exercise runs a fixed sequence of checkouts on a fresh pool with a
// capacity of 1, over two servers and the unreachable address, and returns
// the pool and the servers' addresses. The first address keeps one conn in
// use; nothing is idle at the end.
func exercise(t testing.TB) (p *connpool.Pool, a, b string) {
	t.Helper()
	a, b = startServer(t), startServer(t)
	p = newPool(t, 1)

	// a: two dials; the second conn returned finds the bucket full.
	c1, c2 := get(t, p, a), get(t, p, a)
	require.NoError(t, c1.Close())
	require.NoError(t, c2.Close())
	// a: a reuse, kept in use.
	c3 := get(t, p, a)
	assert.True(t, c3.Reused())
	t.Cleanup(func() { c3.Close() })

	// b: two dials; one conn released, the other returned and drained.
	c4, c5 := get(t, p, b), get(t, p, b)
	require.NoError(t, c4.Release())
	require.NoError(t, c5.Close())
	require.NoError(t, p.Drain(b))

	// A failed dial.
	_, err := p.Get(unreachable)
	require.ErrorIs(t, err, errUnreachable)
	return p, a, b
}

// compare checks that c reports exactly expected for the metrics it names,
// after replacing each label value in expected that is a key of addrs with
// the key's value.
func compare(t testing.TB, c prometheus.Collector, expected string, addrs map[string]string) {
	t.Helper()
	var names []string
	for line := range strings.Lines(expected) {
		if f := strings.Fields(line); len(f) >= 3 && f[1] == "TYPE" {
			names = append(names, f[2])
		}
	}
	for k, v := range addrs {
		expected = strings.ReplaceAll(expected, `"`+k+`"`, `"`+v+`"`)
	}
	assert.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(expected), names...))
}

// gather registers c alone in a pedantic registry, which checks that what
// Collect sends matches what Describe announced, and returns the value of
// the series of the metric name whose labels are labels.
func gather(t testing.TB, c prometheus.Collector, name string, labels prometheus.Labels) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(c))
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue metrics
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	require.Failf(t, "no series", "%s%v", name, labels)
	return 0
}

func TestCollectorPerAddress(t *testing.T) {
	p, a, b := exercise(t)
	compare(t, connpoolprom.NewCollector(p), `
# HELP connpool_checkouts_waiting Checkouts waiting at the WithMaxActive cap of their address.
# TYPE connpool_checkouts_waiting gauge
connpool_checkouts_waiting{address="A"} 0
connpool_checkouts_waiting{address="B"} 0
connpool_checkouts_waiting{address="unreachable.invalid:1"} 0
# HELP connpool_closes_total Conns the pool closed, by reason; conns closed because the pool closed are not counted.
# TYPE connpool_closes_total counter
connpool_closes_total{address="A",reason="bucket_full"} 1
connpool_closes_total{address="A",reason="dead_at_checkout"} 0
connpool_closes_total{address="A",reason="dead_while_idle"} 0
connpool_closes_total{address="A",reason="drained"} 0
connpool_closes_total{address="A",reason="for_new"} 0
connpool_closes_total{address="A",reason="idle_cap_evicted"} 0
connpool_closes_total{address="A",reason="idle_timeout"} 0
connpool_closes_total{address="A",reason="max_lifetime"} 0
connpool_closes_total{address="A",reason="released"} 0
connpool_closes_total{address="A",reason="validator_failed"} 0
connpool_closes_total{address="B",reason="bucket_full"} 0
connpool_closes_total{address="B",reason="dead_at_checkout"} 0
connpool_closes_total{address="B",reason="dead_while_idle"} 0
connpool_closes_total{address="B",reason="drained"} 1
connpool_closes_total{address="B",reason="for_new"} 0
connpool_closes_total{address="B",reason="idle_cap_evicted"} 0
connpool_closes_total{address="B",reason="idle_timeout"} 0
connpool_closes_total{address="B",reason="max_lifetime"} 0
connpool_closes_total{address="B",reason="released"} 1
connpool_closes_total{address="B",reason="validator_failed"} 0
connpool_closes_total{address="unreachable.invalid:1",reason="bucket_full"} 0
connpool_closes_total{address="unreachable.invalid:1",reason="dead_at_checkout"} 0
connpool_closes_total{address="unreachable.invalid:1",reason="dead_while_idle"} 0
connpool_closes_total{address="unreachable.invalid:1",reason="drained"} 0
connpool_closes_total{address="unreachable.invalid:1",reason="for_new"} 0
connpool_closes_total{address="unreachable.invalid:1",reason="idle_cap_evicted"} 0
connpool_closes_total{address="unreachable.invalid:1",reason="idle_timeout"} 0
connpool_closes_total{address="unreachable.invalid:1",reason="max_lifetime"} 0
connpool_closes_total{address="unreachable.invalid:1",reason="released"} 0
connpool_closes_total{address="unreachable.invalid:1",reason="validator_failed"} 0
# HELP connpool_conns_idle Idle conns resting in the pool.
# TYPE connpool_conns_idle gauge
connpool_conns_idle{address="A"} 0
connpool_conns_idle{address="B"} 0
connpool_conns_idle{address="unreachable.invalid:1"} 0
# HELP connpool_conns_in_use Conns checked out and not yet returned.
# TYPE connpool_conns_in_use gauge
connpool_conns_in_use{address="A"} 1
connpool_conns_in_use{address="B"} 0
connpool_conns_in_use{address="unreachable.invalid:1"} 0
# HELP connpool_conns_open Open conns, in use plus idle; dials in flight are not counted.
# TYPE connpool_conns_open gauge
connpool_conns_open{address="A"} 1
connpool_conns_open{address="B"} 0
connpool_conns_open{address="unreachable.invalid:1"} 0
# HELP connpool_dial_errors_total Failed dials.
# TYPE connpool_dial_errors_total counter
connpool_dial_errors_total{address="A"} 0
connpool_dial_errors_total{address="B"} 0
connpool_dial_errors_total{address="unreachable.invalid:1"} 1
# HELP connpool_dials_total Successful dials.
# TYPE connpool_dials_total counter
connpool_dials_total{address="A"} 2
connpool_dials_total{address="B"} 2
connpool_dials_total{address="unreachable.invalid:1"} 0
# HELP connpool_leases Leases on shared values, in the shared mode of clientpool.WithShared.
# TYPE connpool_leases gauge
connpool_leases{address="A"} 0
connpool_leases{address="B"} 0
connpool_leases{address="unreachable.invalid:1"} 0
# HELP connpool_max_total_checkouts_waiting Checkouts waiting for a slot at the pool-wide WithMaxTotal cap.
# TYPE connpool_max_total_checkouts_waiting gauge
connpool_max_total_checkouts_waiting 0
# HELP connpool_retries_total Retries the retry budget let go, under the address whose request failed.
# TYPE connpool_retries_total counter
connpool_retries_total{address="A"} 0
connpool_retries_total{address="B"} 0
connpool_retries_total{address="unreachable.invalid:1"} 0
# HELP connpool_retry_budget_exhausted_total Retries the retry budget refused.
# TYPE connpool_retry_budget_exhausted_total counter
connpool_retry_budget_exhausted_total{address="A"} 0
connpool_retry_budget_exhausted_total{address="B"} 0
connpool_retry_budget_exhausted_total{address="unreachable.invalid:1"} 0
# HELP connpool_reuses_total Checkouts served from an idle conn.
# TYPE connpool_reuses_total counter
connpool_reuses_total{address="A"} 1
connpool_reuses_total{address="B"} 0
connpool_reuses_total{address="unreachable.invalid:1"} 0
# HELP connpool_shared_values Values that leases share, in the shared mode of clientpool.WithShared.
# TYPE connpool_shared_values gauge
connpool_shared_values{address="A"} 0
connpool_shared_values{address="B"} 0
connpool_shared_values{address="unreachable.invalid:1"} 0
# HELP connpool_wait_seconds_total Total time checkouts waited at a cap, including waits that failed.
# TYPE connpool_wait_seconds_total counter
connpool_wait_seconds_total{address="A"} 0
connpool_wait_seconds_total{address="B"} 0
connpool_wait_seconds_total{address="unreachable.invalid:1"} 0
# HELP connpool_waits_total Checkouts that had to wait at a WithMaxActive or WithMaxTotal cap.
# TYPE connpool_waits_total counter
connpool_waits_total{address="A"} 0
connpool_waits_total{address="B"} 0
connpool_waits_total{address="unreachable.invalid:1"} 0
`, map[string]string{"A": a, "B": b})
}

func TestCollectorWithoutAddressLabel(t *testing.T) {
	p, _, _ := exercise(t)
	compare(t, connpoolprom.NewCollector(p, connpoolprom.WithoutAddressLabel()), `
# HELP connpool_checkouts_waiting Checkouts waiting at the WithMaxActive cap of their address.
# TYPE connpool_checkouts_waiting gauge
connpool_checkouts_waiting 0
# HELP connpool_closes_total Conns the pool closed, by reason; conns closed because the pool closed are not counted.
# TYPE connpool_closes_total counter
connpool_closes_total{reason="bucket_full"} 1
connpool_closes_total{reason="dead_at_checkout"} 0
connpool_closes_total{reason="dead_while_idle"} 0
connpool_closes_total{reason="drained"} 1
connpool_closes_total{reason="for_new"} 0
connpool_closes_total{reason="idle_cap_evicted"} 0
connpool_closes_total{reason="idle_timeout"} 0
connpool_closes_total{reason="max_lifetime"} 0
connpool_closes_total{reason="released"} 1
connpool_closes_total{reason="validator_failed"} 0
# HELP connpool_conns_idle Idle conns resting in the pool.
# TYPE connpool_conns_idle gauge
connpool_conns_idle 0
# HELP connpool_conns_in_use Conns checked out and not yet returned.
# TYPE connpool_conns_in_use gauge
connpool_conns_in_use 1
# HELP connpool_conns_open Open conns, in use plus idle; dials in flight are not counted.
# TYPE connpool_conns_open gauge
connpool_conns_open 1
# HELP connpool_dial_errors_total Failed dials.
# TYPE connpool_dial_errors_total counter
connpool_dial_errors_total 1
# HELP connpool_dials_total Successful dials.
# TYPE connpool_dials_total counter
connpool_dials_total 4
# HELP connpool_leases Leases on shared values, in the shared mode of clientpool.WithShared.
# TYPE connpool_leases gauge
connpool_leases 0
# HELP connpool_max_total_checkouts_waiting Checkouts waiting for a slot at the pool-wide WithMaxTotal cap.
# TYPE connpool_max_total_checkouts_waiting gauge
connpool_max_total_checkouts_waiting 0
# HELP connpool_retries_total Retries the retry budget let go, under the address whose request failed.
# TYPE connpool_retries_total counter
connpool_retries_total 0
# HELP connpool_retry_budget_exhausted_total Retries the retry budget refused.
# TYPE connpool_retry_budget_exhausted_total counter
connpool_retry_budget_exhausted_total 0
# HELP connpool_reuses_total Checkouts served from an idle conn.
# TYPE connpool_reuses_total counter
connpool_reuses_total 1
# HELP connpool_shared_values Values that leases share, in the shared mode of clientpool.WithShared.
# TYPE connpool_shared_values gauge
connpool_shared_values 0
# HELP connpool_wait_seconds_total Total time checkouts waited at a cap, including waits that failed.
# TYPE connpool_wait_seconds_total counter
connpool_wait_seconds_total 0
# HELP connpool_waits_total Checkouts that had to wait at a WithMaxActive or WithMaxTotal cap.
# TYPE connpool_waits_total counter
connpool_waits_total 0
`, nil)
}

// waitFor polls until cond holds, for at most 10 seconds.
func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	require.Eventually(t, cond, 10*time.Second, time.Millisecond)
}

// result is the outcome of a checkout.
type result struct {
	conn net.Conn
	err  error
}

// getLater checks out a conn to address in a goroutine and returns a
// channel that delivers the outcome. When the test ends, a checkout still
// waiting is cancelled, and a conn the test did not receive is closed.
func getLater(t testing.TB, p *connpool.Pool, address string) <-chan result {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan result, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := p.GetContext(ctx, address)
		ch <- result{c, err}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		select {
		case r := <-ch:
			if r.conn != nil {
				r.conn.Close()
			}
		default:
		}
	})
	return ch
}

// receive returns the conn of a checkout started by getLater, waiting for
// at most 10 seconds.
func receive(t testing.TB, ch <-chan result) net.Conn {
	t.Helper()
	select {
	case r := <-ch:
		require.NoError(t, r.err)
		return r.conn
	case <-time.After(10 * time.Second):
		require.FailNow(t, "the waiting checkout did not get a conn")
		return nil
	}
}

func TestCollectorWaitingAtMaxActive(t *testing.T) {
	a := startServer(t)
	p := newPool(t, 1, connpool.WithMaxActive(1))
	perAddr := connpoolprom.NewCollector(p)
	total := connpoolprom.NewCollector(p, connpoolprom.WithoutAddressLabel())
	held := get(t, p, a)
	later := getLater(t, p, a)
	waitFor(t, func() bool { return p.Stats().Waiting == 1 })

	addrs := map[string]string{"A": a}
	compare(t, perAddr, `
# HELP connpool_checkouts_waiting Checkouts waiting at the WithMaxActive cap of their address.
# TYPE connpool_checkouts_waiting gauge
connpool_checkouts_waiting{address="A"} 1
# HELP connpool_max_total_checkouts_waiting Checkouts waiting for a slot at the pool-wide WithMaxTotal cap.
# TYPE connpool_max_total_checkouts_waiting gauge
connpool_max_total_checkouts_waiting 0
`, addrs)
	compare(t, total, `
# HELP connpool_checkouts_waiting Checkouts waiting at the WithMaxActive cap of their address.
# TYPE connpool_checkouts_waiting gauge
connpool_checkouts_waiting 1
# HELP connpool_max_total_checkouts_waiting Checkouts waiting for a slot at the pool-wide WithMaxTotal cap.
# TYPE connpool_max_total_checkouts_waiting gauge
connpool_max_total_checkouts_waiting 0
`, nil)

	// The conn goes straight to the waiting checkout, never idle, so it
	// counts as no reuse.
	require.NoError(t, held.Close())
	require.NoError(t, receive(t, later).Close())
	compare(t, perAddr, `
# HELP connpool_checkouts_waiting Checkouts waiting at the WithMaxActive cap of their address.
# TYPE connpool_checkouts_waiting gauge
connpool_checkouts_waiting{address="A"} 0
# HELP connpool_dials_total Successful dials.
# TYPE connpool_dials_total counter
connpool_dials_total{address="A"} 1
# HELP connpool_reuses_total Checkouts served from an idle conn.
# TYPE connpool_reuses_total counter
connpool_reuses_total{address="A"} 0
# HELP connpool_waits_total Checkouts that had to wait at a WithMaxActive or WithMaxTotal cap.
# TYPE connpool_waits_total counter
connpool_waits_total{address="A"} 1
`, addrs)
	waited := p.Stats().WaitDuration.Seconds()
	assert.Positive(t, waited)
	assert.Equal(t, waited, gather(t, perAddr, "connpool_wait_seconds_total", prometheus.Labels{"address": a}))
	assert.Equal(t, waited, gather(t, total, "connpool_wait_seconds_total", nil))
}

func TestCollectorWaitingAtMaxTotal(t *testing.T) {
	a, b := startServer(t), startServer(t)
	p := newPool(t, 1, connpool.WithMaxTotal(1))
	perAddr := connpoolprom.NewCollector(p)
	total := connpoolprom.NewCollector(p, connpoolprom.WithoutAddressLabel())
	held := get(t, p, a)
	later := getLater(t, p, b)
	waitFor(t, func() bool { return p.Stats().Waiting == 1 })

	// The checkout waits at the pool's cap, not at an address's.
	for _, c := range []*connpoolprom.Collector{perAddr, total} {
		assert.Equal(t, 1.0, gather(t, c, "connpool_max_total_checkouts_waiting", nil))
	}
	assert.Equal(t, 0.0, gather(t, perAddr, "connpool_checkouts_waiting", prometheus.Labels{"address": a}))
	assert.Equal(t, 0.0, gather(t, total, "connpool_checkouts_waiting", nil))

	require.NoError(t, held.Close()) // closed to free the slot for b
	require.NoError(t, receive(t, later).Close())
	compare(t, total, `
# HELP connpool_max_total_checkouts_waiting Checkouts waiting for a slot at the pool-wide WithMaxTotal cap.
# TYPE connpool_max_total_checkouts_waiting gauge
connpool_max_total_checkouts_waiting 0
# HELP connpool_dials_total Successful dials.
# TYPE connpool_dials_total counter
connpool_dials_total 2
# HELP connpool_waits_total Checkouts that had to wait at a WithMaxActive or WithMaxTotal cap.
# TYPE connpool_waits_total counter
connpool_waits_total 1
`, nil)
}

// ejectOne picks from b and reports a failure, which ejects the endpoint
// when the ejection threshold is 1, and returns its address.
func ejectOne(t testing.TB, b balancer.Balancer) string {
	t.Helper()
	addr, done, err := b.Pick(context.Background())
	require.NoError(t, err)
	done(errors.New("backend failed"))
	return addr
}

// pickHeld picks from b and holds the request in flight until the test
// ends; it returns the address picked.
func pickHeld(t testing.TB, b balancer.Balancer) string {
	t.Helper()
	addr, done, err := b.Pick(context.Background())
	require.NoError(t, err)
	t.Cleanup(func() { done(nil) })
	return addr
}

func TestCollectorBalancer(t *testing.T) {
	p := newPool(t, 1)
	rr := balancer.NewRoundRobin([]balancer.Endpoint{{Address: "10.0.0.1:80"}, {Address: "10.0.0.2:80"}},
		balancer.WithEjection(1, time.Minute, time.Minute))
	ejected := ejectOne(t, rr)
	inFlight := pickHeld(t, rr)
	require.NotEqual(t, ejected, inFlight, "an ejected endpoint was picked")

	compare(t, connpoolprom.NewCollector(p, connpoolprom.WithBalancer(rr)), `
# HELP connpool_balancer_ejected 1 while the endpoint is ejected, 0 otherwise; without the address label, the number of endpoints ejected.
# TYPE connpool_balancer_ejected gauge
connpool_balancer_ejected{address="EJECTED"} 1
connpool_balancer_ejected{address="IN_FLIGHT"} 0
# HELP connpool_balancer_ejections_total Ejections of the endpoint, for consecutive failures and as an outlier.
# TYPE connpool_balancer_ejections_total counter
connpool_balancer_ejections_total{address="EJECTED"} 1
connpool_balancer_ejections_total{address="IN_FLIGHT"} 0
# HELP connpool_balancer_in_flight Requests the balancer picked the endpoint for that have not ended.
# TYPE connpool_balancer_in_flight gauge
connpool_balancer_in_flight{address="EJECTED"} 0
connpool_balancer_in_flight{address="IN_FLIGHT"} 1
`, map[string]string{"EJECTED": ejected, "IN_FLIGHT": inFlight})

	compare(t, connpoolprom.NewCollector(p, connpoolprom.WithBalancer(rr), connpoolprom.WithoutAddressLabel()), `
# HELP connpool_balancer_ejected 1 while the endpoint is ejected, 0 otherwise; without the address label, the number of endpoints ejected.
# TYPE connpool_balancer_ejected gauge
connpool_balancer_ejected 1
# HELP connpool_balancer_ejections_total Ejections of the endpoint, for consecutive failures and as an outlier.
# TYPE connpool_balancer_ejections_total counter
connpool_balancer_ejections_total 1
# HELP connpool_balancer_in_flight Requests the balancer picked the endpoint for that have not ended.
# TYPE connpool_balancer_in_flight gauge
connpool_balancer_in_flight 1
`, nil)
}

func TestCollectorWithoutBalancerReportsNoBalancerMetrics(t *testing.T) {
	p, _, _ := exercise(t)
	for _, c := range []*connpoolprom.Collector{
		connpoolprom.NewCollector(p),
		connpoolprom.NewCollector(p, connpoolprom.WithBalancer(nil)),
	} {
		n, err := testutil.GatherAndCount(registry(t, c),
			"connpool_balancer_in_flight", "connpool_balancer_ejected", "connpool_balancer_ejections_total")
		require.NoError(t, err)
		assert.Zero(t, n)
	}
}

// registry returns a pedantic registry holding cs.
func registry(t testing.TB, cs ...prometheus.Collector) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	for _, c := range cs {
		require.NoError(t, reg.Register(c))
	}
	return reg
}

func TestCollectorLint(t *testing.T) {
	p, _, _ := exercise(t)
	rr := balancer.NewRoundRobin([]balancer.Endpoint{{Address: "10.0.0.1:80"}})
	tests := []struct {
		name string
		opts []connpoolprom.Option
	}{
		{name: "PerAddress"},
		{name: "PerAddress/Balancer", opts: []connpoolprom.Option{connpoolprom.WithBalancer(rr)}},
		{name: "WithoutAddressLabel", opts: []connpoolprom.Option{connpoolprom.WithoutAddressLabel()}},
		{name: "WithoutAddressLabel/Balancer", opts: []connpoolprom.Option{connpoolprom.WithoutAddressLabel(), connpoolprom.WithBalancer(rr)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := connpoolprom.NewCollector(p, tt.opts...)
			problems, err := testutil.CollectAndLint(c)
			require.NoError(t, err)
			assert.Empty(t, problems)
			// The pedantic registry checks Collect against Describe.
			_, err = registry(t, c).Gather()
			assert.NoError(t, err)
		})
	}
}

func TestCollectorsOfTwoPoolsInOneRegistry(t *testing.T) {
	p1, _, _ := exercise(t)
	p2 := newPool(t, 1)
	_, err := p2.Get(unreachable)
	require.Error(t, err)

	reg := prometheus.NewPedanticRegistry()
	for name, p := range map[string]*connpool.Pool{"one": p1, "two": p2} {
		wrapped := prometheus.WrapRegistererWith(prometheus.Labels{"pool": name}, reg)
		require.NoError(t, wrapped.Register(connpoolprom.NewCollector(p, connpoolprom.WithoutAddressLabel())))
	}
	assert.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP connpool_dial_errors_total Failed dials.
# TYPE connpool_dial_errors_total counter
connpool_dial_errors_total{pool="one"} 1
connpool_dial_errors_total{pool="two"} 1
# HELP connpool_dials_total Successful dials.
# TYPE connpool_dials_total counter
connpool_dials_total{pool="one"} 4
connpool_dials_total{pool="two"} 0
`), "connpool_dials_total", "connpool_dial_errors_total"))
}

func TestNewCollectorPanicsOnNilPool(t *testing.T) {
	assert.PanicsWithValue(t, "connpool/prometheus: NewCollector with a nil pool", func() {
		connpoolprom.NewCollector(nil)
	})
}

// The collector takes one snapshot per scrape and keeps nothing between
// them, so scrapes may run while the pool is busy.
func TestCollectorConcurrentScrapes(t *testing.T) {
	a := startServer(t)
	p := newPool(t, 4)
	rr := balancer.NewRoundRobin([]balancer.Endpoint{{Address: a}})
	reg := registry(t, connpoolprom.NewCollector(p, connpoolprom.WithBalancer(rr)))
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 50 {
				addr, done, err := rr.Pick(context.Background())
				if !assert.NoError(t, err) {
					return
				}
				c, err := p.Get(addr)
				if assert.NoError(t, err) {
					assert.NoError(t, c.Close())
				}
				done(err)
			}
		})
		wg.Go(func() {
			for range 50 {
				_, err := reg.Gather()
				assert.NoError(t, err)
			}
		})
	}
	wg.Wait()
	s := p.Stats()
	assert.Equal(t, int64(200), s.Dials+s.Reuses, fmt.Sprint(s))
}
