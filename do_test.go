package connpool_test

import (
	"context"
	"errors"
	"io"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/internal/testnet"
)

var errFromFn = errors.New("boom")

// echoPing is a Do function: one request and its echo.
func echoPing(c *connpool.Conn) error { return testnet.RoundTrip(c, "ping") }

// doAttempt records what a Do function saw on one call.
type doAttempt struct {
	reused, sent, received bool
	err                    error
}

// recordPings returns a Do function that pings and appends what it saw to
// *log.
func recordPings(log *[]doAttempt) func(*connpool.Conn) error {
	return func(c *connpool.Conn) error {
		err := echoPing(c)
		*log = append(*log, doAttempt{reused: c.Reused(), sent: c.Sent(), received: c.Received(), err: err})
		return err
	}
}

// requireDoError checks that err is a *connpool.DoError for address with
// the given attempts, and returns it.
func requireDoError(tb testing.TB, err error, address string, attempts int) *connpool.DoError {
	tb.Helper()
	var de *connpool.DoError
	require.ErrorAs(tb, err, &de)
	assert.Equal(tb, address, de.Address)
	assert.Equal(tb, attempts, de.Attempts)
	return de
}

// staleIdleConn leaves one idle conn to srv in p that the server has since
// reset: a successful Do on a fresh conn, after which the server, whose
// first session is {Echo, Reset}, aborts it.
func staleIdleConn(t *testing.T, p *connpool.Pool, srv *testnet.ScriptedServer) {
	t.Helper()
	ended := srv.Ended()
	require.NoError(t, p.Do(context.Background(), srv.Addr(), echoPing))
	require.EqualValues(t, 1, p.Stats().Idle)
	eventually(t, func() bool { return srv.Ended() == ended+1 }, "the server resets the idle conn")
}

func TestDoReturnsTheConnToThePoolOnSuccess(t *testing.T) {
	srv := testnet.StartEcho(t)
	p := newPool(t, tcpDial, 4, time.Minute)
	ctx := context.Background()
	var first, second string
	require.NoError(t, p.Do(ctx, srv.Addr(), func(c *connpool.Conn) error {
		first = c.LocalAddr().String()
		assert.False(t, c.Reused())
		return echoPing(c)
	}))
	s := p.Stats()
	assert.EqualValues(t, 1, s.Idle)
	assert.Zero(t, s.InUse)
	assert.Zero(t, s.Released)

	require.NoError(t, p.Do(ctx, srv.Addr(), func(c *connpool.Conn) error {
		second = c.LocalAddr().String()
		assert.True(t, c.Reused(), "the second Do reuses the pooled conn")
		return echoPing(c)
	}))
	assert.Equal(t, first, second)
	assert.EqualValues(t, 1, p.Stats().Dials)
	assert.EqualValues(t, 1, srv.Accepted())
}

func TestDoReleasesTheConnWhenFnFails(t *testing.T) {
	var d testnet.FakeDialer
	p := newPool(t, d.Dial, 4, time.Minute)
	calls := 0
	err := p.Do(context.Background(), "a:1", func(*connpool.Conn) error {
		calls++
		return errFromFn
	}, connpool.Idempotent())
	requireDoError(t, err, "a:1", 1)
	assert.ErrorIs(t, err, errFromFn)
	assert.Equal(t, 1, calls, "a plain error is not a connection error: no retry")
	s := p.Stats()
	assert.EqualValues(t, 1, s.Released)
	assert.Zero(t, s.Total)
	assert.Zero(t, d.Open(), "the socket is closed")
}

func TestDoPoolsTheConnAndDoesNotRetryACleanError(t *testing.T) {
	for _, tt := range []struct {
		name string
		mark func(error) error
	}{
		{"Clean", connpool.Clean},
		{"CleanFailure", connpool.CleanFailure},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var d testnet.FakeDialer
			p := newPool(t, d.Dial, 4, time.Minute)
			calls := 0
			err := p.Do(context.Background(), "a:1", func(*connpool.Conn) error {
				calls++
				return tt.mark(errFromFn)
			}, connpool.Idempotent(), connpool.WithRetries(3))
			requireDoError(t, err, "a:1", 1)
			assert.ErrorIs(t, err, errFromFn)
			var clean *connpool.CleanError
			assert.ErrorAs(t, err, &clean)
			assert.Equal(t, 1, calls)
			s := p.Stats()
			assert.EqualValues(t, 1, s.Idle, "the conn is clean: pooled")
			assert.Zero(t, s.Released)
			assert.Zero(t, s.Retries)
			assert.EqualValues(t, 1, d.Open())
		})
	}
}

func TestDoReleasesTheConnWhenFnPanicsAndThePanicGoesOn(t *testing.T) {
	var d testnet.FakeDialer
	p := newPool(t, d.Dial, 4, time.Minute)
	func() {
		defer func() {
			assert.Equal(t, "fn panicked", recover())
		}()
		_ = p.Do(context.Background(), "a:1", func(*connpool.Conn) error { panic("fn panicked") })
		t.Error("Do returned instead of panicking")
	}()
	s := p.Stats()
	assert.EqualValues(t, 1, s.Released)
	assert.Zero(t, s.Total)
	assert.Zero(t, s.InUse)
	assert.Zero(t, d.Open(), "the socket is closed")
	// The address is usable afterwards: nothing leaked a slot.
	require.NoError(t, p.Do(context.Background(), "a:1", func(*connpool.Conn) error { return nil }))
}

func TestDoWithNilFuncReturnsAnError(t *testing.T) {
	var d testnet.FakeDialer
	p := newPool(t, d.Dial, 4, time.Minute)
	var err error
	require.NotPanics(t, func() { err = p.Do(context.Background(), "a:1", nil) })
	var de *connpool.DoError
	require.ErrorAs(t, err, &de)
	assert.Zero(t, d.Dials(), "nothing to run: no dial")
}

func TestDoRetriesAStaleReusedConnOnAFreshOne(t *testing.T) {
	// The first two conns answer once and are reset while idle; the next
	// echo.
	stale := []testnet.Step{testnet.Echo, testnet.Reset}
	srv := testnet.StartScripted(t, testnet.Sessions(stale, stale))
	// The liveness check would find the reset conns dead at checkout and
	// dial instead: turn it off to make Do meet a stale conn.
	p := newPool(t, tcpDial, 4, time.Minute, connpool.WithoutLivenessCheck())
	// Two idle conns, both stale: a retry that took an idle conn rather
	// than dialing would meet the second.
	conns := checkout(t, p, srv.Addr(), 2)
	for _, c := range conns {
		require.NoError(t, testnet.RoundTrip(c, "ping"))
	}
	giveBack(t, conns...)
	eventually(t, func() bool { return srv.Ended() == 2 }, "the server resets the idle conns")

	var log []doAttempt
	require.NoError(t, p.Do(context.Background(), srv.Addr(), recordPings(&log)))
	require.Len(t, log, 2)
	assert.True(t, log[0].reused)
	assert.False(t, log[0].sent, "the write failed: the request was not sent")
	assert.True(t, connpool.IsConnError(log[0].err), "%v", log[0].err)
	assert.False(t, log[1].reused, "the retry runs on a fresh conn")
	assert.NoError(t, log[1].err)
	s := p.Stats()
	assert.EqualValues(t, 1, s.Retries)
	assert.EqualValues(t, 1, s.Released, "the stale conn")
	assert.EqualValues(t, 2, s.Idle, "the fresh conn is pooled, beside the other stale one")
	assert.EqualValues(t, 3, srv.Accepted())
}

func TestDoDoesNotRetryAfterAPartialResponse(t *testing.T) {
	// The first conn answers once, then cuts its second answer short.
	srv := testnet.StartScripted(t, testnet.Sessions(
		[]testnet.Step{testnet.Echo, testnet.EchoHalf, testnet.Hangup},
	))
	p := newPool(t, tcpDial, 4, time.Minute)
	require.NoError(t, p.Do(context.Background(), srv.Addr(), echoPing))

	var log []doAttempt
	err := p.Do(context.Background(), srv.Addr(), recordPings(&log), connpool.Idempotent())
	requireDoError(t, err, srv.Addr(), 1)
	require.Len(t, log, 1)
	assert.True(t, log[0].reused)
	assert.True(t, log[0].received, "part of the response was read")
	assert.True(t, connpool.IsConnError(err), "%v", err)
	assert.Zero(t, p.Stats().Retries)
	assert.EqualValues(t, 1, srv.Accepted(), "no second conn")
}

func TestDoRetriesARequestSentOnAReusedConnOnlyIfIdempotent(t *testing.T) {
	tests := []struct {
		name         string
		opts         []connpool.DoOption
		wantAttempts int // 0: success
	}{
		{name: "NotIdempotent", wantAttempts: 1},
		{name: "Idempotent", opts: []connpool.DoOption{connpool.Idempotent()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The first conn answers once, then reads the second request
			// and hangs up without answering; the next echo.
			srv := testnet.StartScripted(t, testnet.Sessions(
				[]testnet.Step{testnet.Echo, testnet.Swallow, testnet.Hangup},
			))
			p := newPool(t, tcpDial, 4, time.Minute)
			require.NoError(t, p.Do(context.Background(), srv.Addr(), echoPing))

			var log []doAttempt
			err := p.Do(context.Background(), srv.Addr(), recordPings(&log), tt.opts...)
			require.NotEmpty(t, log)
			assert.True(t, log[0].reused)
			assert.True(t, log[0].sent, "the request reached the server")
			assert.False(t, log[0].received)
			assert.ErrorIs(t, log[0].err, io.EOF)
			if tt.wantAttempts > 0 {
				requireDoError(t, err, srv.Addr(), tt.wantAttempts)
				assert.Len(t, log, 1)
				assert.Zero(t, p.Stats().Retries)
				assert.EqualValues(t, 1, srv.Accepted())
				assert.EqualValues(t, 2, srv.Requests(), "the server read the request")
				return
			}
			require.NoError(t, err)
			require.Len(t, log, 2)
			assert.False(t, log[1].reused)
			assert.EqualValues(t, 1, p.Stats().Retries)
			assert.EqualValues(t, 2, srv.Accepted())
			assert.EqualValues(t, 3, srv.Requests(), "the server read the request twice")
		})
	}
}

func TestDoDoesNotRetryAFreshConnEvenWithRetriesLeft(t *testing.T) {
	// Every conn reads the request and resets before any response byte:
	// only the freshness of the conn rules the retry out.
	srv := testnet.StartScripted(t, testnet.Always(testnet.Swallow, testnet.Reset))
	p := newPool(t, tcpDial, 4, time.Minute)

	var log []doAttempt
	err := p.Do(context.Background(), srv.Addr(), recordPings(&log), connpool.Idempotent(), connpool.WithRetries(2))
	requireDoError(t, err, srv.Addr(), 1)
	require.Len(t, log, 1)
	assert.False(t, log[0].reused)
	assert.False(t, log[0].received)
	assert.True(t, connpool.IsConnError(err), "%v", err)
	assert.Zero(t, p.Stats().Retries)
	assert.EqualValues(t, 1, srv.Accepted())
}

// After a stale reused conn, the retry runs on a fresh conn, which is
// never retried: WithRetries above 1 cannot add a second retry in
// Pool.Do (it can in balancer.Pool.Do, which moves to another backend).
func TestDoRetriesAStaleConnOnceEvenWithTwoRetriesAllowed(t *testing.T) {
	srv := testnet.StartScripted(t, testnet.Sessions(
		[]testnet.Step{testnet.Echo, testnet.Reset},    // goes stale while idle
		[]testnet.Step{testnet.Swallow, testnet.Reset}, // the retry's fresh conn fails too
	))
	p := newPool(t, tcpDial, 4, time.Minute, connpool.WithoutLivenessCheck())
	staleIdleConn(t, p, srv)

	var log []doAttempt
	err := p.Do(context.Background(), srv.Addr(), recordPings(&log), connpool.Idempotent(), connpool.WithRetries(2))
	requireDoError(t, err, srv.Addr(), 2)
	require.Len(t, log, 2)
	assert.True(t, log[0].reused)
	assert.False(t, log[1].reused)
	assert.EqualValues(t, 1, p.Stats().Retries)
	assert.EqualValues(t, 2, srv.Accepted())
}

func TestDoWithZeroRetriesDoesNotRetry(t *testing.T) {
	srv := testnet.StartScripted(t, testnet.Sessions([]testnet.Step{testnet.Echo, testnet.Reset}))
	p := newPool(t, tcpDial, 4, time.Minute, connpool.WithoutLivenessCheck())
	staleIdleConn(t, p, srv)

	var log []doAttempt
	err := p.Do(context.Background(), srv.Addr(), recordPings(&log), connpool.Idempotent(), connpool.WithRetries(0))
	requireDoError(t, err, srv.Addr(), 1)
	require.Len(t, log, 1)
	assert.True(t, log[0].reused)
	assert.False(t, log[0].sent)
	assert.Zero(t, p.Stats().Retries)
	assert.Zero(t, p.Stats().RetryBudgetExhausted, "the limit, not the budget, refused")
	assert.EqualValues(t, 1, srv.Accepted())
}

func TestDoDoesNotRetryOnceTheContextIsCancelled(t *testing.T) {
	srv := testnet.StartScripted(t, testnet.Sessions([]testnet.Step{testnet.Echo, testnet.Reset}))
	p := newPool(t, tcpDial, 4, time.Minute, connpool.WithoutLivenessCheck())
	staleIdleConn(t, p, srv)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var log []doAttempt
	record := recordPings(&log)
	err := p.Do(ctx, srv.Addr(), func(c *connpool.Conn) error {
		cancel() // the caller gives up while the request is under way
		return record(c)
	}, connpool.Idempotent())
	de := requireDoError(t, err, srv.Addr(), 1)
	require.Len(t, log, 1)
	assert.True(t, log[0].reused)
	assert.False(t, log[0].sent, "all but the context allowed a retry")
	assert.True(t, connpool.IsConnError(de.Err), "%v", de.Err)
	assert.Zero(t, p.Stats().Retries)
	assert.EqualValues(t, 1, srv.Accepted())
}

func TestDoRetriesStayWithinTheRetryBudget(t *testing.T) {
	// Every conn answers once and is reset while idle, so every reused
	// conn is stale and every request on one wants a retry.
	srv := testnet.StartScripted(t, testnet.Always(testnet.Echo, testnet.Reset))
	const share = 0.2
	p := newPool(t, tcpDial, 4, time.Minute, connpool.WithoutLivenessCheck(), connpool.WithRetryBudget(share, 0))
	ctx := context.Background()

	const requests = 60
	failed := 0
	for i := range requests {
		err := p.Do(ctx, srv.Addr(), echoPing)
		if err != nil {
			failed++
			requireDoError(t, err, srv.Addr(), 1)
			assert.True(t, connpool.IsConnError(err), "request %d: %v", i, err)
		}
		// Let the server reset the conn just pooled before the next Do.
		eventually(t, func() bool { return srv.Ended() == srv.Accepted() }, "request %d: the server resets its conns", i)
	}
	s := p.Stats()
	attempts := s.Dials + s.Reuses
	t.Logf("%d requests: %d attempts, %d retries, %d refused, %d failed", requests, attempts, s.Retries, s.RetryBudgetExhausted, failed)
	assert.LessOrEqual(t, float64(attempts), (1+share)*requests+1)
	assert.LessOrEqual(t, float64(s.Retries), share*requests)
	assert.Positive(t, s.Retries, "the budget lets some retries go")
	assert.Positive(t, s.RetryBudgetExhausted)
	assert.Positive(t, failed)
}

func TestNewRejectsAnInvalidRetryBudget(t *testing.T) {
	var d testnet.FakeDialer
	tests := []struct {
		name      string
		share     float64
		perSecond int
		wantErr   bool
	}{
		{name: "NegativeShare", share: -1, wantErr: true},
		{name: "ShareAboveOne", share: 2, wantErr: true},
		{name: "NaNShare", share: math.NaN(), wantErr: true},
		{name: "NegativePerSecond", share: 0.2, perSecond: -1, wantErr: true},
		{name: "Off", share: 0, perSecond: 0},
		{name: "ShareOne", share: 1, perSecond: 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := connpool.New(d.Dial, 4, time.Minute, connpool.WithRetryBudget(tt.share, tt.perSecond))
			if tt.wantErr {
				assert.ErrorIs(t, err, connpool.ErrInvalidConfig)
				assert.Nil(t, p)
				return
			}
			require.NoError(t, err)
			require.NoError(t, p.Close())
		})
	}
}

func TestDoAllocatesNothingOnSuccess(t *testing.T) {
	var d testnet.FakeDialer
	p := newPool(t, d.Dial, 4, time.Minute)
	ctx := context.Background()
	ok := func(*connpool.Conn) error { return nil }
	require.NoError(t, p.Do(ctx, "a:1", ok)) // warm: one idle conn
	for _, tt := range []struct {
		name string
		opts []connpool.DoOption
	}{
		{"NoOptions", nil},
		{"Idempotent", []connpool.DoOption{connpool.Idempotent(), connpool.WithRetries(2)}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			allocs := testing.AllocsPerRun(1000, func() {
				if err := p.Do(ctx, "a:1", ok, tt.opts...); err != nil {
					t.Fatal(err)
				}
			})
			assert.Zero(t, allocs)
		})
	}
	assert.EqualValues(t, 1, d.Dials())
}

// TestDoErrorNamesThePackageOnce checks that a DoError wrapping one of the
// package's own errors, such as a failed dial, does not repeat its prefix.
func TestDoErrorNamesThePackageOnce(t *testing.T) {
	dialErr := &connpool.DialError{Address: "a:1", Err: errors.New("connection refused")}
	for _, tc := range []struct {
		err  *connpool.DoError
		want string
	}{
		{&connpool.DoError{Attempts: 1, Err: dialErr}, "connpool: " + strings.TrimPrefix(dialErr.Error(), "connpool: ")},
		{&connpool.DoError{Attempts: 2, Err: dialErr}, "connpool: 2 attempts, last: " + strings.TrimPrefix(dialErr.Error(), "connpool: ")},
		{&connpool.DoError{Address: "a:1", Attempts: 1, Err: io.EOF}, "connpool: a:1: EOF"},
		{&connpool.DoError{Attempts: 1, Err: connpool.ErrClosed}, connpool.ErrClosed.Error()},
	} {
		assert.Equal(t, tc.want, tc.err.Error())
		assert.Equal(t, 1, strings.Count(tc.err.Error(), "connpool: "), tc.err.Error())
	}
}
