//go:build integration

package connpool_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/internal/testnet"
)

// nginxBurst is how many requests each burst of the workload sends at once.
const nginxBurst = 8

// nginxPauses are the pauses between the bursts of the workload of the
// issue: idle spells around nginx's keepalive_timeout of 1s, so that nginx
// closes idle conns just before, just after or while the next burst reuses
// them. 950 to 1,050 ms in 5 ms steps is 21 pauses; 0.5 s (conns survive),
// 1.5 s and 2 s (nginx has closed them well before) make 24. They are the
// workload, not synchronisation.
func nginxPauses() []time.Duration {
	var pauses []time.Duration
	for ms := 950; ms <= 1050; ms += 5 {
		pauses = append(pauses, time.Duration(ms)*time.Millisecond)
	}
	return append(pauses, 500*time.Millisecond, 1500*time.Millisecond, 2*time.Second)
}

// nginxRuns returns how many times each client sends the workload: 10, or
// CONNPOOL_NGINX_RUNS if set (1 for a quick check).
func nginxRuns(t *testing.T) int {
	t.Helper()
	s := os.Getenv("CONNPOOL_NGINX_RUNS")
	if s == "" {
		return 10
	}
	runs, err := strconv.Atoi(s)
	require.NoError(t, err, "CONNPOOL_NGINX_RUNS")
	require.Positive(t, runs, "CONNPOOL_NGINX_RUNS")
	return runs
}

// nginxTally is the outcome of one client's requests over all its runs.
type nginxTally struct {
	mu        sync.Mutex // protects the fields below
	requests  int
	failures  int
	firstErrs []string // the first few failures, for the log
	// connErrors counts failures that are connection errors: the conn
	// broke under the request (connpool.IsConnError).
	connErrors int

	// For connpool: the pool-wide counters, summed over the runs' pools,
	// and the retries of each run.
	retries, retriesRefused, deadAtCheckout, dials, reuses int64
	runRetries                                             []int64
	// attemptErrs counts the errors of attempts (the retried ones
	// included) by error and by what the conn had seen.
	attemptErrs map[string]int
	// For net/http: the conns requests got beyond their first, that is,
	// the transport's retries.
	httpRetries atomic.Int64
}

func (tl *nginxTally) record(err error) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.requests++
	if err == nil {
		return
	}
	tl.failures++
	if connpool.IsConnError(err) {
		tl.connErrors++
	}
	if len(tl.firstErrs) < 5 {
		tl.firstErrs = append(tl.firstErrs, err.Error())
	}
}

func (tl *nginxTally) addStats(s connpool.Stats) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.retries += s.Retries
	tl.retriesRefused += s.RetryBudgetExhausted
	tl.deadAtCheckout += s.ClosedDeadAtCheckout
	tl.dials += s.Dials
	tl.reuses += s.Reuses
	tl.runRetries = append(tl.runRetries, s.Retries)
}

func (tl *nginxTally) recordAttempt(c *connpool.Conn, err error) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if tl.attemptErrs == nil {
		tl.attemptErrs = map[string]int{}
	}
	key := fmt.Sprintf("%v (reused %v, sent %v, received %v)", err, c.Reused(), c.Sent(), c.Received())
	tl.attemptErrs[key]++
}

// sendNginxPattern sends the workload with do: a burst of nginxBurst
// concurrent requests, then, after each pause, another burst. It records
// every request's outcome in tl.
func sendNginxPattern(ctx context.Context, tl *nginxTally, do func(context.Context) error) {
	burst := func() {
		var wg sync.WaitGroup
		for range nginxBurst {
			wg.Go(func() { tl.record(do(ctx)) })
		}
		wg.Wait()
	}
	burst()
	for _, pause := range nginxPauses() {
		// The pause is the workload: the conns sit idle for it.
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
		burst()
	}
}

// nginxRequestTimeout bounds one request, so that a hung conn fails the
// request rather than the test's time limit.
const nginxRequestTimeout = 10 * time.Second

// runNginxConnpool sends the workload runs times, each time through a new
// connpool.Pool made with poolOpts, with raw HTTP/1.1 keep-alive requests
// made by Do with doOpts. It runs off the test's goroutine, so it returns
// its errors.
func runNginxConnpool(addr string, runs int, tl *nginxTally, poolOpts []connpool.Option, doOpts []connpool.DoOption) error {
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	dial := func(address string) (net.Conn, error) { return dialer.Dial("tcp", address) }
	get := func(c *connpool.Conn) error {
		if err := c.SetDeadline(time.Now().Add(nginxRequestTimeout)); err != nil {
			return err
		}
		resp, err := testnet.RawGet(c)
		if err != nil {
			tl.recordAttempt(c, err)
			return err
		}
		if resp.Status != http.StatusOK || string(resp.Body) != "ok\n" {
			return fmt.Errorf("unexpected response %d %q", resp.Status, resp.Body)
		}
		// A conn nginx said it closes (Connection: close, which
		// keepalive_requests rules out here) would be dropped by the
		// pool's liveness check at its next checkout.
		return c.SetDeadline(time.Time{})
	}
	for range runs {
		pool, err := connpool.New(dial, 16, 90*time.Second, poolOpts...)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		sendNginxPattern(ctx, tl, func(ctx context.Context) error {
			return pool.Do(ctx, addr, get, doOpts...)
		})
		cancel()
		tl.addStats(pool.Stats())
		if err := pool.Close(); err != nil {
			return err
		}
	}
	return nil
}

// runNginxHTTP sends the workload runs times, each time through a new
// net/http.Transport.
func runNginxHTTP(addr string, runs int, tl *nginxTally) {
	url := "http://" + addr + "/"
	for range runs {
		tr := &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 16,
		}
		client := &http.Client{Transport: tr, Timeout: nginxRequestTimeout}
		get := func(ctx context.Context) error {
			// The transport retries a request by taking another conn:
			// count the conns each request got.
			var conns atomic.Int64
			ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
				GotConn: func(httptrace.GotConnInfo) { conns.Add(1) },
			})
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return err
			}
			resp, err := client.Do(req)
			if n := conns.Load(); n > 1 {
				tl.httpRetries.Add(n - 1)
			}
			if err != nil {
				return err
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				return err
			}
			if resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
				return fmt.Errorf("unexpected response %d %q", resp.StatusCode, body)
			}
			return nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		sendNginxPattern(ctx, tl, get)
		cancel()
		tr.CloseIdleConnections()
	}
}

// TestNginxKeepAliveRace sends bursts of GET requests to a real nginx,
// separated by pauses around its keepalive_timeout of 1s, so that nginx
// closes idle conns about when they are reused. Do with Idempotent must
// retry every request that meets a conn closed under it (EOF or a reset
// before any byte of a response) on a fresh conn, so that no request fails.
//
// With the pool's liveness check, a conn nginx closed before the checkout
// is dropped there, and only a close that lands between the check and
// nginx reading the request (a window of microseconds) makes Do retry:
// retries there are logged, not asserted, since they are a matter of
// timing. Without the liveness check, every conn nginx closed during a
// pause is reused and fails, so the 1.5 s and 2 s pauses make Do retry in
// every run: that is asserted. Do without Idempotent and net/http's
// transport get the same workload; they are logged for comparison.
//
// Each client sends the workload CONNPOOL_NGINX_RUNS times (10 by default,
// about 25 s a run), each run with a new pool or transport. The clients run
// at the same time, each on conns of its own, against one nginx; the
// subtests then check and log each client's outcome.
func TestNginxKeepAliveRace(t *testing.T) {
	srv := testnet.StartNginx(t, testnet.NginxConfig{KeepaliveTimeout: time.Second})
	runs := nginxRuns(t)
	wantRequests := runs * (len(nginxPauses()) + 1) * nginxBurst

	type client struct {
		name     string
		poolOpts []connpool.Option
		doOpts   []connpool.DoOption
		// mustRetry: every run must retry (no liveness check: a conn
		// closed during a long pause is always reused).
		mustRetry bool
		// mustSucceed: no request may fail (Idempotent).
		mustSucceed bool

		tally nginxTally
		err   error
	}
	clients := []*client{
		{name: "Idempotent", doOpts: []connpool.DoOption{connpool.Idempotent()}, mustSucceed: true},
		{name: "NotIdempotent"},
		{
			name:      "IdempotentNoLivenessCheck",
			poolOpts:  []connpool.Option{connpool.WithoutLivenessCheck()},
			doOpts:    []connpool.DoOption{connpool.Idempotent()},
			mustRetry: true, mustSucceed: true,
		},
		{name: "NotIdempotentNoLivenessCheck", poolOpts: []connpool.Option{connpool.WithoutLivenessCheck()}},
	}
	var stdlib nginxTally

	start := time.Now()
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Go(func() { c.err = runNginxConnpool(srv.Addr(), runs, &c.tally, c.poolOpts, c.doOpts) })
	}
	wg.Go(func() { runNginxHTTP(srv.Addr(), runs, &stdlib) })
	wg.Wait()
	t.Logf("%d runs of %d bursts of %d requests per client in %v", runs, len(nginxPauses())+1, nginxBurst,
		time.Since(start).Round(time.Millisecond))

	for _, c := range clients {
		t.Run("connpool/"+c.name, func(t *testing.T) {
			require.NoError(t, c.err)
			tl := &c.tally
			t.Logf("%d/%d requests failed (%d connection errors) %q", tl.failures, tl.requests, tl.connErrors, tl.firstErrs)
			t.Logf("%d retries (per run %v), %d refused by the budget; %d dials, %d reuses, %d dead conns dropped at checkout",
				tl.retries, tl.runRetries, tl.retriesRefused, tl.dials, tl.reuses, tl.deadAtCheckout)
			for what, n := range tl.attemptErrs {
				t.Logf("attempt failed %d times: %s", n, what)
			}
			assert.Equal(t, wantRequests, tl.requests)
			if c.mustSucceed {
				assert.Zero(t, tl.failures, "requests that failed: %q", tl.firstErrs)
			}
			if c.mustRetry {
				for run, n := range tl.runRetries {
					assert.Positive(t, n, "run %d made no retry", run+1)
				}
			}
		})
	}
	t.Run("net/http", func(t *testing.T) {
		t.Logf("%d/%d requests failed %q; %d retries (conns requests got beyond their first)",
			stdlib.failures, stdlib.requests, stdlib.firstErrs, stdlib.httpRetries.Load())
		assert.Equal(t, wantRequests, stdlib.requests)
	})
}
