package connpool_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/internal/testnet"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newPool returns a pool that is closed when the test ends.
func newPool(tb testing.TB, dial connpool.Dial, capacity int, timeout time.Duration, opts ...connpool.Option) *connpool.Pool {
	tb.Helper()
	p, err := connpool.New(dial, capacity, timeout, opts...)
	require.NoError(tb, err)
	tb.Cleanup(func() { p.Close() })
	return p
}

// checkout gets n conns to address.
func checkout(tb testing.TB, p *connpool.Pool, address string, n int) []net.Conn {
	tb.Helper()
	conns := make([]net.Conn, n)
	for i := range conns {
		c, err := p.Get(address)
		require.NoError(tb, err)
		conns[i] = c
	}
	return conns
}

// giveBack returns conns to the pool with Close.
func giveBack(tb testing.TB, conns ...net.Conn) {
	tb.Helper()
	for _, c := range conns {
		require.NoError(tb, c.Close())
	}
}

// tcpDial dials over loopback TCP.
func tcpDial(address string) (net.Conn, error) { return net.Dial("tcp", address) }

// id names the socket behind a pooled conn.
func id(c net.Conn) string { return c.LocalAddr().String() }

// destination returns the stats of address, or zero stats if the pool does
// not know it.
func destination(s connpool.Stats, address string) connpool.DestinationStats {
	for _, d := range s.Destinations {
		if d.Address == address {
			return d
		}
	}
	return connpool.DestinationStats{Address: address}
}

// eventually polls cond every few milliseconds until it holds or 10 s pass.
func eventually(tb testing.TB, cond func() bool, format string, args ...any) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("condition never held: "+format, args...)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestNewRejectsBadArguments(t *testing.T) {
	var d testnet.FakeDialer
	dialCtx := func(context.Context, string) (net.Conn, error) { return nil, errors.New("unused") }
	tests := []struct {
		name     string
		dial     connpool.Dial
		capacity int
		timeout  time.Duration
		opts     []connpool.Option
		wantErr  string
	}{
		{name: "negative capacity", dial: d.Dial, capacity: -1, wantErr: "capacity -1 is negative"},
		{name: "negative timeout", dial: d.Dial, capacity: 1, timeout: -time.Second, wantErr: "timeout -1s is negative"},
		{name: "nil dial", capacity: 1, wantErr: "dial is nil"},
		{name: "nil dial and nil dial context", capacity: 1, opts: []connpool.Option{connpool.WithDialContext(nil)}, wantErr: "dial is nil"},
		{name: "zero capacity and timeout", dial: d.Dial},
		{name: "nil dial with dial context", capacity: 1, opts: []connpool.Option{connpool.WithDialContext(dialCtx)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := connpool.New(tt.dial, tt.capacity, tt.timeout, tt.opts...)
			if tt.wantErr == "" {
				require.NoError(t, err)
				assert.NoError(t, p.Close())
				return
			}
			assert.Nil(t, p)
			assert.ErrorIs(t, err, connpool.ErrInvalidConfig)
			assert.ErrorContains(t, err, tt.wantErr)
		})
	}
}

func TestGetReusesMostRecentlyReturnedConnFirst(t *testing.T) {
	var d testnet.FakeDialer
	p := newPool(t, d.Dial, 8, 0)

	conns := checkout(t, p, "a:1", 3)
	giveBack(t, conns...)
	for i := 2; i >= 0; i-- {
		c, err := p.Get("a:1")
		require.NoError(t, err)
		assert.Equal(t, id(conns[i]), id(c), "Get must pop the most recently returned conn")
		defer c.Close()
	}
	assert.EqualValues(t, 3, d.Dials())
	s := p.Stats()
	assert.EqualValues(t, 3, s.Reuses)
	assert.EqualValues(t, 3, s.Dials)
}

func TestGetKeepsAddressesApart(t *testing.T) {
	var d testnet.FakeDialer
	p := newPool(t, d.Dial, 8, 0)

	a := checkout(t, p, "a:1", 1)[0]
	giveBack(t, a)

	b, err := p.Get("b:1")
	require.NoError(t, err)
	defer b.Close()
	assert.NotEqual(t, id(a), id(b), "a conn of a:1 must not serve b:1")
	assert.Equal(t, "b:1", b.(*connpool.Conn).Address())
	assert.Equal(t, "b:1", b.RemoteAddr().String())
}

func TestGetReturnsConnOfDynamicTypeConn(t *testing.T) {
	srv := testnet.StartEcho(t)
	p := newPool(t, tcpDial, 2, time.Minute)

	c, err := p.Get(srv.Addr())
	require.NoError(t, err)
	pc, ok := c.(*connpool.Conn)
	require.True(t, ok, "dynamic type is %T", c)
	require.NoError(t, testnet.RoundTrip(pc, "hello"))
	require.NoError(t, pc.Release())
	eventually(t, func() bool { return srv.Open() == 0 }, "server still has %d sessions", srv.Open())
}

func TestNewAlwaysDials(t *testing.T) {
	var d testnet.FakeDialer
	p := newPool(t, d.Dial, 8, 0)

	c := checkout(t, p, "a:1", 1)[0]
	giveBack(t, c)

	fresh, err := p.New("a:1")
	require.NoError(t, err)
	assert.NotEqual(t, id(c), id(fresh), "New must not reuse an idle conn")
	assert.EqualValues(t, 2, d.Dials())

	// The fresh conn is bound to the address and returns to its stack.
	require.NoError(t, fresh.Close())
	s := destination(p.Stats(), "a:1")
	assert.EqualValues(t, 2, s.Total)
	assert.EqualValues(t, 2, s.Idle)
}

func TestCloseKeepsAtMostCapacityIdleConnsPerAddress(t *testing.T) {
	var d testnet.FakeDialer
	p := newPool(t, d.Dial, 2, 0)

	giveBack(t, checkout(t, p, "a:1", 5)...)
	s := destination(p.Stats(), "a:1")
	assert.EqualValues(t, 2, s.Idle)
	assert.EqualValues(t, 2, s.Total)
	assert.EqualValues(t, 3, s.ClosedBucketFull)
	assert.EqualValues(t, 2, d.Open(), "conns beyond capacity must be closed")
}

func TestZeroCapacityKeepsNoConns(t *testing.T) {
	var d testnet.FakeDialer
	p := newPool(t, d.Dial, 0, 0)

	giveBack(t, checkout(t, p, "a:1", 1)...)
	assert.EqualValues(t, 0, d.Open())
	assert.EqualValues(t, 0, p.Stats().Total)
}

// Regression: the predecessor counted and pooled a conn again on every Close.
func TestConnCloseOrReleaseRunsOncePerHandle(t *testing.T) {
	type op func(net.Conn) error
	closeOp := func(c net.Conn) error { return c.Close() }
	releaseOp := func(c net.Conn) error { return c.(*connpool.Conn).Release() }
	tests := []struct {
		name          string
		first, second op
		wantIdle      int64
		wantClosed    int64
	}{
		{name: "Close then Close", first: closeOp, second: closeOp, wantIdle: 1},
		{name: "Close then Release", first: closeOp, second: releaseOp, wantIdle: 1},
		{name: "Release then Close", first: releaseOp, second: closeOp, wantClosed: 1},
		{name: "Release then Release", first: releaseOp, second: releaseOp, wantClosed: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var d testnet.FakeDialer
			p := newPool(t, d.Dial, 8, 0)
			c, err := p.Get("a:1")
			require.NoError(t, err)

			require.NoError(t, tt.first(c))
			before := p.Stats()
			err = tt.second(c)
			assert.ErrorIs(t, err, net.ErrClosed)
			assert.ErrorIs(t, err, connpool.ErrConnClosed)
			assert.Equal(t, before.Counters, p.Stats().Counters, "the second call must change no counter")

			s := destination(p.Stats(), "a:1")
			assert.Equal(t, tt.wantIdle, s.Idle)
			assert.Equal(t, tt.wantIdle, s.Total)
			fc := d.Conns()[0]
			assert.Equal(t, tt.wantClosed, fc.Closes.Load(), "socket closes")

			// The socket is in the pool at most once: the second Get dials.
			g1, err := p.Get("a:1")
			require.NoError(t, err)
			g2, err := p.Get("a:1")
			require.NoError(t, err)
			assert.NotEqual(t, id(g1), id(g2))
			require.NoError(t, g1.Close())
			require.NoError(t, g2.Close())
		})
	}
}

// Regression: the predecessor's handle stayed usable after Close, so a stale
// holder could write into a socket another caller had checked out.
func TestReturnedHandleIsInert(t *testing.T) {
	ops := map[string]func(net.Conn) error{
		"Read":             func(c net.Conn) error { _, err := c.Read(make([]byte, 1)); return err },
		"Write":            func(c net.Conn) error { _, err := c.Write([]byte("x")); return err },
		"SetDeadline":      func(c net.Conn) error { return c.SetDeadline(time.Now()) },
		"SetReadDeadline":  func(c net.Conn) error { return c.SetReadDeadline(time.Now()) },
		"SetWriteDeadline": func(c net.Conn) error { return c.SetWriteDeadline(time.Now()) },
	}
	ends := map[string]func(net.Conn) error{
		"Close":   func(c net.Conn) error { return c.Close() },
		"Release": func(c net.Conn) error { return c.(*connpool.Conn).Release() },
	}
	for endName, end := range ends {
		for opName, op := range ops {
			t.Run(endName+"/"+opName, func(t *testing.T) {
				var d testnet.FakeDialer
				p := newPool(t, d.Dial, 8, 0)
				c, err := p.Get("a:1")
				require.NoError(t, err)
				require.NoError(t, end(c))

				fc := d.Conns()[0]
				reads, writes, deadlines := fc.Reads.Load(), fc.Writes.Load(), fc.Deadlines.Load()
				err = op(c)
				assert.ErrorIs(t, err, net.ErrClosed)
				assert.ErrorIs(t, err, connpool.ErrConnClosed)
				assert.Equal(t, reads, fc.Reads.Load(), "the socket must not be read")
				assert.Equal(t, writes, fc.Writes.Load(), "the socket must not be written")
				assert.Equal(t, deadlines, fc.Deadlines.Load(), "the socket's deadlines must not change")
			})
		}
	}
}

func TestEachGetHandsOutAFreshHandle(t *testing.T) {
	srv := testnet.StartEcho(t)
	p := newPool(t, tcpDial, 2, time.Minute)

	first, err := p.Get(srv.Addr())
	require.NoError(t, err)
	require.NoError(t, testnet.RoundTrip(first, "one"))
	require.NoError(t, first.Close())

	second, err := p.Get(srv.Addr())
	require.NoError(t, err)
	defer second.Close()
	require.Equal(t, id(first), id(second), "the idle socket must be reused")
	assert.NotSame(t, first.(*connpool.Conn), second.(*connpool.Conn), "each Get must hand out a new handle")

	// The stale handle cannot write into the socket the second holder owns.
	_, err = first.Write([]byte("stale\n"))
	assert.ErrorIs(t, err, net.ErrClosed)
	require.NoError(t, testnet.RoundTrip(second, "two"), "the stale write must not reach the socket")
}

// Regression: the predecessor kept dialing after Close.
func TestGetAndNewAfterPoolCloseReturnErrClosedWithoutDialing(t *testing.T) {
	var d testnet.FakeDialer
	p, err := connpool.New(d.Dial, 8, time.Minute)
	require.NoError(t, err)

	idle, err := p.Get("a:1")
	require.NoError(t, err)
	inUse, err := p.Get("a:1")
	require.NoError(t, err)
	require.NoError(t, idle.Close())

	require.NoError(t, p.Close())
	assert.EqualValues(t, 1, d.Open(), "Close must close the idle conn and leave the one in use")

	calls := map[string]func() (net.Conn, error){
		"Get":        func() (net.Conn, error) { return p.Get("a:1") },
		"GetContext": func() (net.Conn, error) { return p.GetContext(context.Background(), "a:1") },
		"New":        func() (net.Conn, error) { return p.New("a:1") },
		"NewContext": func() (net.Conn, error) { return p.NewContext(context.Background(), "b:1") },
	}
	for name, call := range calls {
		c, err := call()
		assert.Nil(t, c, name)
		assert.ErrorIs(t, err, connpool.ErrClosed, name)
	}
	assert.EqualValues(t, 2, d.Dials(), "no call after Close may dial")

	// The conn in use is closed when its holder returns it.
	require.NoError(t, inUse.Close())
	assert.EqualValues(t, 0, d.Open())
	assert.EqualValues(t, 0, p.Stats().Total)

	assert.ErrorIs(t, p.Close(), connpool.ErrClosed, "a second Close")
}

type failingCloseConn struct {
	net.Conn
	err error
}

func (c failingCloseConn) Close() error {
	c.Conn.Close()
	return c.err
}

func TestPoolCloseReturnsIdleCloseErrorsCombined(t *testing.T) {
	var d testnet.FakeDialer
	n := 0
	dial := func(address string) (net.Conn, error) {
		c, _ := d.Dial(address)
		n++
		return failingCloseConn{Conn: c, err: fmt.Errorf("close %d failed", n)}, nil
	}
	p, err := connpool.New(dial, 8, 0)
	require.NoError(t, err)
	a, err := p.Get("a:1")
	require.NoError(t, err)
	b, err := p.Get("b:1")
	require.NoError(t, err)
	require.NoError(t, a.Close())
	require.NoError(t, b.Close())

	err = p.Close()
	require.Error(t, err)
	assert.ErrorContains(t, err, "close 1 failed")
	assert.ErrorContains(t, err, "close 2 failed")
	assert.Regexp(t, `^connpool: close: 2 errors: close \d failed; close \d failed$`, err.Error(), "one line, with the package's prefix")
	assert.EqualValues(t, 0, d.Open())
}

// The combined errors of Drain and Warm read on one line with the
// package's prefix, and errors.Is sees each of them.
func TestCombinedErrorsReadOnOneLineAndUnwrap(t *testing.T) {
	var d testnet.FakeDialer
	broken := errors.New("broken pipe")
	refused := errors.New("connection refused")
	dial := func(address string) (net.Conn, error) {
		if address == "down:1" {
			return nil, refused
		}
		c, _ := d.Dial(address)
		return failingCloseConn{Conn: c, err: broken}, nil
	}
	p := newPool(t, dial, 8, 0)
	c, err := p.Get("a:1")
	require.NoError(t, err)
	require.NoError(t, c.Close())

	err = p.Drain("a:1")
	require.ErrorIs(t, err, broken)
	assert.Equal(t, "connpool: drain: broken pipe", err.Error())

	err = p.Warm(context.Background(), "down:1", 2)
	require.ErrorIs(t, err, refused)
	var de *connpool.DialError
	require.ErrorAs(t, err, &de)
	assert.Equal(t, "down:1", de.Address)
	assert.Equal(t, "connpool: warm: 2 errors: dial down:1: connection refused; dial down:1: connection refused", err.Error())
	assert.NotContains(t, err.Error(), "\n")
}

// Regression: a dial returning (nil, nil) made the predecessor panic later.
func TestDialReturningNilConnIsAnError(t *testing.T) {
	dial := func(string) (net.Conn, error) { return nil, nil }
	p := newPool(t, dial, 8, 0)

	for name, call := range map[string]func() (net.Conn, error){
		"Get": func() (net.Conn, error) { return p.Get("a:1") },
		"New": func() (net.Conn, error) { return p.New("a:1") },
	} {
		c, err := call()
		assert.Nil(t, c, name)
		assert.ErrorIs(t, err, connpool.ErrNilConn, name)
		var de *connpool.DialError
		require.ErrorAs(t, err, &de, name)
		assert.Equal(t, "a:1", de.Address)
	}
	s := p.Stats()
	assert.EqualValues(t, 2, s.DialErrors)
	assert.EqualValues(t, 0, s.Total)
}

func TestDialErrorNamesAddress(t *testing.T) {
	refused := errors.New("connection refused")
	dial := func(string) (net.Conn, error) { return nil, refused }
	p := newPool(t, dial, 8, 0)

	_, err := p.Get("10.1.2.3:11211")
	require.Error(t, err)
	assert.ErrorIs(t, err, refused)
	assert.Contains(t, err.Error(), "10.1.2.3:11211")
	assert.True(t, strings.HasPrefix(err.Error(), "connpool: "), err.Error())
	assert.EqualValues(t, 1, destination(p.Stats(), "10.1.2.3:11211").DialErrors)
}

func TestRealDialErrorNamesAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close()) // nothing listens there now

	p := newPool(t, tcpDial, 8, 0)
	_, err = p.Get(addr)
	require.Error(t, err)
	assert.Contains(t, err.Error(), addr)
	var de *connpool.DialError
	require.ErrorAs(t, err, &de)
	assert.Equal(t, addr, de.Address)
}

func TestGetContextWithDoneContextReturnsCtxErrWithoutDialing(t *testing.T) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel2()

	for _, tt := range []struct {
		name string
		ctx  context.Context
		want error
	}{
		{name: "canceled", ctx: canceled, want: context.Canceled},
		{name: "deadline exceeded", ctx: expired, want: context.DeadlineExceeded},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var d testnet.FakeDialer
			p := newPool(t, d.Dial, 8, 0)
			giveBack(t, checkout(t, p, "idle:1", 1)...)

			for _, addr := range []string{"idle:1", "none:1"} {
				c, err := p.GetContext(tt.ctx, addr)
				assert.Nil(t, c)
				assert.ErrorIs(t, err, tt.want)
				c, err = p.NewContext(tt.ctx, addr)
				assert.Nil(t, c)
				assert.ErrorIs(t, err, tt.want)
			}
			assert.EqualValues(t, 1, d.Dials(), "a done context must not dial")
			assert.EqualValues(t, 1, destination(p.Stats(), "idle:1").Idle, "a done context must not take an idle conn")
		})
	}
}

func TestWithDialContextReceivesTheCallersContext(t *testing.T) {
	type key struct{}
	var d testnet.FakeDialer
	var seen atomic.Value
	dialCtx := func(ctx context.Context, address string) (net.Conn, error) {
		v, _ := ctx.Value(key{}).(string)
		seen.Store(v)
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		return d.Dial(address)
	}
	// The plain dial is ignored when WithDialContext is given.
	plain := func(string) (net.Conn, error) { panic("plain dial used") }
	p := newPool(t, plain, 8, 0, connpool.WithDialContext(dialCtx))

	ctx := context.WithValue(context.Background(), key{}, "v")
	c, err := p.GetContext(ctx, "a:1")
	require.NoError(t, err)
	assert.Equal(t, "v", seen.Load())
	require.NoError(t, c.Close())

	c, err = p.Get("b:1")
	require.NoError(t, err)
	require.NoError(t, c.Close())
	assert.Equal(t, "", seen.Load(), "Get dials with a background context")
}

// Regression: peers cancel a dial when the caller that started it gives up,
// wasting it. Here the caller returns at once and the conn goes to the pool.
func TestGetContextGivesUpWhileDialingAndTheDialIsNotWasted(t *testing.T) {
	var d testnet.FakeDialer
	started := make(chan struct{})
	proceed := make(chan struct{})
	dialCtx := func(ctx context.Context, address string) (net.Conn, error) {
		close(started)
		select {
		case <-proceed:
			return d.Dial(address)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	p := newPool(t, nil, 8, 0, connpool.WithDialContext(dialCtx))

	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-started
		cancel()
	}()
	c, err := p.GetContext(ctx, "slow:1")
	assert.Nil(t, c)
	assert.ErrorIs(t, err, context.Canceled)

	close(proceed)
	eventually(t, func() bool { return destination(p.Stats(), "slow:1").Idle == 1 },
		"the abandoned dial's conn never reached the pool: %+v", destination(p.Stats(), "slow:1"))
	s := destination(p.Stats(), "slow:1")
	assert.EqualValues(t, 1, s.Dials)
	assert.EqualValues(t, 1, s.Total)

	c = checkout(t, p, "slow:1", 1)[0]
	assert.Equal(t, "fake-1", id(c), "the next Get reuses the conn dialed for the caller that gave up")
	giveBack(t, c)
}

func TestPoolCloseCancelsDetachedDials(t *testing.T) {
	started := make(chan struct{})
	dialCtx := func(ctx context.Context, address string) (net.Conn, error) {
		close(started)
		<-ctx.Done()
		return nil, ctx.Err()
	}
	p, err := connpool.New(nil, 8, 0, connpool.WithDialContext(dialCtx))
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err = p.GetContext(ctx, "hang:1")
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	<-started
	require.NoError(t, p.Close())
	// The dial goroutine ends with the pool; goleak checks it at exit.
	eventually(t, func() bool { return destination(p.Stats(), "hang:1").DialErrors == 1 },
		"the hanging dial was not cancelled by Close")
}

func TestStatsListsDestinationsSortedByAddress(t *testing.T) {
	var d testnet.FakeDialer
	p := newPool(t, d.Dial, 8, 0)
	for _, addr := range []string{"c:1", "a:1", "b:1"} {
		giveBack(t, checkout(t, p, addr, 1)...)
	}
	inUse := checkout(t, p, "b:1", 1)[0]
	defer inUse.Close()

	s := p.Stats()
	require.Len(t, s.Destinations, 3)
	assert.Equal(t, []string{"a:1", "b:1", "c:1"},
		[]string{s.Destinations[0].Address, s.Destinations[1].Address, s.Destinations[2].Address})
	assert.EqualValues(t, 3, s.Total)
	assert.EqualValues(t, 2, s.Idle)
	assert.EqualValues(t, 1, s.InUse)
	b := destination(s, "b:1")
	assert.EqualValues(t, 1, b.Total)
	assert.EqualValues(t, 0, b.Idle)
	assert.EqualValues(t, 1, b.InUse)
	assert.Contains(t, s.String(), "b:1")
}

// TestIdleTimeoutOfTensOfMillisecondsWorks runs on the real clock against a
// real server: conns idle past a 20 ms timeout are closed by the cleaner.
func TestIdleTimeoutOfTensOfMillisecondsWorks(t *testing.T) {
	srv := testnet.StartEcho(t)
	p := newPool(t, tcpDial, 4, 20*time.Millisecond)

	conns := checkout(t, p, srv.Addr(), 3)
	for _, c := range conns {
		require.NoError(t, testnet.RoundTrip(c, "ping"))
	}
	giveBack(t, conns...)
	eventually(t, func() bool { return srv.Open() == 0 }, "server still has %d sessions", srv.Open())
	s := p.Stats()
	assert.EqualValues(t, 3, s.ClosedIdleTimeout)
	assert.EqualValues(t, 0, s.Total)

	// The address works again afterwards.
	c, err := p.Get(srv.Addr())
	require.NoError(t, err)
	require.NoError(t, testnet.RoundTrip(c, "again"))
	require.NoError(t, c.Close())
}

// TestConcurrentUseNeverSharesASocket runs goroutines that Get, Close,
// Release, double Close and use stale handles at random, and checks that no
// socket is ever held by two callers and that the counts add up.
func TestConcurrentUseNeverSharesASocket(t *testing.T) {
	const (
		workers = 16
		ops     = 2000
	)
	addrs := []string{"a:1", "b:1", "c:1", "d:1"}
	var d testnet.FakeDialer
	p := newPool(t, d.Dial, 3, 0)

	var owners sync.Map // socket id -> *atomic.Bool, true while held
	hold := func(c net.Conn) bool {
		v, _ := owners.LoadOrStore(id(c), new(atomic.Bool))
		return v.(*atomic.Bool).CompareAndSwap(false, true)
	}
	drop := func(c net.Conn) {
		v, _ := owners.Load(id(c))
		v.(*atomic.Bool).Store(false)
	}

	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seed := uint64(w)*0x9E3779B97F4A7C15 + 1
			next := func(n int) int {
				seed ^= seed << 13
				seed ^= seed >> 7
				seed ^= seed << 17
				return int(seed % uint64(n))
			}
			var held []net.Conn
			var stale []net.Conn
			for range ops {
				switch op := next(10); {
				case op < 4 || len(held) == 0:
					addr := addrs[next(len(addrs))]
					get := p.Get
					if op == 3 {
						get = p.New
					}
					c, err := get(addr)
					if !assert.NoError(t, err) {
						return
					}
					if !hold(c) {
						t.Errorf("socket %s handed to two holders", id(c))
						return
					}
					held = append(held, c)
				case op < 8:
					i := next(len(held))
					c := held[i]
					held = append(held[:i], held[i+1:]...)
					drop(c)
					if op < 7 {
						assert.NoError(t, c.Close())
					} else {
						assert.NoError(t, c.(*connpool.Conn).Release())
					}
					stale = append(stale, c)
				default:
					if len(stale) == 0 {
						continue
					}
					c := stale[next(len(stale))]
					assert.ErrorIs(t, c.Close(), net.ErrClosed)
					assert.ErrorIs(t, c.(*connpool.Conn).Release(), net.ErrClosed)
					_, err := c.Write([]byte("x"))
					assert.ErrorIs(t, err, net.ErrClosed)
				}
			}
			for _, c := range held {
				drop(c)
				assert.NoError(t, c.Close())
			}
		}()
	}
	wg.Wait()

	s := p.Stats()
	assert.Equal(t, d.Open(), s.Total, "Stats.Total must equal the conns really open")
	assert.Equal(t, s.Total, s.Idle, "everything was returned")
	assert.LessOrEqual(t, s.Idle, int64(3*len(addrs)))
	assert.Equal(t, d.Dials(), s.Dials)
	for _, fc := range d.Conns() {
		assert.LessOrEqual(t, fc.Closes.Load(), int64(1), "socket %d closed twice", fc.ID)
	}
	require.NoError(t, p.Close())
	assert.EqualValues(t, 0, d.Open(), "Close must close every idle conn")
}

// TestCountsMatchServerSessionsUnderEchoLoad drives an echo load over
// several real backends and compares the pool's counts with the sessions the
// servers see.
func TestCountsMatchServerSessionsUnderEchoLoad(t *testing.T) {
	servers := []*testnet.EchoServer{testnet.StartEcho(t), testnet.StartEcho(t), testnet.StartEcho(t)}
	p := newPool(t, tcpDial, 4, time.Minute)

	const workers, requests = 12, 200
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range requests {
				srv := servers[(w+i)%len(servers)]
				c, err := p.Get(srv.Addr())
				if !assert.NoError(t, err) {
					return
				}
				if !assert.NoError(t, testnet.RoundTrip(c, fmt.Sprintf("w%d-%d", w, i))) {
					c.(*connpool.Conn).Release()
					return
				}
				assert.NoError(t, c.Close())
			}
		}()
	}
	wg.Wait()

	for _, srv := range servers {
		d := destination(p.Stats(), srv.Addr())
		assert.LessOrEqual(t, d.Total, int64(4), "at most capacity conns stay open per address")
		assert.Equal(t, d.Total, d.Idle)
		eventually(t, func() bool { return srv.Open() == destination(p.Stats(), srv.Addr()).Total },
			"server %s has %d sessions, pool counts %d", srv.Addr(), srv.Open(), d.Total)
	}
	require.NoError(t, p.Close())
	for _, srv := range servers {
		eventually(t, func() bool { return srv.Open() == 0 }, "server %s still has %d sessions", srv.Addr(), srv.Open())
	}
}

// TestReleaseAndNewRecoverFromDeadConns follows the predecessor's README:
// when a pooled conn turns out dead, Release it and retry on a conn from New.
// The servers drop sessions without warning, so some idle conns are dead.
func TestReleaseAndNewRecoverFromDeadConns(t *testing.T) {
	servers := []*testnet.EchoServer{testnet.StartFlakyEcho(t, 7), testnet.StartFlakyEcho(t, 11)}
	// Without the liveness check, which would catch most dead conns first.
	p := newPool(t, tcpDial, 4, time.Minute, connpool.WithoutLivenessCheck())

	const workers, requests = 8, 150
	var retries atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range requests {
				addr := servers[(w+i)%len(servers)].Addr()
				msg := fmt.Sprintf("w%d-%d", w, i)
				c, err := p.Get(addr)
				if !assert.NoError(t, err) {
					return
				}
				if err := testnet.RoundTrip(c, msg); err != nil {
					retries.Add(1)
					assert.NoError(t, c.(*connpool.Conn).Release())
					c, err = p.New(addr)
					if !assert.NoError(t, err) {
						return
					}
					// A fresh conn always gets its reply: the servers drop a
					// session only after replying.
					if !assert.NoError(t, testnet.RoundTrip(c, msg), "retry on a fresh conn") {
						c.(*connpool.Conn).Release()
						return
					}
				}
				assert.NoError(t, c.Close())
			}
		}()
	}
	wg.Wait()

	assert.Positive(t, retries.Load(), "the servers must have dropped some sessions")
	assert.Equal(t, retries.Load(), p.Stats().Released)
	require.NoError(t, p.Close())
	for _, srv := range servers {
		eventually(t, func() bool { return srv.Open() == 0 }, "server %s still has %d sessions", srv.Addr(), srv.Open())
	}
}

// BenchmarkGetClose measures the hit path: Get an idle conn and Close it
// back, on fake conns so that only the pool is measured.
func BenchmarkGetClose(b *testing.B) {
	for _, addrs := range []int{1, 1000} {
		for _, timeout := range []time.Duration{time.Minute, 0} {
			keys := make([]string, addrs)
			for i := range keys {
				keys[i] = "10.0." + strconv.Itoa(i/250) + "." + strconv.Itoa(i%250) + ":11211"
			}
			name := fmt.Sprintf("Addrs=%d/Timeout=%v", addrs, timeout)
			b.Run(name+"/Serial", func(b *testing.B) {
				p := newBenchPool(b, keys, timeout)
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; b.Loop(); i++ {
					c, err := p.Get(keys[i%len(keys)])
					if err != nil {
						b.Fatal(err)
					}
					c.Close()
				}
			})
			b.Run(name+"/Parallel", func(b *testing.B) {
				p := newBenchPool(b, keys, timeout)
				var seq atomic.Int64
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					i := int(seq.Add(1)) * 7919
					for pb.Next() {
						i++
						c, err := p.Get(keys[i%len(keys)])
						if err != nil {
							b.Fatal(err)
						}
						c.Close()
					}
				})
			})
		}
	}
}

// newBenchPool returns a pool with a few idle conns for every key.
func newBenchPool(b *testing.B, keys []string, timeout time.Duration, opts ...connpool.Option) *connpool.Pool {
	b.Helper()
	var d testnet.FakeDialer
	p, err := connpool.New(d.Dial, 8, timeout, opts...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	for _, k := range keys {
		for range 4 {
			c, err := p.New(k)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
		}
	}
	return p
}

// TestConcurrentEndsOfOneHandle ends one handle from two goroutines at
// once, with each pair of Close and Release: exactly one ends it, the
// other gets ErrConnClosed, and the conn is counted once, as idle or as
// released.
func TestConcurrentEndsOfOneHandle(t *testing.T) {
	ends := map[string]func(net.Conn) error{
		"Close":   func(c net.Conn) error { return c.Close() },
		"Release": func(c net.Conn) error { return c.(*connpool.Conn).Release() },
	}
	for firstName, first := range ends {
		for secondName, second := range ends {
			t.Run(firstName+"/"+secondName, func(t *testing.T) {
				var d testnet.FakeDialer
				p := newPool(t, d.Dial, 4, time.Minute)
				for range 200 {
					c, err := p.Get("a:1")
					require.NoError(t, err)
					errs := make([]error, 2)
					var wg sync.WaitGroup
					wg.Go(func() { errs[0] = first(c) })
					wg.Go(func() { errs[1] = second(c) })
					wg.Wait()
					ended := 0
					for _, err := range errs {
						if err == nil {
							ended++
						} else {
							assert.ErrorIs(t, err, connpool.ErrConnClosed)
						}
					}
					require.Equal(t, 1, ended, "errors: %v", errs)
				}
				s := p.Stats()
				assert.Zero(t, s.InUse)
				assert.Equal(t, int64(len(d.Conns())), s.Idle+s.Released, "each conn is idle or released: %+v", s)
			})
		}
	}
}
