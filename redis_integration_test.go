//go:build integration

package connpool_test

// Tests of Pool.Do and balancer.Pool.Do against real redis-server processes
// that close, lose or kill the connections a pool holds: Redis's idle
// timeout, CLIENT KILL, a restart on the same port, and a backend killed
// mid-run behind a round-robin balancer. Each server runs on a loopback
// port chosen at run time (testnet.StartRedis).
//
// The names of the tests of the dead backend start with TestRedisDead, and
// no other test here has a capital D after "TestRedis", so that
// -run 'TestRedis.*D' runs those alone.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/balancer"
	"github.com/seed73091bf1/connpool/internal/testnet"
)

// redisIdleTimeout is how long the pools of these tests keep an idle conn:
// long enough that only the server closes conns during a test.
const redisIdleTimeout = 90 * time.Second

// redisRequestTimeout bounds one request, with its retries.
const redisRequestTimeout = 10 * time.Second

// newRedisPool returns a pool that keeps up to 16 idle conns per address
// and is closed when the test ends.
func newRedisPool(tb testing.TB) *connpool.Pool {
	tb.Helper()
	d := &net.Dialer{Timeout: 2 * time.Second}
	dial := func(ctx context.Context, address string) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", address)
	}
	return newPool(tb, nil, 16, redisIdleTimeout, connpool.WithDialContext(dial))
}

// redisRequest sends one command on c and reads its reply. An error reply
// is marked with connpool.Clean: Redis answered, and the conn is still in
// step for the next request.
func redisRequest(c net.Conn, args ...string) (testnet.RedisReply, error) {
	reply, err := testnet.RedisCall(c, 5*time.Second, args...)
	var re *testnet.RedisError
	if errors.As(err, &re) {
		return reply, connpool.Clean(err)
	}
	return reply, err
}

// redisValue is the value the tests SET under key.
func redisValue(key string) string { return "value of " + key }

// redisSetGet is a request of the idempotent kind: SET of key (for even i)
// or GET of it, checking the reply. A wrong reply is a clean error.
func redisSetGet(key string, i int) func(c net.Conn) error {
	return func(c net.Conn) error {
		if i%2 == 0 {
			reply, err := redisRequest(c, "SET", key, redisValue(key))
			if err == nil && reply.Str != "OK" {
				err = connpool.Clean(fmt.Errorf("SET %s: reply %+v", key, reply))
			}
			return err
		}
		reply, err := redisRequest(c, "GET", key)
		if err == nil && !reply.Nil && reply.Str != redisValue(key) {
			err = connpool.Clean(fmt.Errorf("GET %s: reply %+v", key, reply))
		}
		return err
	}
}

// redisTally counts the failed requests of a test and keeps a few of
// their errors, grouped by message, for the log.
type redisTally struct {
	failed atomic.Int64

	mu   sync.Mutex // protects errs
	errs map[string]int
}

// record counts err, if it is not nil.
func (tl *redisTally) record(err error) {
	if err == nil {
		return
	}
	tl.failed.Add(1)
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if tl.errs == nil {
		tl.errs = map[string]int{}
	}
	tl.errs[redisPorts.ReplaceAllString(err.Error(), ":PORT")]++
}

// redisPorts matches the ports in error messages, so that errors that
// differ only in a local port are counted together.
var redisPorts = regexp.MustCompile(`:[0-9]+\b`)

// String lists the errors by message, most frequent first.
func (tl *redisTally) String() string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	msgs := make([]string, 0, len(tl.errs))
	for msg := range tl.errs {
		msgs = append(msgs, msg)
	}
	sort.Slice(msgs, func(i, j int) bool { return tl.errs[msgs[i]] > tl.errs[msgs[j]] })
	var b strings.Builder
	for _, msg := range msgs {
		fmt.Fprintf(&b, "\n  %5d × %s", tl.errs[msg], msg)
	}
	return b.String()
}

// logRedisStats logs the counters that tell how the pool met dead conns.
func logRedisStats(tb testing.TB, s connpool.Stats) {
	tb.Helper()
	tb.Logf("pool: dials %d, dial errors %d, reuses %d, closed dead at checkout %d, retries %d, retry budget exhausted %d, released %d",
		s.Dials, s.DialErrors, s.Reuses, s.ClosedDeadAtCheckout, s.Retries, s.RetryBudgetExhausted, s.Released)
}

// redisFillIdle leaves n idle conns to address in p: it checks out n conns
// at once, sends PING on each, and returns them all.
func redisFillIdle(tb testing.TB, p *connpool.Pool, address string, n int) {
	tb.Helper()
	conns := checkout(tb, p, address, n)
	for _, c := range conns {
		reply, err := redisRequest(c, "PING")
		require.NoError(tb, err)
		require.Equal(tb, "PONG", reply.Str)
	}
	giveBack(tb, conns...)
	require.EqualValues(tb, n, destination(p.Stats(), address).Idle)
}

// redisIncrs sends n INCR requests of key through p.Do, one after the
// other and without connpool.Idempotent: INCR must never be applied twice.
// It returns how many were acknowledged and records the failures.
func redisIncrs(ctx context.Context, p *connpool.Pool, address, key string, n int, tl *redisTally) int64 {
	var acked int64
	for range n {
		ctx, cancel := context.WithTimeout(ctx, redisRequestTimeout)
		err := p.Do(ctx, address, func(c *connpool.Conn) error {
			_, err := redisRequest(c, "INCR", key)
			return err
		})
		cancel()
		if err == nil {
			acked++
		}
		tl.record(err)
	}
	return acked
}

// redisCounter reads the integer under key on srv, on a conn of its own.
func redisCounter(tb testing.TB, srv *testnet.RedisServer, key string) int64 {
	tb.Helper()
	reply, err := srv.Call("GET", key)
	require.NoError(tb, err)
	if reply.Nil {
		return 0
	}
	n, err := strconv.ParseInt(reply.Str, 10, 64)
	require.NoError(tb, err, "GET %s: %+v", key, reply)
	return n
}

// TestRedisIdleTimeoutBetweenBurstsFailsNoRequest runs requests in bursts
// with pauses past Redis's idle timeout of one second between them, so
// that Redis closes the pooled conns while they sit idle. No request may
// fail: the liveness check discards conns the server closed, and Do would
// retry a request that met a conn closed under it. The requests are GET
// and SET, declared idempotent, and the test makes no retry of its own.
func TestRedisIdleTimeoutBetweenBurstsFailsNoRequest(t *testing.T) {
	srv := testnet.StartRedis(t)
	_, err := srv.Call("CONFIG", "SET", "timeout", "1")
	require.NoError(t, err)
	pool := newRedisPool(t)
	ctx := t.Context()

	const workers, perWorker = 8, 40
	var tl redisTally
	burst := func(round int) {
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for i := range perWorker {
					key := fmt.Sprintf("a:%d:%d:%d", round, w, i/2)
					ctx, cancel := context.WithTimeout(ctx, redisRequestTimeout)
					err := pool.Do(ctx, srv.Addr(), func(c *connpool.Conn) error {
						return redisSetGet(key, i)(c)
					}, connpool.Idempotent())
					cancel()
					tl.record(err)
				}
			})
		}
		wg.Wait()
	}

	// Redis closes a conn idle for more than its timeout, checking a few
	// times a second; the pauses leave it from 0.5 to 1.5 s to do so.
	pauses := []time.Duration{1500 * time.Millisecond, 2500 * time.Millisecond, 2 * time.Second, 1750 * time.Millisecond}
	burst(0)
	for round, pause := range pauses {
		// The pause is the workload, not synchronisation: the pool's conns
		// sit idle while Redis's idle timeout closes them.
		time.Sleep(pause)
		before := pool.Stats()
		burst(round + 1)
		after := pool.Stats()
		t.Logf("after a pause of %v: %d conns found closed at checkout, %d retries",
			pause, after.ClosedDeadAtCheckout-before.ClosedDeadAtCheckout, after.Retries-before.Retries)
	}

	st := pool.Stats()
	logRedisStats(t, st)
	total := (len(pauses) + 1) * workers * perWorker
	t.Logf("%d of %d requests failed%s", tl.failed.Load(), total, tl.String())
	assert.Zero(t, tl.failed.Load(), "failed requests")
	assert.Positive(t, st.ClosedDeadAtCheckout+st.Retries,
		"Redis closed idle conns during the pauses, so the pool must have met some")
}

// TestRedisClientKillOfIdleConnsFailsNoRequest kills every client
// connection with CLIENT KILL, sent on a conn of its own, while the pool
// holds them idle. The next requests, INCRs that Do may not resend once
// sent, all succeed: the liveness check finds each killed conn closed
// before a request is written to it, and the counter shows every INCR
// applied once.
func TestRedisClientKillOfIdleConnsFailsNoRequest(t *testing.T) {
	srv := testnet.StartRedis(t)
	pool := newRedisPool(t)
	const idle = 8
	redisFillIdle(t, pool, srv.Addr(), idle)

	reply, err := srv.Call("CLIENT", "KILL", "TYPE", "normal") // SKIPME yes: not the conn that asks
	require.NoError(t, err)
	require.EqualValues(t, idle, reply.Int, "clients killed")

	var tl redisTally
	const requests = 2 * idle
	acked := redisIncrs(t.Context(), pool, srv.Addr(), "b:counter", requests, &tl)
	st := pool.Stats()
	logRedisStats(t, st)
	t.Logf("%d of %d requests failed%s", tl.failed.Load(), requests, tl.String())
	assert.Zero(t, tl.failed.Load(), "failed requests")
	assert.EqualValues(t, requests, acked)
	assert.Equal(t, acked, redisCounter(t, srv, "b:counter"), "INCRs applied")
	assert.EqualValues(t, idle, st.ClosedDeadAtCheckout, "killed conns found at checkout")
}

// TestRedisRestartWithIdleConnsFailsNoRequest restarts the server on the
// same port, stopped in order (SIGTERM) or killed (SIGKILL), while the pool
// holds conns to it idle. The next requests, INCRs, all succeed on fresh
// conns to the new process, and each is applied once.
func TestRedisRestartWithIdleConnsFailsNoRequest(t *testing.T) {
	tests := []struct {
		name string
		sig  os.Signal
	}{
		{name: "SIGTERM", sig: syscall.SIGTERM},
		{name: "SIGKILL", sig: os.Kill},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := testnet.StartRedis(t)
			pool := newRedisPool(t)
			const idle = 8
			redisFillIdle(t, pool, srv.Addr(), idle)
			addr := srv.Addr()

			srv.Restart(tt.sig)
			require.Equal(t, addr, srv.Addr())

			var tl redisTally
			const requests = 2 * idle
			acked := redisIncrs(t.Context(), pool, srv.Addr(), "c:counter", requests, &tl)
			st := pool.Stats()
			logRedisStats(t, st)
			t.Logf("%d of %d requests failed%s", tl.failed.Load(), requests, tl.String())
			assert.Zero(t, tl.failed.Load(), "failed requests")
			assert.EqualValues(t, requests, acked)
			assert.Equal(t, acked, redisCounter(t, srv, "c:counter"), "INCRs applied by the new process")
			assert.EqualValues(t, idle, st.ClosedDeadAtCheckout, "conns of the old process found at checkout")
		})
	}
}

// The load of the dead-backend tests: redisWorkers goroutines send
// redisPerWorker requests each through a balancer.Pool over
// redisBackends servers, one of which is killed (SIGKILL) once a quarter
// of the requests are done.
const (
	redisBackends  = 4
	redisWorkers   = 16
	redisPerWorker = 500
)

// redisDeadBackend is one run of the dead-backend load.
type redisDeadBackend struct {
	servers []*testnet.RedisServer
	victim  *testnet.RedisServer
	pool    *connpool.Pool
	rr      *balancer.RoundRobin
	bp      *balancer.Pool
	tally   redisTally
	killAt  int64 // requests done when the victim was killed
}

// startRedisDeadBackend starts the servers and the pools.
func startRedisDeadBackend(t *testing.T) *redisDeadBackend {
	t.Helper()
	r := &redisDeadBackend{pool: newRedisPool(t)}
	endpoints := make([]balancer.Endpoint, redisBackends)
	for i := range endpoints {
		srv := testnet.StartRedis(t)
		r.servers = append(r.servers, srv)
		endpoints[i] = balancer.Endpoint{Address: srv.Addr()}
	}
	r.victim = r.servers[1]
	r.rr = balancer.NewRoundRobin(endpoints)
	r.bp = balancer.NewPool(r.pool, r.rr)
	return r
}

// run sends the load, each request made by request(ctx, worker, i), kills
// the victim once a quarter of the requests are done, and returns the
// pool's stats at the end.
func (r *redisDeadBackend) run(t *testing.T, request func(ctx context.Context, worker, i int) error) connpool.Stats {
	t.Helper()
	const total = redisWorkers * redisPerWorker
	var done atomic.Int64
	quarter := make(chan struct{})
	var wg sync.WaitGroup
	for w := range redisWorkers {
		wg.Go(func() {
			for i := range redisPerWorker {
				ctx, cancel := context.WithTimeout(t.Context(), redisRequestTimeout)
				r.tally.record(request(ctx, w, i))
				cancel()
				if done.Add(1) == total/4 {
					close(quarter)
				}
			}
		})
	}
	<-quarter
	r.victim.Kill()
	r.killAt = done.Load()
	wg.Wait()

	stats := r.pool.Stats()
	logRedisStats(t, stats)
	for _, st := range r.rr.States() {
		t.Logf("balancer: %s ejected %v, consecutive failures %d", st.Address, st.Ejected, st.ConsecutiveFailures)
	}
	t.Logf("victim %s killed after %d of %d requests; %d failed%s",
		r.victim.Addr(), r.killAt, total, r.tally.failed.Load(), r.tally.String())
	return stats
}

// TestRedisDeadBackendIdempotentRequestsAllSucceed kills one of four
// backends mid-run. GET and SET, declared idempotent, all succeed: a
// request that met the dying backend is sent again, on a fresh conn or to
// another backend, and dials to the dead backend move on to the others
// until the balancer ejects it.
func TestRedisDeadBackendIdempotentRequestsAllSucceed(t *testing.T) {
	r := startRedisDeadBackend(t)
	stats := r.run(t, func(ctx context.Context, w, i int) error {
		key := fmt.Sprintf("d1:%d:%d", w, i/2)
		return r.bp.Do(ctx, func(c *balancer.Conn) error {
			return redisSetGet(key, i)(c)
		}, connpool.Idempotent())
	})
	assert.Zero(t, r.tally.failed.Load(), "failed requests (retries refused by the retry budget: %d)",
		stats.RetryBudgetExhausted)
}

// TestRedisDeadBackendIncrAppliedOnceEach kills one of four backends
// mid-run while INCRs, not idempotent, go to a counter on each. INCRs in
// flight on the dying backend may fail (they are counted and logged), but
// none may be applied twice: on each surviving backend the counter ends
// equal to the INCRs acknowledged by it.
func TestRedisDeadBackendIncrAppliedOnceEach(t *testing.T) {
	r := startRedisDeadBackend(t)
	const key = "d2:counter"
	acked := map[string]*atomic.Int64{}
	for _, srv := range r.servers {
		acked[srv.Addr()] = new(atomic.Int64)
	}
	_ = r.run(t, func(ctx context.Context, _, _ int) error {
		return r.bp.Do(ctx, func(c *balancer.Conn) error {
			if _, err := redisRequest(c, "INCR", key); err != nil {
				return err
			}
			acked[c.Address()].Add(1)
			return nil
		})
	})

	var sum int64
	for _, srv := range r.servers {
		n := acked[srv.Addr()].Load()
		sum += n
		if srv == r.victim {
			t.Logf("%s (killed): %d INCRs acknowledged", srv.Addr(), n)
			continue
		}
		counter := redisCounter(t, srv, key)
		t.Logf("%s: %d INCRs acknowledged, counter %d", srv.Addr(), n, counter)
		assert.Equal(t, n, counter, "INCRs applied by %s", srv.Addr())
	}
	assert.EqualValues(t, redisWorkers*redisPerWorker, sum+r.tally.failed.Load(),
		"every request either acknowledged or failed")
}

// TestRedisReplyParsing checks the RESP reader of testnet against replies
// of each type, and that a reply cut short reads as a broken connection.
func TestRedisReplyParsing(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    testnet.RedisReply
		wantErr error // matched with errors.Is; nil for none
		isRedis bool  // the error is a *RedisError
	}{
		{name: "simple", in: "+OK\r\n", want: testnet.RedisReply{Type: '+', Str: "OK"}},
		{name: "integer", in: ":-42\r\n", want: testnet.RedisReply{Type: ':', Int: -42}},
		{name: "bulk", in: "$5\r\nhe\r\no\r\n", want: testnet.RedisReply{Type: '$', Str: "he\r\no"}},
		{name: "null bulk", in: "$-1\r\n", want: testnet.RedisReply{Type: '$', Nil: true}},
		{name: "array", in: "*3\r\n:1\r\n$1\r\na\r\n-ERR x\r\n", want: testnet.RedisReply{Type: '*', Array: []testnet.RedisReply{
			{Type: ':', Int: 1}, {Type: '$', Str: "a"}, {Type: '-', Str: "ERR x"},
		}}},
		{name: "null array", in: "*-1\r\n", want: testnet.RedisReply{Type: '*', Nil: true}},
		{name: "error", in: "-ERR unknown command\r\n", isRedis: true},
		{name: "nothing", in: "", wantErr: io.EOF},
		{name: "cut line", in: "+O", wantErr: io.ErrUnexpectedEOF},
		{name: "cut bulk", in: "$5\r\nhe", wantErr: io.ErrUnexpectedEOF},
		{name: "cut array", in: "*2\r\n:1\r\n", wantErr: io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := testnet.ReadRedisReply(bufio.NewReader(strings.NewReader(tt.in)))
			switch {
			case tt.isRedis:
				var re *testnet.RedisError
				require.ErrorAs(t, err, &re)
				assert.Equal(t, "ERR unknown command", re.Msg)
				assert.False(t, connpool.IsConnError(err), "an error reply is not a connection error")
			case tt.wantErr != nil:
				require.ErrorIs(t, err, tt.wantErr)
				assert.True(t, connpool.IsConnError(err), "a cut reply is a connection error")
			default:
				require.NoError(t, err)
				assert.Equal(t, tt.want, got)
			}
		})
	}
	assert.Equal(t, "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", string(testnet.AppendRedisCommand(nil, "GET", "k")))
}
