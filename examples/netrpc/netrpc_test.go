package netrpc_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/rpc"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/clientpool"
	"github.com/seed73091bf1/connpool/examples/netrpc"
)

// The load of the tests with several goroutines: 8 goroutines making 300
// calls each.
const (
	workers   = 8
	callsEach = 300
	allCalls  = workers * callsEach
)

func TestKillOneOfThreeServersMidRun(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []clientpool.Option
	}{
		// The pool discards the idle clients of the killed server
		// when it finds their sockets closed.
		{name: "liveness check"},
		// The pool hands them out; their calls fail with
		// rpc.ErrShutdown, which must be retried elsewhere as a
		// connection error.
		{name: "without liveness check", opts: []clientpool.Option{clientpool.WithoutLivenessCheck()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			servers, addrs := startServers(t, 3)
			cl := newCluster(t, addrs, tc.opts...)
			victim, survivors := servers[1], []*netrpc.Server{servers[0], servers[2]}

			l := startLoad(ctx, cl, workers, callsEach, allCalls/3)
			select {
			case <-l.reached:
			case <-ctx.Done():
				l.wait()
				t.Fatal("the first third of the calls never finished")
			}
			require.NoError(t, victim.Kill())
			doneAtKill := l.done.Load()
			acceptedAtKill, callsAtKill := victim.Accepted(), victim.Calls()
			survivorCallsAtKill := []int64{survivors[0].Calls(), survivors[1].Calls()}
			failed, errs := l.wait()

			assert.Zero(t, failed, "failed calls, of %d; first errors: %v", allCalls, errs)
			assert.Less(t, doneAtKill, int64(allCalls), "calls were still running after the kill")
			assert.Positive(t, callsAtKill, "the victim served calls before it was killed")
			assert.Equal(t, acceptedAtKill, victim.Accepted(), "sessions the victim opened after it was killed")
			assert.Zero(t, victim.Open(), "open sessions of the killed server")
			for i, s := range survivors {
				assert.Greater(t, s.Calls(), survivorCallsAtKill[i], "calls %s served after the kill", s.Addr())
			}
			// A call in flight on the victim may have run there before
			// its connection broke, and again elsewhere.
			served := victim.Calls() + survivors[0].Calls() + survivors[1].Calls()
			assert.GreaterOrEqual(t, served, int64(allCalls), "calls served")
			assert.Positive(t, cl.Stats().Retries, "calls retried after the kill")

			for _, s := range survivors {
				waitSessionsMatch(t, cl, s)
				d := destination(cl.Stats(), s.Addr())
				assert.LessOrEqual(t, d.Dials, int64(workers), "dials to %s: one client per goroutine at most", s.Addr())
				assert.Zero(t, d.Released, "clients of %s released", s.Addr())
			}

			// Dropping the dead server from the endpoints closes its
			// clients that are still pooled.
			cl.SetServers([]string{survivors[0].Addr(), survivors[1].Addr()})
			assert.Zero(t, destination(cl.Stats(), victim.Addr()).Total, "pooled clients of the removed server")
		})
	}
}

func TestPoolCountsMatchServerSessions(t *testing.T) {
	ctx := testContext(t)
	servers, addrs := startServers(t, 3)
	cl := newCluster(t, addrs)

	failed, errs := startLoad(ctx, cl, workers, callsEach, 0).wait()
	require.Zero(t, failed, "failed calls; first errors: %v", errs)

	for _, s := range servers {
		// Nothing failed, so the round robin made exactly one pick per
		// call, in turn.
		assert.EqualValues(t, allCalls/3, s.Calls(), "calls served by %s", s.Addr())
		waitSessionsMatch(t, cl, s)
		d := destination(cl.Stats(), s.Addr())
		assert.Positive(t, d.Dials, "dials to %s", s.Addr())
		assert.LessOrEqual(t, d.Dials, int64(workers), "dials to %s: one client per goroutine at most", s.Addr())
		assert.Zero(t, d.InUse, "clients of %s in use", s.Addr())
		assert.Equal(t, d.Total, d.Idle, "clients of %s: all idle", s.Addr())
	}
	st := cl.Stats()
	assert.EqualValues(t, allCalls, st.Dials+st.Reuses, "checkouts: one per call")
	assert.Zero(t, st.Released, "clients released")
	assert.Zero(t, st.ClosedDeadAtCheckout, "live clients found dead")
	assert.Zero(t, st.Retries, "retries")

	// Closing the cluster closes every client, and so every session.
	require.NoError(t, cl.Close())
	for _, s := range servers {
		waitFor(t, func() error {
			if n := s.Open(); n != 0 {
				return fmt.Errorf("%s: %d sessions open after Close", s.Addr(), n)
			}
			return nil
		})
	}
}

func TestDeadIdleClientIsDiscardedAtCheckout(t *testing.T) {
	ctx := testContext(t)
	servers, addrs := startServers(t, 1)
	s := servers[0]
	cl := newCluster(t, addrs)

	sum, err := cl.Add(ctx, 1, 2)
	require.NoError(t, err)
	require.Equal(t, 3, sum)
	// The server closes the session of the client, which now sits idle
	// in the pool; when DropSessions returns, the client's socket has
	// seen the close.
	s.DropSessions()
	require.Zero(t, s.Open())

	sum, err = cl.Add(ctx, 3, 4)
	require.NoError(t, err)
	assert.Equal(t, 7, sum)
	d := destination(cl.Stats(), s.Addr())
	assert.EqualValues(t, 1, d.ClosedDeadAtCheckout, "idle clients found dead at checkout")
	assert.Zero(t, d.Released, "clients released after a failed call")
	assert.Zero(t, d.Retries, "retries")
	assert.EqualValues(t, 2, d.Dials, "dials")
	assert.EqualValues(t, 2, s.Accepted(), "sessions")
	assert.EqualValues(t, 2, s.Calls(), "calls: none went to the dead client")
}

func TestShutDownClientFailsWithAConnError(t *testing.T) {
	ctx := testContext(t)
	servers, _ := startServers(t, 1)
	s := servers[0]
	c, err := netrpc.Dial(ctx, s.Addr())
	require.NoError(t, err)
	defer c.Close()

	var sum int
	require.NoError(t, c.Call(ctx, "Arith.Add", netrpc.Args{A: 1, B: 2}, &sum))
	require.Equal(t, 3, sum)
	s.DropSessions()

	// Until the client's reader sees the connection closed, a call fails
	// on the socket (unexpected EOF, a reset or a broken pipe); from then
	// on, with rpc.ErrShutdown. Each is a connection error for Do.
	waitFor(t, func() error {
		var sum int
		err := c.Call(ctx, "Arith.Add", netrpc.Args{A: 1, B: 2}, &sum)
		require.Error(t, err)
		require.True(t, connpool.IsConnError(err), "not a connection error: %v", err)
		if !errors.Is(err, rpc.ErrShutdown) {
			return fmt.Errorf("call failed with %v, not yet rpc.ErrShutdown", err)
		}
		assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
		return nil
	})
	assert.Zero(t, s.Open(), "sessions the dead client opened")
}

func TestServiceErrorKeepsTheClient(t *testing.T) {
	ctx := testContext(t)
	servers, addrs := startServers(t, 1)
	s := servers[0]
	cl := newCluster(t, addrs)

	_, err := cl.Div(ctx, 1, 0)
	var serverErr rpc.ServerError
	require.ErrorAs(t, err, &serverErr)
	assert.Equal(t, "divide by zero", string(serverErr))
	assert.False(t, connpool.IsConnError(err), "a service error is not a connection error: %v", err)

	quo, err := cl.Div(ctx, 7, 2)
	require.NoError(t, err)
	assert.Equal(t, 3, quo)
	d := destination(cl.Stats(), s.Addr())
	assert.EqualValues(t, 1, d.Dials, "dials")
	assert.EqualValues(t, 1, d.Reuses, "reuses: the client survived the service error")
	assert.Zero(t, d.Released, "clients released")
	assert.Zero(t, d.Retries, "retries")
	assert.EqualValues(t, 2, s.Calls(), "calls: the failed one was not retried")
}

func TestCallReturnsWhenContextEnds(t *testing.T) {
	ctx := testContext(t)
	// A server that accepts one connection and never answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	accepted := make(chan net.Conn, 1)
	go func() {
		defer close(accepted)
		if conn, err := ln.Accept(); err == nil {
			accepted <- conn
		}
	}()
	defer func() {
		ln.Close()
		if conn, ok := <-accepted; ok {
			conn.Close()
		}
	}()

	c, err := netrpc.Dial(ctx, ln.Addr().String())
	require.NoError(t, err)
	callCtx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	res := make(chan error, 1)
	go func() {
		var sum int
		res <- c.Call(callCtx, "Arith.Add", netrpc.Args{A: 1, B: 2}, &sum)
	}()
	select {
	case err = <-res:
	case <-time.After(5 * time.Second):
		c.Close() // ends the call, so that its goroutine ends
		t.Fatal("Call did not return when its context ended")
	}
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.False(t, connpool.IsConnError(err), "a call the caller gave up on is no connection error: %v", err)
	// Closing the client ends its pending call and its reader.
	require.NoError(t, c.Close())
	assert.ErrorIs(t, c.Close(), rpc.ErrShutdown, "second Close")
}

func TestDialHonoursItsContext(t *testing.T) {
	servers, _ := startServers(t, 1)
	ctx, cancel := context.WithCancel(testContext(t))
	cancel()
	c, err := netrpc.Dial(ctx, servers[0].Addr())
	assert.ErrorIs(t, err, context.Canceled)
	assert.Nil(t, c)
}

func TestServerKillIsOneShot(t *testing.T) {
	servers, _ := startServers(t, 1)
	s := servers[0]
	require.NoError(t, s.Kill())
	assert.ErrorIs(t, s.Kill(), netrpc.ErrServerKilled)
	_, err := net.DialTimeout("tcp", s.Addr(), time.Second)
	assert.Error(t, err, "dial to a killed server")
}
