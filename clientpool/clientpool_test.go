package clientpool_test

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/seed73091bf1/connpool/balancer"
	"github.com/seed73091bf1/connpool/clientpool"
	"github.com/seed73091bf1/connpool/internal/testnet"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// client is a fake pooled client. It counts its live leases, so that tests
// can tell when one is held twice.
type client struct {
	id      int64
	address string
	closed  atomic.Bool
	closes  atomic.Int32
	leases  atomic.Int32
}

var errClosedTwice = errors.New("client closed twice")

func (c *client) Close() error {
	c.closes.Add(1)
	if !c.closed.CompareAndSwap(false, true) {
		return errClosedTwice
	}
	return nil
}

// dialer makes clients and remembers them.
type dialer struct {
	mu      sync.Mutex
	clients []*client
	fail    atomic.Bool
}

var errRefused = errors.New("refused")

func (d *dialer) dial(_ context.Context, address string) (*client, error) {
	if d.fail.Load() {
		return nil, errRefused
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	c := &client{id: int64(len(d.clients) + 1), address: address}
	d.clients = append(d.clients, c)
	return c, nil
}

func (d *dialer) dials() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.clients)
}

// open counts the clients not closed.
func (d *dialer) open() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, c := range d.clients {
		if !c.closed.Load() {
			n++
		}
	}
	return n
}

func newPool(t *testing.T, d *dialer, opts ...clientpool.Option) *clientpool.Pool[*client] {
	t.Helper()
	p, err := clientpool.New(d.dial, 4, time.Minute, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func TestGetReusesAndCloseReturns(t *testing.T) {
	var d dialer
	p := newPool(t, &d)
	ctx := context.Background()

	l, err := p.Get(ctx, "a")
	require.NoError(t, err)
	first := l.Value()
	require.NotNil(t, first)
	assert.False(t, l.Reused())
	assert.Equal(t, "a", l.Address())
	require.NoError(t, l.Close())

	l2, err := p.Get(ctx, "a")
	require.NoError(t, err)
	assert.Same(t, first, l2.Value(), "the idle value is reused")
	assert.True(t, l2.Reused())
	require.NoError(t, l2.Close())

	l3, err := p.GetFresh(ctx, "a")
	require.NoError(t, err)
	assert.NotSame(t, first, l3.Value(), "GetFresh dials")
	require.NoError(t, l3.Release())
	assert.True(t, l3.Value() == nil, "an ended lease has no value")
	assert.Equal(t, 2, d.dials())
	assert.Equal(t, 1, d.open(), "Release closed the fresh value")

	st := p.Stats()
	assert.Equal(t, int64(1), st.Idle)
	assert.Equal(t, int64(1), st.Released)
}

func TestLeaseIsOneShot(t *testing.T) {
	var d dialer
	p := newPool(t, &d)
	l, err := p.Get(context.Background(), "a")
	require.NoError(t, err)
	v := l.Value()
	require.NoError(t, l.Close())
	assert.ErrorIs(t, l.Close(), clientpool.ErrLeaseEnded)
	assert.ErrorIs(t, l.Release(), clientpool.ErrLeaseEnded)
	assert.Nil(t, l.Value())
	assert.False(t, v.closed.Load(), "a second Close or Release does nothing")
	assert.Equal(t, int64(1), p.Stats().Idle)
}

func TestNewRejectsBadArguments(t *testing.T) {
	var d dialer
	_, err := clientpool.New[*client](nil, 1, 0)
	assert.ErrorIs(t, err, clientpool.ErrInvalidConfig)
	_, err = clientpool.New(d.dial, -1, 0)
	assert.ErrorIs(t, err, clientpool.ErrInvalidConfig)
	_, err = clientpool.New(d.dial, 1, 0, clientpool.WithMaxActive(-1))
	assert.ErrorIs(t, err, clientpool.ErrInvalidConfig)
	_, err = clientpool.New(d.dial, 1, 0, clientpool.WithValidator(func(*client) error { return nil }, -time.Second))
	assert.ErrorIs(t, err, clientpool.ErrInvalidConfig)
	p, err := clientpool.New(d.dial, 1, 0, clientpool.Option{})
	require.NoError(t, err, "the zero Option does nothing")
	require.NoError(t, p.Close())
}

func TestDialResults(t *testing.T) {
	ctx := context.Background()
	t.Run("nil pointer", func(t *testing.T) {
		p, err := clientpool.New(func(context.Context, string) (*client, error) { return nil, nil }, 1, 0)
		require.NoError(t, err)
		defer p.Close()
		_, err = p.Get(ctx, "a")
		assert.ErrorIs(t, err, clientpool.ErrNilValue)
		var de *clientpool.DialError
		require.ErrorAs(t, err, &de)
		assert.Equal(t, "a", de.Address)
	})
	t.Run("nil interface", func(t *testing.T) {
		p, err := clientpool.New(func(context.Context, string) (io.Closer, error) { return nil, nil }, 1, 0)
		require.NoError(t, err)
		defer p.Close()
		_, err = p.Get(ctx, "a")
		assert.ErrorIs(t, err, clientpool.ErrNilValue)
	})
	t.Run("value with an error is closed", func(t *testing.T) {
		c := &client{}
		p, err := clientpool.New(func(context.Context, string) (*client, error) { return c, errRefused }, 1, 0)
		require.NoError(t, err)
		defer p.Close()
		_, err = p.Get(ctx, "a")
		assert.ErrorIs(t, err, errRefused)
		assert.True(t, c.closed.Load())
	})
}

func TestDoEndsTheLease(t *testing.T) {
	var d dialer
	p := newPool(t, &d)
	ctx := context.Background()

	var seen *client
	require.NoError(t, p.Do(ctx, "a", func(c *client) error { seen = c; return nil }))
	require.NotNil(t, seen)
	assert.Equal(t, int64(1), p.Stats().Idle, "success returns the value")

	errApp := errors.New("no such key")
	err := p.Do(ctx, "a", func(c *client) error { return clientpool.Clean(errApp) })
	assert.ErrorIs(t, err, errApp)
	assert.False(t, seen.closed.Load(), "a clean error keeps the value")

	err = p.Do(ctx, "a", func(c *client) error { return errApp })
	assert.ErrorIs(t, err, errApp)
	assert.True(t, seen.closed.Load(), "any other error releases it")

	assert.Panics(t, func() { _ = p.Do(ctx, "a", func(c *client) error { panic("boom") }) })
	assert.Equal(t, 0, d.open(), "a panic releases the value")
	st := p.Stats()
	assert.Equal(t, int64(0), st.Total)

	var de *clientpool.DoError
	require.ErrorAs(t, p.Do(ctx, "a", nil), &de)
}

// TestDoRetriesOnlyIdempotentRequests: the pool cannot see whether fn sent
// its request, so a connection error on a reused value is retried on a
// fresh one only for an idempotent request.
func TestDoRetriesOnlyIdempotentRequests(t *testing.T) {
	var d dialer
	p := newPool(t, &d)
	ctx := context.Background()
	require.NoError(t, p.Warm(ctx, "a", 1))

	calls := 0
	err := p.Do(ctx, "a", func(c *client) error { calls++; return io.EOF })
	assert.ErrorIs(t, err, io.EOF)
	assert.Equal(t, 1, calls, "not idempotent: no retry")

	require.NoError(t, p.Warm(ctx, "a", 1))
	calls = 0
	var got []*client
	err = p.Do(ctx, "a", func(c *client) error {
		calls++
		got = append(got, c)
		if calls == 1 {
			return io.EOF
		}
		return nil
	}, clientpool.Idempotent())
	require.NoError(t, err)
	require.Equal(t, 2, calls, "idempotent: retried once")
	assert.True(t, got[0].closed.Load(), "the stale value was released")
	assert.NotSame(t, got[0], got[1])
}

func TestWarmDrainStats(t *testing.T) {
	var d dialer
	p := newPool(t, &d)
	ctx := context.Background()
	require.NoError(t, p.Warm(ctx, "a", 3))
	require.NoError(t, p.Warm(ctx, "b", 1))
	st := p.Stats()
	assert.Equal(t, int64(4), st.Idle)
	require.Len(t, st.Destinations, 2)

	require.NoError(t, p.Drain("a"))
	assert.Equal(t, 3, d.dials()-d.open(), "Drain closed the idle values of a")
	assert.Equal(t, int64(1), p.Stats().Idle)
	assert.Equal(t, int64(3), p.Stats().ClosedDrained)
}

func TestCloseClosesEverything(t *testing.T) {
	var d dialer
	p, err := clientpool.New(d.dial, 4, time.Minute, clientpool.WithMaxActive(1))
	require.NoError(t, err)
	ctx := context.Background()
	l, err := p.Get(ctx, "a")
	require.NoError(t, err)
	require.NoError(t, p.Warm(ctx, "b", 1))

	waited := make(chan error, 1)
	go func() {
		_, err := p.Get(ctx, "a")
		waited <- err
	}()
	require.Eventually(t, func() bool { return p.Stats().Waiting == 1 }, 10*time.Second, time.Millisecond)
	require.NoError(t, p.Close())
	assert.ErrorIs(t, <-waited, clientpool.ErrClosed)
	assert.ErrorIs(t, p.Close(), clientpool.ErrClosed)
	_, err = p.Get(ctx, "a")
	assert.ErrorIs(t, err, clientpool.ErrClosed)
	assert.Equal(t, 1, d.open(), "the leased value stays open until its lease ends")
	require.NoError(t, l.Close())
	assert.Equal(t, 0, d.open())
}

func TestValidator(t *testing.T) {
	var d dialer
	var bad atomic.Bool
	p := newPool(t, &d, clientpool.WithValidator(func(c *client) error {
		if bad.Load() {
			return errors.New("ping failed")
		}
		return nil
	}, 0))
	ctx := context.Background()
	require.NoError(t, p.Warm(ctx, "a", 1))
	l, err := p.Get(ctx, "a")
	require.NoError(t, err)
	assert.True(t, l.Reused())
	require.NoError(t, l.Close())

	bad.Store(true)
	l, err = p.Get(ctx, "a")
	require.NoError(t, err)
	assert.False(t, l.Reused(), "the rejected value was replaced by a dial")
	require.NoError(t, l.Close())
	assert.Equal(t, int64(1), p.Stats().ClosedValidatorFailed)
}

// notifying is a client that tells when it closed and whether it is busy,
// as drpc conns do.
type notifying struct {
	client
	dead      chan struct{}
	unblocked chan struct{}
}

func (n *notifying) Closed() <-chan struct{}    { return n.dead }
func (n *notifying) Unblocked() <-chan struct{} { return n.unblocked }

// unblock marks n ready for another call.
func (n *notifying) unblock() { close(n.unblocked) }

type notifyingDialer struct {
	mu  sync.Mutex
	all []*notifying
}

func (d *notifyingDialer) dial(_ context.Context, address string) (*notifying, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := &notifying{client: client{id: int64(len(d.all) + 1), address: address},
		dead: make(chan struct{}), unblocked: make(chan struct{})}
	close(n.unblocked) // ready unless a test blocks it
	d.all = append(d.all, n)
	return n, nil
}

func (d *notifyingDialer) dials() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.all)
}

func TestClosedChannelMeansDead(t *testing.T) {
	var d notifyingDialer
	p, err := clientpool.New(d.dial, 4, time.Minute)
	require.NoError(t, err)
	defer p.Close()
	ctx := context.Background()
	require.NoError(t, p.Warm(ctx, "a", 1))
	l, err := p.Get(ctx, "a")
	require.NoError(t, err)
	assert.Same(t, d.all[0], l.Value(), "an open Closed channel means alive")
	require.NoError(t, l.Close())

	close(d.all[0].dead)
	l, err = p.Get(ctx, "a")
	require.NoError(t, err)
	assert.NotSame(t, d.all[0], l.Value(), "a closed Closed channel means dead")
	require.NoError(t, l.Close())
	assert.Equal(t, int64(1), p.Stats().ClosedDeadAtCheckout)
	require.NoError(t, p.Close())
	assert.True(t, d.all[0].closed.Load(), "the dead value was closed, in the background")
}

func TestBlockedValuesAreSkippedNotDiscarded(t *testing.T) {
	var d notifyingDialer
	p, err := clientpool.New(d.dial, 4, time.Minute)
	require.NoError(t, err)
	defer p.Close()
	ctx := context.Background()
	require.NoError(t, p.Warm(ctx, "a", 1))
	blocked := d.all[0]
	blocked.unblocked = make(chan struct{}) // busy cancelling a call

	l, err := p.Get(ctx, "a")
	require.NoError(t, err)
	assert.NotSame(t, blocked, l.Value(), "a blocked value is skipped")
	assert.False(t, blocked.closed.Load(), "and not discarded")
	require.NoError(t, l.Close())

	blocked.unblock()
	got := map[*notifying]bool{}
	for range 2 { // both are idle now; take both
		l, err := p.Get(ctx, "a")
		require.NoError(t, err)
		defer l.Close()
		got[l.Value()] = true
	}
	assert.True(t, got[blocked], "once unblocked it is handed out")
	assert.Equal(t, 2, d.dials())
}

// TestWaiterGetsAValueThatUnblocks: at the WithMaxActive limit, with the
// only idle value blocked, a checkout waits; when the value unblocks, it
// gets it without any Close to wake it.
func TestWaiterGetsAValueThatUnblocks(t *testing.T) {
	var d notifyingDialer
	p, err := clientpool.New(d.dial, 4, time.Minute, clientpool.WithMaxActive(1))
	require.NoError(t, err)
	defer p.Close()
	ctx := context.Background()
	l, err := p.Get(ctx, "a")
	require.NoError(t, err)
	v := l.Value()
	v.unblocked = make(chan struct{})
	require.NoError(t, l.Close()) // returned while still busy

	got := make(chan *notifying, 1)
	go func() {
		l, err := p.Get(ctx, "a")
		if err != nil {
			got <- nil
			return
		}
		got <- l.Value()
		_ = l.Close()
	}()
	require.Eventually(t, func() bool { return p.Stats().Waiting == 1 }, 10*time.Second, time.Millisecond)
	v.unblock()
	select {
	case w := <-got:
		assert.Same(t, v, w)
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting checkout never got the value that unblocked")
	}
	assert.Equal(t, 1, d.dials())
}

// socketClient runs on a TCP conn that it does not expose as a net.Conn.
type socketClient struct{ nc net.Conn }

func (s *socketClient) NetConn() net.Conn { return s.nc }
func (s *socketClient) Close() error      { return s.nc.Close() }

func TestNetConnValuesAreCheckedOnTheirSocket(t *testing.T) {
	srv := testnet.StartEcho(t)
	p, err := clientpool.New(func(ctx context.Context, address string) (*socketClient, error) {
		nc, err := (&net.Dialer{}).DialContext(ctx, "tcp", address)
		if err != nil {
			return nil, err
		}
		return &socketClient{nc}, nil
	}, 4, time.Minute)
	require.NoError(t, err)
	defer p.Close()
	ctx := context.Background()
	require.NoError(t, p.Warm(ctx, srv.Addr(), 1))
	require.Eventually(t, func() bool { return srv.Open() == 1 }, 10*time.Second, time.Millisecond)
	srv.CloseAll()
	// The peer's FIN reaches the socket soon after; until then the check
	// passes. Poll until the pool discards the value at checkout.
	require.Eventually(t, func() bool {
		l, err := p.Get(ctx, srv.Addr())
		if err != nil {
			return false
		}
		reused := l.Reused()
		_ = l.Release()
		return !reused
	}, 10*time.Second, time.Millisecond)
	assert.GreaterOrEqual(t, p.Stats().ClosedDeadAtCheckout, int64(1))
}

func TestBalanced(t *testing.T) {
	var d dialer
	p := newPool(t, &d)
	rr := balancerRoundRobin("a", "b")
	bp := clientpool.NewBalanced(p, rr)
	ctx := context.Background()
	seen := map[string]int{}
	for range 4 {
		require.NoError(t, bp.Do(ctx, func(c *client) error { seen[c.address]++; return nil }))
	}
	assert.Equal(t, map[string]int{"a": 2, "b": 2}, seen)

	l, err := bp.Get(ctx)
	require.NoError(t, err)
	addr := l.Address()
	assert.Equal(t, addr, l.Value().address)
	require.NoError(t, l.Release())
	assert.ErrorIs(t, l.Close(), clientpool.ErrLeaseEnded)
	assert.Nil(t, l.Value())

	l, err = bp.Get(ctx)
	require.NoError(t, err)
	require.NoError(t, l.CloseWithError(errors.New("bad reply")))

	assert.Panics(t, func() { clientpool.NewBalanced[*client](nil, rr) })
	var de *clientpool.DoError
	assert.ErrorAs(t, bp.Do(ctx, nil), &de)
}

func balancerRoundRobin(addrs ...string) *balancer.RoundRobin {
	var eps []balancer.Endpoint
	for _, a := range addrs {
		eps = append(eps, balancer.Endpoint{Address: a})
	}
	return balancer.NewRoundRobin(eps)
}

func TestMaxTotal(t *testing.T) {
	var d dialer
	p := newPool(t, &d, clientpool.WithMaxTotal(2), clientpool.WithWaitTimeout(20*time.Millisecond))
	ctx := context.Background()
	a, err := p.Get(ctx, "a")
	require.NoError(t, err)
	b, err := p.Get(ctx, "b")
	require.NoError(t, err)
	_, err = p.Get(ctx, "c")
	assert.ErrorIs(t, err, clientpool.ErrExhausted, "every value is leased: the checkout waits, then fails")
	require.NoError(t, a.Close())
	c, err := p.Get(ctx, "c")
	require.NoError(t, err, "a's idle value makes room")
	assert.True(t, a.Value() == nil)
	assert.Equal(t, 2, d.open())
	require.NoError(t, b.Close())
	require.NoError(t, c.Close())
}
