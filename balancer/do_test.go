package balancer_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/balancer"
	"github.com/seed73091bf1/connpool/internal/testnet"
)

// outcome is one done call a recordingBalancer saw.
type outcome struct {
	addr string
	err  error
}

// recordingBalancer is a RoundRobin that records every outcome reported to
// it, in order.
type recordingBalancer struct {
	*balancer.RoundRobin

	mu       sync.Mutex // protects outcomes
	outcomes []outcome
}

// newRecordingBalancer returns a recordingBalancer over eps.
func newRecordingBalancer(eps []balancer.Endpoint) *recordingBalancer {
	// Failures are counted (ConsecutiveFailures) but never eject: a
	// backend that fails stays in turn, so that the order of picks is the
	// round robin's alone.
	return &recordingBalancer{RoundRobin: balancer.NewRoundRobin(eps, balancer.WithEjection(1<<30, time.Second, time.Second))}
}

func (r *recordingBalancer) Pick(ctx context.Context) (string, func(error), error) {
	addr, done, err := r.RoundRobin.Pick(ctx)
	if err != nil {
		return addr, done, err
	}
	return addr, func(err error) {
		r.mu.Lock()
		r.outcomes = append(r.outcomes, outcome{addr, err})
		r.mu.Unlock()
		done(err)
	}, nil
}

// used returns the outcomes of picks that were used, success or failure.
func (r *recordingBalancer) used() []outcome {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []outcome
	for _, o := range r.outcomes {
		if !errors.Is(o.err, balancer.ErrPickNotUsed) {
			out = append(out, o)
		}
	}
	return out
}

// turnTo spends unused picks of rr until addr is next in turn.
func turnTo(t testing.TB, rr *balancer.RoundRobin, addr string) {
	t.Helper()
	n := len(rr.States())
	for range n {
		got, done, err := rr.Pick(context.Background())
		require.NoError(t, err)
		done(balancer.ErrPickNotUsed)
		if got == addr {
			for range n - 1 { // a full turn brings addr back
				_, done, err := rr.Pick(context.Background())
				require.NoError(t, err)
				done(balancer.ErrPickNotUsed)
			}
			return
		}
	}
	t.Fatalf("%s is not in turn", addr)
}

// newDoPool returns a pool of TCP conns closed when the test ends.
func newDoPool(t testing.TB, opts ...connpool.Option) *connpool.Pool {
	t.Helper()
	dial := func(address string) (net.Conn, error) { return net.DialTimeout("tcp", address, 10*time.Second) }
	p, err := connpool.New(dial, 4, time.Minute, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	return p
}

// echoPing is a Do function: one request and its echo.
func echoPing(c *balancer.Conn) error { return testnet.RoundTrip(c, "ping") }

// requireDoError checks that err is a *connpool.DoError with the given
// attempts, and returns it.
func requireDoError(t testing.TB, err error, attempts int) *connpool.DoError {
	t.Helper()
	var de *connpool.DoError
	require.ErrorAs(t, err, &de)
	assert.Equal(t, attempts, de.Attempts)
	return de
}

// A backend that resets a fresh conn before any response byte, a request
// that may be sent twice, and another backend to send it to.
func TestBalancerDoMovesAnIdempotentRequestToAnotherBackendOnlyIfIdempotent(t *testing.T) {
	tests := []struct {
		name         string
		opts         []connpool.DoOption
		wantAttempts int // 0: success
	}{
		{name: "Idempotent", opts: []connpool.DoOption{connpool.Idempotent()}},
		{name: "NotIdempotent", wantAttempts: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad := testnet.StartScripted(t, testnet.Always(testnet.Swallow, testnet.Reset))
			good := testnet.StartScripted(t, testnet.Always())
			rb := newRecordingBalancer([]balancer.Endpoint{{Address: bad.Addr()}, {Address: good.Addr()}})
			p := newDoPool(t)
			bp := balancer.NewPool(p, rb)
			turnTo(t, rb.RoundRobin, bad.Addr())

			var reused []bool
			err := bp.Do(context.Background(), func(c *balancer.Conn) error {
				reused = append(reused, c.Reused())
				return echoPing(c)
			}, tt.opts...)

			require.NotEmpty(t, reused)
			assert.False(t, reused[0], "the failing conn was fresh")
			assert.EqualValues(t, 1, bad.Requests(), "the request reached the bad backend")
			assert.EqualValues(t, 1, state(rb.States(), bad.Addr()).ConsecutiveFailures)
			assert.Zero(t, state(rb.States(), good.Addr()).ConsecutiveFailures)
			for _, s := range rb.States() {
				assert.Zero(t, s.InFlight, s.Address)
			}
			if tt.wantAttempts > 0 {
				de := requireDoError(t, err, tt.wantAttempts)
				assert.Equal(t, bad.Addr(), de.Address)
				assert.Len(t, reused, 1)
				assert.Zero(t, good.Accepted(), "not retried")
				assert.Zero(t, p.Stats().Retries)
				assert.Equal(t, []outcome{{bad.Addr(), de.Err}}, rb.used())
				return
			}
			require.NoError(t, err)
			assert.Len(t, reused, 2)
			assert.EqualValues(t, 1, good.Requests(), "retried on the good backend")
			assert.EqualValues(t, 1, bad.Accepted(), "and not on the bad one")
			assert.EqualValues(t, 1, p.Stats().Retries)
			used := rb.used()
			require.Len(t, used, 2)
			assert.Equal(t, bad.Addr(), used[0].addr)
			assert.Error(t, used[0].err)
			assert.Equal(t, outcome{good.Addr(), nil}, used[1])
		})
	}
}

func TestBalancerDoRetryOfAStaleConnOnTheSameBackendReportsOneSuccess(t *testing.T) {
	// The first conn answers once and is reset while idle; the next echo.
	srv := testnet.StartScripted(t, testnet.Sessions([]testnet.Step{testnet.Echo, testnet.Reset}))
	rb := newRecordingBalancer([]balancer.Endpoint{{Address: srv.Addr()}})
	// The liveness check would discard the reset conn at checkout.
	p := newDoPool(t, connpool.WithoutLivenessCheck())
	bp := balancer.NewPool(p, rb)
	require.NoError(t, bp.Do(context.Background(), echoPing))
	eventuallyTrue(t, func() bool { return srv.Ended() == 1 }, "the server resets the idle conn")

	var reused []bool
	require.NoError(t, bp.Do(context.Background(), func(c *balancer.Conn) error {
		reused = append(reused, c.Reused())
		return echoPing(c)
	}))
	assert.Equal(t, []bool{true, false}, reused, "the stale conn, then a fresh one")
	assert.EqualValues(t, 1, p.Stats().Retries)
	assert.Equal(t, []outcome{{srv.Addr(), nil}, {srv.Addr(), nil}}, rb.used(),
		"one success per request, and no failure for the stale conn")
	s := state(rb.States(), srv.Addr())
	assert.Zero(t, s.InFlight)
	assert.Zero(t, s.ConsecutiveFailures)
}

// With two retries allowed, a request meets a stale conn on each of two
// backends: one retry on the same backend, one move to the other backend,
// and one more retry there. With one, the second stale conn ends it.
func TestBalancerDoWithRetriesBoundsRetriesOfStaleConns(t *testing.T) {
	tests := []struct {
		name         string
		retries      int
		wantAttempts int // 0: success
		wantRetries  int64
	}{
		{name: "Two", retries: 2, wantRetries: 3},
		{name: "One", retries: 1, wantAttempts: 3, wantRetries: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// a's first conn goes stale while idle, and its second resets
			// before answering; b's first conn goes stale too.
			a := testnet.StartScripted(t, testnet.Sessions(
				[]testnet.Step{testnet.Echo, testnet.Reset},
				[]testnet.Step{testnet.Swallow, testnet.Reset},
			))
			b := testnet.StartScripted(t, testnet.Sessions([]testnet.Step{testnet.Echo, testnet.Reset}))
			rb := newRecordingBalancer([]balancer.Endpoint{{Address: a.Addr()}, {Address: b.Addr()}})
			p := newDoPool(t, connpool.WithoutLivenessCheck())
			bp := balancer.NewPool(p, rb)
			for range 2 { // one conn to each, in turn
				require.NoError(t, bp.Do(context.Background(), echoPing))
			}
			eventuallyTrue(t, func() bool { return a.Ended() == 1 && b.Ended() == 1 }, "the servers reset the idle conns")
			turnTo(t, rb.RoundRobin, a.Addr())

			var reused []bool
			err := bp.Do(context.Background(), func(c *balancer.Conn) error {
				reused = append(reused, c.Reused())
				return echoPing(c)
			}, connpool.Idempotent(), connpool.WithRetries(tt.retries))

			assert.EqualValues(t, tt.wantRetries, p.Stats().Retries)
			used := rb.used()[2:] // after the two priming requests
			require.NotEmpty(t, used)
			assert.Equal(t, a.Addr(), used[0].addr)
			assert.Error(t, used[0].err, "a's fresh conn failed")
			if tt.wantAttempts > 0 {
				requireDoError(t, err, tt.wantAttempts)
				assert.Equal(t, []bool{true, false, true}, reused)
				require.Len(t, used, 2)
				assert.Equal(t, b.Addr(), used[1].addr)
				assert.Error(t, used[1].err)
				assert.EqualValues(t, 1, b.Accepted())
				return
			}
			require.NoError(t, err)
			assert.Equal(t, []bool{true, false, true, false}, reused)
			assert.Equal(t, []outcome{used[0], {b.Addr(), nil}}, used)
			assert.EqualValues(t, 2, b.Accepted())
		})
	}
}

func TestBalancerDoRetryBudgetCapsDialsWhenEveryBackendIsDead(t *testing.T) {
	// Dials to every backend are refused. (A stopped EchoServer's port
	// could be taken by a listener of another test process meanwhile.)
	eps := make([]balancer.Endpoint, 3)
	for i := range eps {
		eps[i] = balancer.Endpoint{Address: testnet.DeadAddr(t)}
	}
	const share = 0.2
	p := newDoPool(t, connpool.WithRetryBudget(share, 0)) // no floor
	rb := newRecordingBalancer(eps)
	bp := balancer.NewPool(p, rb) // up to 3 backends per request

	const requests = 100
	for i := range requests {
		err := bp.Do(context.Background(), echoPing, connpool.Idempotent())
		require.Error(t, err, "request %d", i)
		var de *connpool.DialError
		assert.ErrorAs(t, err, &de, "request %d", i)
	}
	s := p.Stats()
	dials := s.Dials + s.DialErrors
	t.Logf("%d requests: %d dials, %d retries, %d refused", requests, dials, s.Retries, s.RetryBudgetExhausted)
	assert.Zero(t, s.Dials)
	assert.LessOrEqual(t, float64(dials), (1+share)*requests)
	assert.GreaterOrEqual(t, dials, int64(requests), "every request dials once")
	assert.Positive(t, s.RetryBudgetExhausted)
	for _, st := range rb.States() {
		assert.Zero(t, st.InFlight, st.Address)
	}
}

func TestBalancerDoWithNilFuncReturnsAnError(t *testing.T) {
	_, eps := startBackends(t, 1)
	rb := newRecordingBalancer(eps)
	p := newDoPool(t)
	bp := balancer.NewPool(p, rb)
	var err error
	require.NotPanics(t, func() { err = bp.Do(context.Background(), nil) })
	var de *connpool.DoError
	assert.ErrorAs(t, err, &de)
	assert.Empty(t, rb.used(), "nothing picked")
	assert.Zero(t, p.Stats().Dials)
}
