package balancer_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/balancer"
	"github.com/seed73091bf1/connpool/internal/testnet"
)

func newConnPool(t *testing.T) *connpool.Pool {
	t.Helper()
	dial := func(address string) (net.Conn, error) { return net.DialTimeout("tcp", address, time.Second) }
	p, err := connpool.New(dial, 4, time.Minute)
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	return p
}

// startBackends starts n echo servers that can be stopped and restarted,
// and returns them with their endpoints.
func startBackends(t *testing.T, n int) ([]*testnet.EchoServer, []balancer.Endpoint) {
	t.Helper()
	servers := make([]*testnet.EchoServer, n)
	eps := make([]balancer.Endpoint, n)
	for i := range servers {
		servers[i] = testnet.StartFault(t, testnet.Faults{})
		eps[i] = balancer.Endpoint{Address: servers[i].Addr()}
	}
	return servers, eps
}

func destination(p *connpool.Pool, addr string) connpool.DestinationStats {
	for _, d := range p.Stats().Destinations {
		if d.Address == addr {
			return d
		}
	}
	return connpool.DestinationStats{}
}

func TestPoolSurvivesADeadBackendAndReadmitsIt(t *testing.T) {
	servers, eps := startBackends(t, 4)
	p := newConnPool(t)
	rr := balancer.NewRoundRobin(nil, balancer.WithEjection(2, 50*time.Millisecond, time.Second))
	bp := balancer.NewPool(p, rr)
	bp.Update(eps)

	request := func(i int) {
		t.Helper()
		c, err := bp.Get(context.Background())
		require.NoError(t, err, "request %d", i)
		require.NoError(t, testnet.RoundTrip(c, fmt.Sprint(i)), "request %d", i)
		require.NoError(t, c.Close())
	}
	for i := range 40 {
		request(i)
	}

	dead := servers[1]
	dead.Refuse() // its sessions close and its dials are refused
	for i := range 200 {
		request(i) // none fails: dead conns are discarded, failed dials retried elsewhere
	}
	require.True(t, state(rr.States(), dead.Addr()).Ejected, "the dead backend is ejected")
	errsWhileEjected := destination(p, dead.Addr()).DialErrors
	for i := range 40 {
		request(i)
	}
	if state(rr.States(), dead.Addr()).Ejected {
		assert.Equal(t, errsWhileEjected, destination(p, dead.Addr()).DialErrors, "no dials while ejected")
	}

	require.NoError(t, dead.Restart())
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; destination(p, dead.Addr()).Reuses+destination(p, dead.Addr()).Dials == 0 ||
		destination(p, dead.Addr()).Total == 0; i++ {
		require.False(t, time.Now().After(deadline), "the backend is never picked again")
		request(i)
		time.Sleep(time.Millisecond) // let the ejection run out
	}
	assert.False(t, state(rr.States(), dead.Addr()).Ejected)
}

func TestPoolConnReportsItsOutcome(t *testing.T) {
	srv := testnet.StartEcho(t)
	p := newConnPool(t)
	rr := balancer.NewRoundRobin(nil, balancer.WithEjection(5, time.Hour, time.Hour))
	bp := balancer.NewPool(p, rr)
	bp.Update([]balancer.Endpoint{{Address: srv.Addr()}})

	c, err := bp.Get(context.Background())
	require.NoError(t, err)
	bc, ok := c.(*balancer.Conn)
	require.True(t, ok)
	assert.Equal(t, srv.Addr(), bc.Address(), "the embedded *connpool.Conn works")
	assert.EqualValues(t, 1, state(rr.States(), srv.Addr()).InFlight)
	require.NoError(t, bc.Release())
	assert.ErrorIs(t, bc.Release(), net.ErrClosed)
	s := state(rr.States(), srv.Addr())
	assert.EqualValues(t, 1, s.ConsecutiveFailures, "Release reports a failure, once")
	assert.EqualValues(t, 0, s.InFlight)

	c, err = bp.Get(context.Background())
	require.NoError(t, err)
	require.NoError(t, c.Close())
	assert.EqualValues(t, 0, state(rr.States(), srv.Addr()).ConsecutiveFailures, "Close reports success")
}

func TestPoolUpdateDrainsRemovedAddresses(t *testing.T) {
	a, b := testnet.StartEcho(t), testnet.StartEcho(t)
	p := newConnPool(t)
	bp := balancer.NewPool(p, balancer.NewRoundRobin(nil))
	bp.Update([]balancer.Endpoint{{Address: a.Addr()}, {Address: b.Addr()}})
	for range 4 {
		c, err := bp.Get(context.Background())
		require.NoError(t, err)
		require.NoError(t, testnet.RoundTrip(c, "x"))
		require.NoError(t, c.Close())
	}
	require.Positive(t, destination(p, a.Addr()).Idle)

	bp.Update([]balancer.Endpoint{{Address: b.Addr()}})
	assert.Zero(t, destination(p, a.Addr()).Total, "the removed address is drained")
	assert.Positive(t, p.Stats().ClosedDrained)
	for range 4 {
		c, err := bp.Get(context.Background())
		require.NoError(t, err)
		assert.Equal(t, b.Addr(), c.(*balancer.Conn).Address())
		require.NoError(t, c.Close())
	}
}

func TestPoolWithNoEndpoints(t *testing.T) {
	bp := balancer.NewPool(newConnPool(t), balancer.NewRandom(nil))
	_, err := bp.Get(context.Background())
	assert.ErrorIs(t, err, balancer.ErrNoEndpoints)
}

// Regression: NewPool accepted nil and failed later with a nil dereference
// on the request path.
func TestNewPoolPanicsOnNilArgumentsWithAClearMessage(t *testing.T) {
	assert.PanicsWithValue(t, "balancer: NewPool needs a *connpool.Pool made by connpool.New; got nil",
		func() { balancer.NewPool(nil, balancer.NewRandom(nil)) })
	assert.PanicsWithValue(t, "balancer: NewPool needs a Balancer; got nil",
		func() { balancer.NewPool(newConnPool(t), nil) })
}

func TestPoolMovesAKeyedRequestOnWhenItsBackendIsDown(t *testing.T) {
	servers, eps := startBackends(t, 3)
	p := newConnPool(t)
	m := balancer.NewMaglev(nil)
	bp := balancer.NewPool(p, m)
	bp.Update(eps)

	ctx := balancer.WithKey(context.Background(), "user:7")
	c, err := bp.Get(ctx)
	require.NoError(t, err)
	home := c.(*balancer.Conn).Address()
	require.NoError(t, c.Close())
	for _, srv := range servers {
		if srv.Addr() == home {
			srv.Refuse()
		}
	}
	c, err = bp.Get(ctx)
	require.NoError(t, err, "the key's next choice serves it")
	assert.NotEqual(t, home, c.(*balancer.Conn).Address())
	require.NoError(t, testnet.RoundTrip(c, "x"))
	require.NoError(t, c.Close())
}

// TestPoolBackendDiesUnderConcurrentLoad kills one of four backends while
// eight clients send idempotent requests through Do, which retries a request
// whose conn broke before any reply: on a fresh conn to the same backend
// for a stale reused conn, and on another backend for a fresh conn that the
// dying backend accepted and reset. No request fails.
func TestPoolBackendDiesUnderConcurrentLoad(t *testing.T) {
	servers, eps := startBackends(t, 4)
	dead := servers[2]
	p := newConnPool(t)
	rr := balancer.NewRoundRobin(nil, balancer.WithEjection(2, 300*time.Millisecond, time.Second))
	bp := balancer.NewPool(p, rr)
	bp.Update(eps)

	request := func(msg string) error {
		return bp.Do(context.Background(), func(c *balancer.Conn) error {
			return testnet.RoundTrip(c, msg)
		}, connpool.Idempotent())
	}

	var (
		failures atomic.Int64
		stop     atomic.Bool
		wg       sync.WaitGroup
	)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				if err := request(fmt.Sprintf("%d-%d", w, i)); err != nil {
					failures.Add(1)
					t.Logf("request failed: %v", err)
				}
			}
		}()
	}
	waitFor := func(what string, cond func() bool) {
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			require.False(t, time.Now().After(deadline), what)
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitFor("load never started", func() bool { return destination(p, dead.Addr()).Reuses > 50 })
	dead.Refuse()
	waitFor("the dead backend is never ejected", func() bool { return state(rr.States(), dead.Addr()).Ejected })
	// Picks made just before the ejection may still dial; wait for them.
	waitFor("picks of the dead backend never end", func() bool { return state(rr.States(), dead.Addr()).InFlight == 0 })
	before := destination(p, dead.Addr()).DialErrors
	time.Sleep(100 * time.Millisecond) // load runs while it is ejected
	if state(rr.States(), dead.Addr()).Ejected {
		assert.Equal(t, before, destination(p, dead.Addr()).DialErrors, "no dials to an ejected backend")
	}
	require.NoError(t, dead.Restart())
	waitFor("the backend is never picked again", func() bool {
		return !state(rr.States(), dead.Addr()).Ejected && destination(p, dead.Addr()).Total > 0
	})
	stop.Store(true)
	wg.Wait()
	assert.Zero(t, failures.Load(), "failed requests")
}

// Regression: Get reported the pool's own errors (ErrExhausted, a cancelled
// context, ErrClosed) to the balancer as failures of the backend, which
// ejected healthy backends exactly when the pool was short of conns.
func TestPoolGetCountsOnlyBackendFaultsAgainstABackend(t *testing.T) {
	_, eps := startBackends(t, 1)
	p, err := connpool.New(func(address string) (net.Conn, error) { return net.DialTimeout("tcp", address, time.Second) },
		4, time.Minute, connpool.WithMaxActive(1), connpool.WithWaitTimeout(time.Millisecond))
	require.NoError(t, err)
	b := balancer.NewRoundRobin(eps, balancer.WithEjection(1, time.Hour, time.Hour), balancer.WithMaxEjectedShare(1))
	bp := balancer.NewPool(p, b)

	held, err := bp.Get(context.Background())
	require.NoError(t, err)
	_, err = bp.Get(context.Background())
	require.ErrorIs(t, err, connpool.ErrExhausted)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = bp.Get(ctx)
	require.ErrorIs(t, err, context.Canceled)
	require.NoError(t, held.Close())
	require.NoError(t, p.Close())
	_, err = bp.Get(context.Background())
	require.ErrorIs(t, err, connpool.ErrClosed)

	st := b.States()[0]
	assert.False(t, st.Ejected, "a local error ejected a healthy backend")
	assert.Zero(t, st.ConsecutiveFailures)
	assert.Zero(t, st.InFlight, "every pick was ended")
}

// Regression: ErrPickNotUsed was compared with ==, so a wrapped one counted
// as a failure; and a failed Pick returned a nil done.
func TestPickNotUsedIsMatchedWithErrorsIsAndAFailedPicksDoneIsSafe(t *testing.T) {
	b := balancer.NewRoundRobin([]balancer.Endpoint{{Address: "a:1"}}, balancer.WithEjection(1, time.Hour, time.Hour), balancer.WithMaxEjectedShare(1))
	_, done, err := b.Pick(context.Background())
	require.NoError(t, err)
	done(fmt.Errorf("lookup only: %w", balancer.ErrPickNotUsed))
	st := b.States()[0]
	assert.False(t, st.Ejected)
	assert.Zero(t, st.ConsecutiveFailures)

	for name, empty := range map[string]balancer.Balancer{
		"RoundRobin":         balancer.NewRoundRobin(nil),
		"Random":             balancer.NewRandom(nil),
		"WeightedRoundRobin": balancer.NewWeightedRoundRobin(nil),
		"LeastRequest":       balancer.NewLeastRequest(nil),
		"PeakEWMA":           balancer.NewPeakEWMA(nil),
		"Maglev":             balancer.NewMaglev(nil),
	} {
		_, done, err := empty.Pick(context.Background())
		assert.ErrorIs(t, err, balancer.ErrNoEndpoints, name)
		assert.NotPanics(t, func() { done(nil) }, name)
	}
}

// Regression: NewPool never learned the endpoints its balancer was built
// with, so an Update that removed one of them drained nothing.
func TestNewPoolKnowsTheConstructorsEndpoints(t *testing.T) {
	_, eps := startBackends(t, 2)
	p := newConnPool(t)
	bp := balancer.NewPool(p, balancer.NewRoundRobin(eps))
	for range 4 {
		c, err := bp.Get(context.Background())
		require.NoError(t, err)
		require.NoError(t, c.Close())
	}
	require.Positive(t, destination(p, eps[1].Address).Idle)
	bp.Update(eps[:1])
	assert.Zero(t, destination(p, eps[1].Address).Total, "the removed address is drained")
}

// stuckBalancer picks one address whatever Update says, as a pick made just
// before an Update can.
type stuckBalancer struct{ addr string }

func (s stuckBalancer) Pick(context.Context) (string, func(error), error) {
	return s.addr, func(error) {}, nil
}
func (stuckBalancer) Update([]balancer.Endpoint) {}

// Regression: a Get that picked just before an Update checked out after its
// Drain, and its conn was pooled under an address nothing would drain again.
func TestConnToAnAddressRemovedMeanwhileIsNotPooled(t *testing.T) {
	_, eps := startBackends(t, 1)
	p := newConnPool(t)
	bp := balancer.NewPool(p, stuckBalancer{eps[0].Address})
	bp.Update(eps)
	bp.Update(nil) // the address leaves the set; the stuck pick still returns it

	c, err := bp.Get(context.Background())
	require.NoError(t, err)
	require.NoError(t, c.Close())
	s := destination(p, eps[0].Address)
	assert.Zero(t, s.Idle, "a conn to a removed address must not be pooled")
	assert.Zero(t, s.Total)
}

// Regression: Update drained removed addresses, closing their sockets, while
// holding its lock, so a slow Close held up every other Update.
func TestPoolUpdateDoesNoIOUnderItsLock(t *testing.T) {
	gate := make(chan struct{})
	d := testnet.FakeDialer{OnClose: func(c *testnet.FakeConn) {
		if c.Address == "slow:1" {
			<-gate
		}
	}}
	p, err := connpool.New(d.Dial, 4, time.Minute)
	require.NoError(t, err)
	defer func() { require.NoError(t, p.Close()) }()
	defer close(gate) // runs first: lets the slow Close return
	bp := balancer.NewPool(p, balancer.NewRoundRobin(nil))
	bp.Update([]balancer.Endpoint{{Address: "slow:1"}})
	c, err := bp.Get(context.Background())
	require.NoError(t, err)
	require.NoError(t, c.Close()) // idle now; closing it will block

	first := make(chan struct{})
	go func() {
		defer close(first)
		bp.Update([]balancer.Endpoint{{Address: "b:1"}}) // drains slow:1
	}()
	eventuallyTrue(t, func() bool { return p.Stats().ClosedDrained == 1 }, "the drain has begun")
	second := make(chan struct{})
	go func() {
		defer close(second)
		bp.Update([]balancer.Endpoint{{Address: "b:1"}, {Address: "c:1"}})
	}()
	select {
	case <-second:
	case <-time.After(10 * time.Second):
		t.Error("an Update waited for another Update's socket Close")
	}
	gate <- struct{}{}
	<-first
	<-second
}

// eventuallyTrue polls cond until it holds or 10 s pass.
func eventuallyTrue(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("never: " + what)
		}
		time.Sleep(time.Millisecond)
	}
}

// A balancer that does not report its endpoints, used without Pool.Update,
// leaves the set unknown: its conns are pooled as usual.
func TestPoolWithAnUnknownSetPoolsConns(t *testing.T) {
	_, eps := startBackends(t, 1)
	p := newConnPool(t)
	bp := balancer.NewPool(p, stuckBalancer{eps[0].Address})
	c, err := bp.Get(context.Background())
	require.NoError(t, err)
	require.NoError(t, c.Close())
	assert.EqualValues(t, 1, destination(p, eps[0].Address).Idle)
}

// Regression: a dial function that panicked on Get's goroutine left its pick
// counted in flight for good, steering load-aware policies away from a
// healthy backend.
func TestPanickingDialDoesNotLeaveAPickInFlight(t *testing.T) {
	dial := func(string) (net.Conn, error) { panic("dial bug") }
	p, err := connpool.New(dial, 4, time.Minute)
	require.NoError(t, err)
	defer p.Close()
	lr := balancer.NewLeastRequest([]balancer.Endpoint{{Address: "a:1"}})
	bp := balancer.NewPool(p, lr)

	assert.PanicsWithValue(t, "dial bug", func() { _, _ = bp.Get(context.Background()) }, "the panic goes on")
	st := lr.States()[0]
	assert.Zero(t, st.InFlight, "the pick was ended")
	assert.Zero(t, st.ConsecutiveFailures, "a panicking dial function is the client's fault")
}

// A request that failed at the application level (an error reply on a
// clean conn) reports a failure to the balancer and keeps the conn pooled.
func TestCloseWithErrorReportsAFailureAndKeepsTheConn(t *testing.T) {
	srv := testnet.StartEcho(t)
	p := newConnPool(t)
	rr := balancer.NewRoundRobin(nil, balancer.WithEjection(2, time.Hour, time.Hour), balancer.WithMaxEjectedShare(1))
	bp := balancer.NewPool(p, rr)
	bp.Update([]balancer.Endpoint{{Address: srv.Addr()}})

	c, err := bp.Get(context.Background())
	require.NoError(t, err)
	require.NoError(t, c.(*balancer.Conn).CloseWithError(errRequest))
	assert.EqualValues(t, 1, state(rr.States(), srv.Addr()).ConsecutiveFailures, "the failure is reported")
	assert.EqualValues(t, 1, destination(p, srv.Addr()).Idle, "the conn went back to the pool")

	c, err = bp.Get(context.Background())
	require.NoError(t, err)
	assert.True(t, c.(*balancer.Conn).Reused(), "the same conn is handed out again")
	require.NoError(t, c.(*balancer.Conn).CloseWithError(fmt.Errorf("lookup only: %w", balancer.ErrPickNotUsed)))
	assert.EqualValues(t, 1, state(rr.States(), srv.Addr()).ConsecutiveFailures, "a pick not used counts as neither")

	c, err = bp.Get(context.Background())
	require.NoError(t, err)
	require.NoError(t, c.(*balancer.Conn).CloseWithError(errRequest))
	assert.True(t, state(rr.States(), srv.Addr()).Ejected, "two failures eject it")
	assert.EqualValues(t, 1, destination(p, srv.Addr()).Idle)
}

// Regression: end to end over three loopback servers, PeakEWMA never sent
// one of them a connection.
func TestPeakEWMAPoolReachesEveryBackend(t *testing.T) {
	srvs, eps := startBackends(t, 3)
	p := newConnPool(t)
	bp := balancer.NewPool(p, balancer.NewPeakEWMA(eps))
	for range 300 {
		c, err := bp.Get(context.Background())
		require.NoError(t, err)
		_, err = c.Write([]byte("x\n"))
		require.NoError(t, err)
		_, err = io.ReadFull(c, make([]byte, 2))
		require.NoError(t, err)
		require.NoError(t, c.Close())
	}
	for _, srv := range srvs {
		assert.Positive(t, destination(p, srv.Addr()).Dials, "%s got a connection", srv.Addr())
	}
}

func TestWithDialFailedIsCalledForEachFailedDial(t *testing.T) {
	servers, eps := startBackends(t, 2)
	p := newConnPool(t)
	type failure struct {
		addr string
		err  error
	}
	var (
		mu       sync.Mutex
		failures []failure
	)
	bp := balancer.NewPool(p, balancer.NewRoundRobin(eps), balancer.WithDialFailed(func(addr string, err error) {
		mu.Lock()
		defer mu.Unlock()
		failures = append(failures, failure{addr, err})
	}))
	servers[0].Refuse()
	for range 4 {
		c, err := bp.Get(context.Background())
		require.NoError(t, err, "the other backend serves")
		require.NoError(t, c.Close())
	}
	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, failures)
	for _, f := range failures {
		assert.Equal(t, servers[0].Addr(), f.addr)
		var de *connpool.DialError
		assert.ErrorAs(t, f.err, &de)
	}
}
