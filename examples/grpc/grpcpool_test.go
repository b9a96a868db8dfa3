package grpcpool_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/balancer"
	"github.com/seed73091bf1/connpool/clientpool"
	grpcpool "github.com/seed73091bf1/connpool/examples/grpc"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// TestBalancedDoSpreadsAndReuses runs many goroutines of health checks
// through a round robin over three backends: every check succeeds, each
// backend gets its turn, every Do sends exactly one RPC, and ClientConns
// are reused rather than dialed per call.
func TestBalancedDoSpreadsAndReuses(t *testing.T) {
	const goroutines, perGoroutine = 16, 60
	backends, eps := startBackends(t, 3)
	pool := newPool(t, goroutines)
	bp := clientpool.NewBalanced(pool, balancer.NewRoundRobin(eps))
	ctx := testContext(t)

	var wg sync.WaitGroup
	errs := make(chan error, goroutines*perGoroutine)
	for range goroutines {
		wg.Go(func() {
			for range perGoroutine {
				if err := grpcpool.CheckAny(ctx, bp, ""); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		assert.NoError(t, err)
	}

	const calls = goroutines * perGoroutine
	st := pool.Stats()
	var served int64
	for _, b := range backends {
		n := b.calls.Load()
		served += n
		// Every pick is used once, in turn: the shares differ by one at most.
		assert.InDelta(t, calls/len(backends), n, 1, "RPCs served by %s", b.addr)
		d := destination(st, b.addr)
		assert.LessOrEqual(t, d.Dials, int64(goroutines), "dials of %s", b.addr)
		assert.Positive(t, d.Reuses, "reuses of %s", b.addr)
		assert.Equal(t, n, d.Dials+d.Reuses, "checkouts of %s against its RPCs", b.addr)
		assert.Equal(t, d.Total, d.Idle, "%s: every ClientConn back in the pool", b.addr)
	}
	assert.EqualValues(t, calls, served, "one RPC per Do")
	assert.Zero(t, st.InUse)
	assert.Zero(t, st.Released)
	assert.Zero(t, st.DialErrors)
	assert.Zero(t, st.ClosedValidatorFailed)
}

// TestServerStoppedMidRun stops one of three backends while goroutines
// keep checking through a round robin with ejection: every idempotent
// check still succeeds, moved to the other backends; the stopped
// backend's ClientConns are released or rejected by the validator, it is
// ejected, and once it leaves the endpoints none of its ClientConns is
// left open.
func TestServerStoppedMidRun(t *testing.T) {
	const (
		goroutines = 16
		stopAt     = 1200 // checks before the stop: enough to bank retries
		afterStop  = 600  // checks that must complete after it
	)
	backends, eps := startBackends(t, 3)
	dead, live := backends[0], backends[1:]
	pool := newPool(t, goroutines)
	rr := balancer.NewRoundRobin(eps, balancer.WithEjection(3, time.Minute, time.Minute))
	bp := clientpool.NewBalanced(pool, rr)
	ctx := testContext(t)

	var (
		done, doneAfter atomic.Int64
		stopped         atomic.Bool
		wg              sync.WaitGroup
	)
	errs := make(chan error, goroutines)
	for range goroutines {
		wg.Go(func() {
			for doneAfter.Load() < afterStop && ctx.Err() == nil {
				wasStopped := stopped.Load()
				if err := grpcpool.CheckAny(ctx, bp, ""); err != nil {
					errs <- fmt.Errorf("stopped=%v: %w", stopped.Load(), err)
					return
				}
				if done.Add(1) == stopAt {
					dead.srv.Stop() // the others keep checking meanwhile
					stopped.Store(true)
				}
				if wasStopped {
					doneAfter.Add(1)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		assert.NoError(t, err)
	}
	require.NoError(t, ctx.Err(), "the run did not finish in time")

	var liveServed int64
	for _, b := range live {
		liveServed += b.calls.Load()
	}
	deadServed := dead.calls.Load()
	assert.GreaterOrEqual(t, liveServed+deadServed, done.Load(), "every success was served")
	assert.Less(t, deadServed, int64(stopAt), "the stopped backend served only checks from before the stop")

	assert.True(t, state(rr, dead.addr).Ejected, "the stopped backend is ejected")
	st := pool.Stats()
	d := destination(st, dead.addr)
	t.Logf("stopped backend: %d dials, %d dial errors, %d released, %d rejected by the validator, %d open; pool: %d retries, %d refused by the budget",
		d.Dials, d.DialErrors, d.Released, d.ClosedValidatorFailed, d.Total, st.Retries, st.RetryBudgetExhausted)
	assert.Positive(t, d.Released+d.ClosedValidatorFailed,
		"the stopped backend's ClientConns were released or validated away: %v", d)
	assert.Zero(t, st.RetryBudgetExhausted)
	for _, b := range live {
		ld := destination(st, b.addr)
		assert.Zero(t, ld.Released, "%s: no ClientConn of a live backend released", b.addr)
		assert.LessOrEqual(t, ld.Dials, int64(goroutines), "dials of %s", b.addr)
	}

	// Discovery drops the stopped backend: its idle ClientConns close.
	bp.Update(eps[1:])
	d = destination(pool.Stats(), dead.addr)
	assert.Zero(t, d.Total, "ClientConns of the stopped backend left open: %v", d)
	assert.Equal(t, d.Dials, d.Released+d.ClosedValidatorFailed+d.ClosedDrained,
		"every ClientConn of the stopped backend accounted for: %v", d)
}

// TestValidateRejectsBrokenClientConn checks that Validate accepts a READY
// ClientConn and rejects one whose server went away, and that the pool
// then closes it rather than handing it out.
func TestValidateRejectsBrokenClientConn(t *testing.T) {
	b := startBackend(t)
	pool := newPool(t, 4)
	ctx := testContext(t)

	lease, err := pool.Get(ctx, b.addr)
	require.NoError(t, err)
	cc := lease.Value()
	require.Equal(t, connectivity.Ready, cc.GetState())
	assert.NoError(t, grpcpool.Validate(cc))
	require.NoError(t, lease.Close())

	b.srv.Stop()
	awaitNotReady(ctx, t, cc)
	assert.ErrorIs(t, grpcpool.Validate(cc), grpcpool.ErrNotReady, "state %s", cc.GetState())

	_, err = pool.Get(ctx, b.addr) // the idle one is rejected, the dial refused
	var de *clientpool.DialError
	require.ErrorAs(t, err, &de)
	assert.ErrorIs(t, err, grpcpool.ErrNotReady)

	d := destination(pool.Stats(), b.addr)
	assert.EqualValues(t, 1, d.ClosedValidatorFailed)
	assert.EqualValues(t, 1, d.DialErrors)
	assert.Zero(t, d.Total)
	assert.Zero(t, d.Reuses)
	assert.Equal(t, connectivity.Shutdown, cc.GetState(), "the pool closed the rejected ClientConn")
	assert.ErrorIs(t, grpcpool.Validate(cc), grpcpool.ErrNotReady, "a closed ClientConn")
}

// TestPoolDoRetriesStaleClientConn checks the mapping of Unavailable to a
// connection error through pool.Do, on a pool without the validator: the
// RPC on the stale ClientConn fails with Unavailable, the ClientConn is
// released, and the idempotent check is sent again on a fresh dial (which
// fails here, the server being gone).
func TestPoolDoRetriesStaleClientConn(t *testing.T) {
	b := startBackend(t)
	pool, err := clientpool.New(grpcpool.Dialer(5*time.Second), 4, time.Minute)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pool.Close() })
	ctx := testContext(t)

	var cc *grpc.ClientConn
	require.NoError(t, pool.Do(ctx, b.addr, func(c *grpc.ClientConn) error {
		cc = c
		return grpcpool.Check(ctx, c, "")
	}))
	b.srv.Stop()
	awaitNotReady(ctx, t, cc)

	err = grpcpool.CheckAddress(ctx, pool, b.addr, "")
	var doErr *clientpool.DoError
	require.ErrorAs(t, err, &doErr)
	assert.Equal(t, 2, doErr.Attempts, "the stale ClientConn's check was retried: %v", err)
	var de *clientpool.DialError
	assert.ErrorAs(t, err, &de, "the retry's fresh dial failed")

	d := destination(pool.Stats(), b.addr)
	assert.EqualValues(t, 1, d.Reuses)
	assert.EqualValues(t, 1, d.Released, "the stale ClientConn was released")
	assert.EqualValues(t, 1, d.Retries)
	assert.Zero(t, d.Total)
	assert.Equal(t, connectivity.Shutdown, cc.GetState())
}

// TestCheckNotServingKeepsClientConn checks that a backend's answer, good
// or bad, leaves the ClientConn in the pool, and that the balancer counts
// NOT_SERVING as a failure of the backend and an unknown service as an
// answer.
func TestCheckNotServingKeepsClientConn(t *testing.T) {
	b := startBackend(t)
	pool := newPool(t, 4)
	rr := balancer.NewRoundRobin([]balancer.Endpoint{{Address: b.addr}}, balancer.WithEjection(5, time.Minute, time.Minute))
	bp := clientpool.NewBalanced(pool, rr)
	ctx := testContext(t)

	b.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	err := grpcpool.CheckAny(ctx, bp, "")
	assert.ErrorIs(t, err, grpcpool.ErrNotServing)
	assert.EqualValues(t, 1, state(rr, b.addr).ConsecutiveFailures, "NOT_SERVING counts against the backend")

	err = grpcpool.CheckAny(ctx, bp, "no.such.Service")
	assert.Equal(t, codes.NotFound, status.Code(err), "%v", err)
	assert.Zero(t, state(rr, b.addr).ConsecutiveFailures, "an unknown service is an answer")

	b.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	assert.NoError(t, grpcpool.CheckAny(ctx, bp, ""))

	d := destination(pool.Stats(), b.addr)
	assert.EqualValues(t, 1, d.Dials, "one ClientConn served all three")
	assert.EqualValues(t, 2, d.Reuses)
	assert.Zero(t, d.Released)
	assert.EqualValues(t, 1, d.Idle)
}

// TestClassify checks how RPC errors map to the pool's rules.
func TestClassify(t *testing.T) {
	plain := errors.New("not a status")
	tests := []struct {
		name     string
		err      error
		connErr  bool // connpool.IsConnError: released, retried if idempotent
		clean    bool // marked Clean or CleanFailure: kept in the pool
		failure  bool // marked CleanFailure: a failure of the backend
		same     bool // returned unchanged
		wantCode codes.Code
	}{
		{name: "nil", err: nil, same: true, wantCode: codes.OK},
		{name: "Unavailable", err: status.Error(codes.Unavailable, "connection refused"), connErr: true, wantCode: codes.Unavailable},
		{name: "Canceled", err: status.Error(codes.Canceled, "x"), same: true, wantCode: codes.Canceled},
		{name: "DeadlineExceeded", err: status.Error(codes.DeadlineExceeded, "x"), same: true, wantCode: codes.DeadlineExceeded},
		{name: "Internal", err: status.Error(codes.Internal, "x"), clean: true, failure: true, wantCode: codes.Internal},
		{name: "Unimplemented", err: status.Error(codes.Unimplemented, "x"), clean: true, failure: true, wantCode: codes.Unimplemented},
		{name: "NotFound", err: status.Error(codes.NotFound, "x"), clean: true, wantCode: codes.NotFound},
		{name: "InvalidArgument", err: status.Error(codes.InvalidArgument, "x"), clean: true, wantCode: codes.InvalidArgument},
		{name: "not a status", err: plain, same: true, wantCode: codes.Unknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := grpcpool.Classify(tt.err)
			assert.Equal(t, tt.connErr, connpool.IsConnError(got), "IsConnError(%v)", got)
			var clean *connpool.CleanError
			isClean := errors.As(got, &clean)
			assert.Equal(t, tt.clean, isClean, "clean: %v", got)
			if isClean {
				assert.Equal(t, tt.failure, clean.BackendFailure)
			}
			if tt.same {
				assert.Equal(t, tt.err, got)
			}
			if tt.err != nil {
				assert.ErrorIs(t, got, tt.err, "the original is kept")
			}
			assert.Equal(t, tt.wantCode, status.Code(got))
		})
	}
	assert.ErrorIs(t, grpcpool.Classify(status.Error(codes.Unavailable, "x")), io.ErrUnexpectedEOF)
}

// TestDialerHonoursContext checks that a dial returns a READY ClientConn,
// fails fast when the connection is refused, and gives up when its context
// ends or its wait passes, closing the ClientConn it made.
func TestDialerHonoursContext(t *testing.T) {
	b := startBackend(t)
	refused := closedPort(t)
	silent := silentListener(t)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()

	tests := []struct {
		name    string
		ctx     context.Context
		addr    string
		wait    time.Duration
		wantErr error
	}{
		{name: "ready", ctx: context.Background(), addr: b.addr, wait: 5 * time.Second},
		{name: "refused", ctx: context.Background(), addr: refused, wait: 5 * time.Second, wantErr: grpcpool.ErrNotReady},
		{name: "silent server, wait passes", ctx: context.Background(), addr: silent, wait: 100 * time.Millisecond, wantErr: context.DeadlineExceeded},
		{name: "cancelled context", ctx: cancelled, addr: b.addr, wait: 5 * time.Second, wantErr: context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			cc, err := grpcpool.Dialer(tt.wait)(tt.ctx, tt.addr)
			assert.Less(t, time.Since(start), grpcpool.DefaultDialWait, "the dial was not bounded")
			if tt.wantErr != nil {
				assert.ErrorIs(t, err, tt.wantErr)
				assert.Nil(t, cc)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, connectivity.Ready, cc.GetState())
			assert.NoError(t, grpcpool.Validate(cc))
			assert.NoError(t, grpcpool.Check(tt.ctx, cc, ""))
			assert.NoError(t, cc.Close())
		})
	}
}

// closedPort returns a loopback address where nothing listens: the port
// of a listener that was just closed.
func closedPort(t testing.TB) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := lis.Addr().String()
	require.NoError(t, lis.Close())
	return addr
}

// silentListener returns the address of a loopback listener that accepts
// connections and never says a word, so an HTTP/2 handshake never ends.
func silentListener(t testing.TB) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Go(func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		_ = lis.Close()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return lis.Addr().String()
}

// TestCloseClosesEveryClientConn checks that Pool.Close closes the idle
// ClientConns at once and a leased one when its lease ends, and that a
// second Close and later checkouts fail with ErrClosed.
func TestCloseClosesEveryClientConn(t *testing.T) {
	b := startBackend(t)
	before := goleak.IgnoreCurrent() // the backend's own goroutines
	pool := newPool(t, 4)
	ctx := testContext(t)

	leases := make([]*clientpool.Lease[*grpc.ClientConn], 3)
	for i := range leases {
		l, err := pool.Get(ctx, b.addr)
		require.NoError(t, err)
		leases[i] = l
	}
	idle, leased := leases[:2], leases[2]
	var idleCCs []*grpc.ClientConn
	for _, l := range idle {
		idleCCs = append(idleCCs, l.Value())
		require.NoError(t, l.Close())
	}
	require.EqualValues(t, 2, destination(pool.Stats(), b.addr).Idle)

	require.NoError(t, pool.Close())
	for _, cc := range idleCCs {
		assert.Equal(t, connectivity.Shutdown, cc.GetState(), "idle ClientConn closed by Close")
	}
	leasedCC := leased.Value()
	assert.Equal(t, connectivity.Ready, leasedCC.GetState(), "a leased ClientConn stays usable")
	assert.NoError(t, grpcpool.Check(ctx, leasedCC, ""))
	assert.NoError(t, leased.Close())
	assert.Equal(t, connectivity.Shutdown, leasedCC.GetState(), "leased ClientConn closed when its lease ended")

	assert.ErrorIs(t, pool.Close(), clientpool.ErrClosed)
	_, err := pool.Get(ctx, b.addr)
	assert.ErrorIs(t, err, clientpool.ErrClosed)
	assert.ErrorIs(t, grpcpool.CheckAddress(ctx, pool, b.addr, ""), clientpool.ErrClosed)
	assert.Zero(t, pool.Stats().Total)

	// Every goroutine of the ClientConns, and of the backend's side of
	// their connections, ends. goleak.Find polls for a moment: the
	// server's transport goroutines notice the closed connections
	// asynchronously.
	assert.NoError(t, goleak.Find(before))
}
