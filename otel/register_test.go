package otel_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/metric/metricdata/metricdatatest"
	"go.uber.org/goleak"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/balancer"
	"github.com/seed73091bf1/connpool/clientpool"
	connpoolotel "github.com/seed73091bf1/connpool/otel"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Both pool faces and every balancer are sources.
var (
	_ connpoolotel.StatsSource = (*connpool.Pool)(nil)
	_ connpoolotel.StatsSource = (*clientpool.Pool[io.Closer])(nil)
	_ connpoolotel.StateSource = (*balancer.RoundRobin)(nil)
	_ connpoolotel.StateSource = (*balancer.WeightedRoundRobin)(nil)
	_ connpoolotel.StateSource = (*balancer.Random)(nil)
	_ connpoolotel.StateSource = (*balancer.LeastRequest)(nil)
	_ connpoolotel.StateSource = (*balancer.PeakEWMA)(nil)
	_ connpoolotel.StateSource = (*balancer.Maglev)(nil)
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
	require.True(t, c3.Reused())
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

// newReader returns a manual reader and a MeterProvider that reports to
// it, shut down when the test ends.
func newReader(t testing.TB) (*sdkmetric.ManualReader, metric.MeterProvider) {
	t.Helper()
	r := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(r))
	t.Cleanup(func() { assert.NoError(t, mp.Shutdown(context.Background())) })
	return r, mp
}

// register registers pool on mp and unregisters it when the test ends.
func register(t testing.TB, mp metric.MeterProvider, pool connpoolotel.StatsSource, opts ...connpoolotel.Option) metric.Registration {
	t.Helper()
	reg, err := connpoolotel.Register(mp, pool, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, reg.Unregister()) })
	return reg
}

// collect collects r and returns the metrics of the adapter's scope, with
// their descriptions, each checked to be set, removed.
func collect(t testing.TB, r *sdkmetric.ManualReader) []metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, r.Collect(context.Background(), &rm))
	var ms []metricdata.Metrics
	for _, sm := range rm.ScopeMetrics {
		require.Equal(t, connpoolotel.ScopeName, sm.Scope.Name)
		assert.Equal(t, "https://opentelemetry.io/schemas/1.43.0", sm.Scope.SchemaURL)
		for _, m := range sm.Metrics {
			assert.NotEmpty(t, m.Description, m.Name)
			m.Description = ""
			ms = append(ms, m)
		}
	}
	return ms
}

// assertMetrics checks that got holds exactly the metrics of want, in any
// order, with their data points in any order, ignoring timestamps.
func assertMetrics(t testing.TB, want, got []metricdata.Metrics) {
	t.Helper()
	metricdatatest.AssertEqual(t,
		metricdata.ScopeMetrics{Metrics: want}, metricdata.ScopeMetrics{Metrics: got},
		metricdatatest.IgnoreTimestamp())
}

// point returns a data point of value with attrs.
func point[N int64 | float64](value N, attrs ...attribute.KeyValue) metricdata.DataPoint[N] {
	return metricdata.DataPoint[N]{Attributes: attribute.NewSet(attrs...), Value: value}
}

// sum returns a metric of cumulative sums.
func sum[N int64 | float64](name, unit string, monotonic bool, pts ...metricdata.DataPoint[N]) metricdata.Metrics {
	return metricdata.Metrics{Name: name, Unit: unit, Data: metricdata.Sum[N]{
		DataPoints: pts, Temporality: metricdata.CumulativeTemporality, IsMonotonic: monotonic,
	}}
}

// server returns the pool name attribute and the server attributes of a
// host:port address.
func server(t testing.TB, pool, address string) []attribute.KeyValue {
	t.Helper()
	host, port, err := net.SplitHostPort(address)
	require.NoError(t, err)
	n, err := strconv.Atoi(port)
	require.NoError(t, err)
	return []attribute.KeyValue{
		attribute.String("db.client.connection.pool.name", pool),
		attribute.String("server.address", host),
		attribute.Int("server.port", n),
	}
}

// counts are the expected values of the pool instruments for one address,
// or for the whole pool.
type counts struct {
	attrs                               []attribute.KeyValue
	idle, used, pending, shared, leases int64
	connpool.Counters
}

// closeReasons are the values of connpool.close.reason.
var closeReasons = []string{
	"idle_timeout", "max_lifetime", "bucket_full", "idle_cap_evicted", "dead_at_checkout",
	"dead_while_idle", "validator_failed", "drained", "for_new", "released",
}

// poolMetrics returns the expected pool metrics of cs, with extraPending
// as further data points of db.client.connection.pending_requests.
func poolMetrics(cs []counts, extraPending ...metricdata.DataPoint[int64]) []metricdata.Metrics {
	var count, pending, shared, leases, dials, dialErrors, reuses, waits, closes, retries, refused []metricdata.DataPoint[int64]
	var waitTime []metricdata.DataPoint[float64]
	with := func(c counts, kv attribute.KeyValue) []attribute.KeyValue {
		return append(c.attrs[:len(c.attrs):len(c.attrs)], kv)
	}
	for _, c := range cs {
		count = append(count,
			point(c.idle, with(c, attribute.String("db.client.connection.state", "idle"))...),
			point(c.used, with(c, attribute.String("db.client.connection.state", "used"))...))
		pending = append(pending, point(c.pending, c.attrs...))
		shared = append(shared, point(c.shared, c.attrs...))
		leases = append(leases, point(c.leases, c.attrs...))
		dials = append(dials, point(c.Dials, c.attrs...))
		dialErrors = append(dialErrors, point(c.DialErrors, c.attrs...))
		reuses = append(reuses, point(c.Reuses, c.attrs...))
		waits = append(waits, point(c.WaitCount, c.attrs...))
		waitTime = append(waitTime, point(c.WaitDuration.Seconds(), c.attrs...))
		retries = append(retries, point(c.Retries, c.attrs...))
		refused = append(refused, point(c.RetryBudgetExhausted, c.attrs...))
		for i, n := range []int64{
			c.ClosedIdleTimeout, c.ClosedMaxLifetime, c.ClosedBucketFull, c.ClosedIdleCapEvicted,
			c.ClosedDeadAtCheckout, c.ClosedDeadWhileIdle, c.ClosedValidatorFailed, c.ClosedDrained,
			c.ClosedForNew, c.Released,
		} {
			closes = append(closes, point(n, with(c, attribute.String("connpool.close.reason", closeReasons[i]))...))
		}
	}
	return []metricdata.Metrics{
		sum("db.client.connection.count", "{connection}", false, count...),
		sum("db.client.connection.pending_requests", "{request}", false, append(pending, extraPending...)...),
		sum("connpool.shared.count", "{connection}", false, shared...),
		sum("connpool.lease.count", "{lease}", false, leases...),
		sum("connpool.dials", "{connection}", true, dials...),
		sum("connpool.dial.errors", "{error}", true, dialErrors...),
		sum("connpool.reuses", "{connection}", true, reuses...),
		sum("connpool.waits", "{request}", true, waits...),
		sum("connpool.wait.time", "s", true, waitTime...),
		sum("connpool.closes", "{connection}", true, closes...),
		sum("connpool.retries", "{request}", true, retries...),
		sum("connpool.retry_budget.exhausted", "{request}", true, refused...),
	}
}

// poolName is the pool name attribute of the pool named name.
func poolName(name string) attribute.KeyValue {
	return attribute.String("db.client.connection.pool.name", name)
}

func TestRegisterPerAddress(t *testing.T) {
	p, a, b := exercise(t)
	r, mp := newReader(t)
	register(t, mp, p, connpoolotel.WithPoolName("sessions"))

	assertMetrics(t, poolMetrics([]counts{
		{attrs: server(t, "sessions", a), used: 1, Counters: connpool.Counters{
			Dials: 2, Reuses: 1, ClosedBucketFull: 1,
		}},
		{attrs: server(t, "sessions", b), Counters: connpool.Counters{
			Dials: 2, ClosedDrained: 1, Released: 1,
		}},
		{attrs: server(t, "sessions", unreachable), Counters: connpool.Counters{DialErrors: 1}},
	}, point[int64](0, poolName("sessions"))), collect(t, r))
}

func TestRegisterWithoutAddressAttribute(t *testing.T) {
	p, _, _ := exercise(t)
	r, mp := newReader(t)
	register(t, mp, p, connpoolotel.WithoutAddressAttribute())

	assertMetrics(t, poolMetrics([]counts{
		{attrs: []attribute.KeyValue{poolName(connpoolotel.DefaultPoolName)}, used: 1, Counters: connpool.Counters{
			Dials: 4, DialErrors: 1, Reuses: 1, ClosedBucketFull: 1, ClosedDrained: 1, Released: 1,
		}},
	}), collect(t, r))
}

// find returns the value of the data point of the metric name whose
// attributes are attrs.
func find[N int64 | float64](t testing.TB, ms []metricdata.Metrics, name string, attrs ...attribute.KeyValue) N {
	t.Helper()
	want := attribute.NewSet(attrs...)
	for _, m := range ms {
		if m.Name != name {
			continue
		}
		s, ok := m.Data.(metricdata.Sum[N])
		require.True(t, ok, "%s is a %T", name, m.Data)
		for _, dp := range s.DataPoints {
			if dp.Attributes.Equals(&want) {
				return dp.Value
			}
		}
	}
	require.Failf(t, "no data point", "%s%v", name, want.Encoded(attribute.DefaultEncoder()))
	return 0
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

// waitFor polls until cond holds, for at most 10 seconds.
func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	require.Eventually(t, cond, 10*time.Second, time.Millisecond)
}

func TestRegisterWaiting(t *testing.T) {
	pool := poolName(connpoolotel.DefaultPoolName)
	for _, tt := range []struct {
		name string
		opt  connpool.Option
		// atAddress is true if the checkout waits at its address's cap,
		// false if it waits at the pool's.
		atAddress bool
	}{
		{name: "MaxActive", opt: connpool.WithMaxActive(1), atAddress: true},
		{name: "MaxTotal", opt: connpool.WithMaxTotal(1), atAddress: false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a, b := startServer(t), startServer(t)
			p := newPool(t, 1, tt.opt)
			r, mp := newReader(t)
			register(t, mp, p)
			rt, mpt := newReader(t)
			register(t, mpt, p, connpoolotel.WithoutAddressAttribute())

			held := get(t, p, a)
			waiter := b
			if tt.atAddress {
				waiter = a
			}
			later := getLater(t, p, waiter)
			waitFor(t, func() bool { return p.Stats().Waiting == 1 })

			var atA, atPool int64 = 0, 1
			if tt.atAddress {
				atA, atPool = 1, 0
			}
			ms := collect(t, r)
			assert.Equal(t, atA, find[int64](t, ms, "db.client.connection.pending_requests", server(t, connpoolotel.DefaultPoolName, a)...))
			assert.Equal(t, atPool, find[int64](t, ms, "db.client.connection.pending_requests", pool))
			assert.Equal(t, int64(1), find[int64](t, collect(t, rt), "db.client.connection.pending_requests", pool))

			// MaxActive: the conn goes straight to the waiting checkout.
			// MaxTotal: it is closed to free the slot for b.
			if tt.atAddress {
				require.NoError(t, held.Close())
			} else {
				require.NoError(t, held.Release())
			}
			require.NoError(t, receive(t, later).Close())

			s := p.Stats()
			require.Equal(t, int64(1), s.WaitCount)
			waited := s.WaitDuration.Seconds()
			require.Positive(t, waited)
			ms = collect(t, r)
			wa := server(t, connpoolotel.DefaultPoolName, waiter)
			assert.Equal(t, int64(0), find[int64](t, ms, "db.client.connection.pending_requests", pool))
			assert.Equal(t, int64(1), find[int64](t, ms, "connpool.waits", wa...))
			assert.Equal(t, waited, find[float64](t, ms, "connpool.wait.time", wa...))
			mst := collect(t, rt)
			assert.Equal(t, int64(0), find[int64](t, mst, "db.client.connection.pending_requests", pool))
			assert.Equal(t, int64(1), find[int64](t, mst, "connpool.waits", pool))
			assert.Equal(t, waited, find[float64](t, mst, "connpool.wait.time", pool))
		})
	}
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

// balancerMetrics returns the expected balancer metrics, one data point
// per element of attrs, with the values at the same index.
func balancerMetrics(attrs [][]attribute.KeyValue, inFlight, ejected, ejections []int64) []metricdata.Metrics {
	var in, ej, ejs []metricdata.DataPoint[int64]
	for i, a := range attrs {
		in = append(in, point(inFlight[i], a...))
		ej = append(ej, point(ejected[i], a...))
		ejs = append(ejs, point(ejections[i], a...))
	}
	return []metricdata.Metrics{
		sum("connpool.balancer.in_flight", "{request}", false, in...),
		sum("connpool.balancer.ejected", "{endpoint}", false, ej...),
		sum("connpool.balancer.ejections", "{ejection}", true, ejs...),
	}
}

func TestRegisterBalancer(t *testing.T) {
	p := newPool(t, 1) // knows no address
	rr := balancer.NewRoundRobin([]balancer.Endpoint{{Address: "10.0.0.1:80"}, {Address: "10.0.0.2:80"}},
		balancer.WithEjection(1, time.Minute, time.Minute))
	ejected := ejectOne(t, rr)
	inFlight := pickHeld(t, rr)
	require.NotEqual(t, ejected, inFlight, "an ejected endpoint was picked")

	t.Run("PerAddress", func(t *testing.T) {
		r, mp := newReader(t)
		register(t, mp, p, connpoolotel.WithBalancer(rr), connpoolotel.WithPoolName("lb"))
		want := append(poolMetrics(nil, point[int64](0, poolName("lb"))), balancerMetrics(
			[][]attribute.KeyValue{server(t, "lb", ejected), server(t, "lb", inFlight)},
			[]int64{0, 1}, []int64{1, 0}, []int64{1, 0})...)
		// The pool knows no address: its instruments without a data point
		// are not reported.
		want = withData(want)
		assertMetrics(t, want, collect(t, r))
	})
	t.Run("WithoutAddressAttribute", func(t *testing.T) {
		r, mp := newReader(t)
		register(t, mp, p, connpoolotel.WithBalancer(rr), connpoolotel.WithoutAddressAttribute())
		pool := []attribute.KeyValue{poolName(connpoolotel.DefaultPoolName)}
		want := append(poolMetrics([]counts{{attrs: pool}}),
			balancerMetrics([][]attribute.KeyValue{pool}, []int64{1}, []int64{1}, []int64{1})...)
		assertMetrics(t, want, collect(t, r))
	})
}

// withData returns the metrics of ms that have data points.
func withData(ms []metricdata.Metrics) []metricdata.Metrics {
	var out []metricdata.Metrics
	for _, m := range ms {
		switch d := m.Data.(type) {
		case metricdata.Sum[int64]:
			if len(d.DataPoints) > 0 {
				out = append(out, m)
			}
		case metricdata.Sum[float64]:
			if len(d.DataPoints) > 0 {
				out = append(out, m)
			}
		}
	}
	return out
}

func TestUnregisterStopsReporting(t *testing.T) {
	p, _, _ := exercise(t)
	rr := balancer.NewRoundRobin([]balancer.Endpoint{{Address: "10.0.0.1:80"}})
	r, mp := newReader(t)
	reg, err := connpoolotel.Register(mp, p, connpoolotel.WithBalancer(rr))
	require.NoError(t, err)
	require.NotEmpty(t, collect(t, r))

	require.NoError(t, reg.Unregister())
	assert.Empty(t, collect(t, r))
	// More Gets are not reported either.
	get(t, p, startServer(t)).Close()
	assert.Empty(t, collect(t, r))
}

// countingPool counts the snapshots taken of a pool.
type countingPool struct {
	*connpool.Pool
	n atomic.Int64
}

func (c *countingPool) Stats() connpool.Stats {
	c.n.Add(1)
	return c.Pool.Stats()
}

// countingBalancer counts the snapshots taken of a balancer.
type countingBalancer struct {
	*balancer.RoundRobin
	n atomic.Int64
}

func (c *countingBalancer) States() []balancer.State {
	c.n.Add(1)
	return c.RoundRobin.States()
}

func TestRegisterTakesOneSnapshotPerCollection(t *testing.T) {
	p, _, _ := exercise(t)
	cp := &countingPool{Pool: p}
	cb := &countingBalancer{RoundRobin: balancer.NewRoundRobin([]balancer.Endpoint{{Address: "10.0.0.1:80"}})}
	r, mp := newReader(t)
	register(t, mp, cp, connpoolotel.WithBalancer(cb))
	for i := range 3 {
		collect(t, r)
		assert.Equal(t, int64(i+1), cp.n.Load())
		assert.Equal(t, int64(i+1), cb.n.Load())
	}
}

// pipePool returns a pool whose dial connects to nothing, for addresses
// that no server listens on, closed when the test ends.
func pipePool(t testing.TB) *connpool.Pool {
	t.Helper()
	dial := func(string) (net.Conn, error) {
		client, server := net.Pipe()
		server.Close() // nothing is sent
		return client, nil
	}
	p, err := connpool.New(dial, 1, time.Hour)
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	return p
}

func TestRegisterServerAttributes(t *testing.T) {
	pool := poolName(connpoolotel.DefaultPoolName)
	for _, tt := range []struct {
		name    string
		address string
		want    []attribute.KeyValue
	}{
		{name: "IPv4", address: "10.0.0.7:11211",
			want: []attribute.KeyValue{attribute.String("server.address", "10.0.0.7"), attribute.Int("server.port", 11211)}},
		{name: "IPv6", address: "[::1]:80",
			want: []attribute.KeyValue{attribute.String("server.address", "::1"), attribute.Int("server.port", 80)}},
		{name: "Host", address: "cache.internal:6379",
			want: []attribute.KeyValue{attribute.String("server.address", "cache.internal"), attribute.Int("server.port", 6379)}},
		{name: "NamedPort", address: "cache.internal:redis",
			want: []attribute.KeyValue{attribute.String("server.address", "cache.internal:redis")}},
		{name: "LeadingZero", address: "cache.internal:080",
			want: []attribute.KeyValue{attribute.String("server.address", "cache.internal:080")}},
		{name: "PortTooLarge", address: "cache.internal:65536",
			want: []attribute.KeyValue{attribute.String("server.address", "cache.internal:65536")}},
		{name: "BracketedHost", address: "[cache.internal]:80",
			want: []attribute.KeyValue{attribute.String("server.address", "[cache.internal]:80")}},
		{name: "NoHost", address: ":80",
			want: []attribute.KeyValue{attribute.String("server.address", ":80")}},
		{name: "UnixSocket", address: "/run/cache.sock",
			want: []attribute.KeyValue{attribute.String("server.address", "/run/cache.sock")}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := pipePool(t)
			c, err := p.Get(tt.address)
			require.NoError(t, err)
			t.Cleanup(func() { c.Close() })
			r, mp := newReader(t)
			register(t, mp, p)
			want := append([]attribute.KeyValue{pool}, tt.want...)
			assert.Equal(t, int64(1), find[int64](t, collect(t, r), "connpool.dials", want...))
		})
	}
}

func TestRegisterPoolsApart(t *testing.T) {
	p1, p2 := pipePool(t), pipePool(t)
	for _, p := range []*connpool.Pool{p1, p2, p2} {
		c, err := p.Get("10.0.0.7:11211")
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
	}
	r, mp := newReader(t)
	register(t, mp, p1, connpoolotel.WithPoolName("one"), connpoolotel.WithoutAddressAttribute())
	register(t, mp, p2, connpoolotel.WithPoolName("two"), connpoolotel.WithoutAddressAttribute())
	ms := collect(t, r)
	assert.Equal(t, int64(1), find[int64](t, ms, "connpool.dials", poolName("one")))
	assert.Equal(t, int64(2), find[int64](t, ms, "connpool.dials", poolName("two")))
}

func TestRegisterErrors(t *testing.T) {
	_, mp := newReader(t)
	reg, err := connpoolotel.Register(mp, nil)
	assert.Error(t, err)
	assert.Nil(t, reg)

	// A nil MeterProvider means the global one, a no-op unless set.
	p := pipePool(t)
	reg, err = connpoolotel.Register(nil, p)
	require.NoError(t, err)
	assert.NoError(t, reg.Unregister())
}
