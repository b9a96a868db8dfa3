package netrpc_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool/clientpool"
)

// The shared-mode load: 64 goroutines calling one server whose calls take
// 5 ms, through a pool of at most 4 clients with 16 calls each.
const (
	sharedWorkers   = 64
	sharedCallsEach = 30
	sharedCalls     = sharedWorkers * sharedCallsEach
	sharedPerConn   = 16
	sharedConns     = 4
	sharedCallTime  = 5 * time.Millisecond
)

// sharedOptions are the pool options of the shared-mode tests. The wait
// timeout only turns a hang into a failure.
func sharedOptions() []clientpool.Option {
	return []clientpool.Option{
		clientpool.WithShared(sharedPerConn), clientpool.WithMaxActive(sharedConns),
		clientpool.WithWaitTimeout(10 * time.Second),
	}
}

func TestSharedModeCapsConnsAndCallsPerConn(t *testing.T) {
	ctx := testContext(t)
	servers, addrs := startServers(t, 1)
	s := servers[0]
	s.SetDelay(sharedCallTime)
	cl := newCluster(t, addrs, sharedOptions()...)

	failed, errs := startLoad(ctx, cl, sharedWorkers, sharedCallsEach, 0).wait()
	assert.Zero(t, failed, "failed calls, of %d; first errors: %v", sharedCalls, errs)
	assert.EqualValues(t, sharedCalls, s.Calls())
	assert.LessOrEqual(t, s.PeakSessions(), sharedConns, "connections the server saw at once")
	assert.LessOrEqual(t, s.PeakCallsPerSession(), sharedPerConn, "calls one connection carried at once")
	assert.Greater(t, s.PeakCallsPerSession(), 1, "no connection carried two calls at once")
	d := destination(cl.Stats(), s.Addr())
	assert.LessOrEqual(t, d.PeakLeases, int64(sharedPerConn))
	assert.LessOrEqual(t, d.Dials, int64(sharedConns), "dials: no connection broke")
	assert.Zero(t, d.Leases, "leases left after the run")
	waitSessionsMatch(t, cl, s)
}

func TestSharedModeDroppedConnMovesItsCalls(t *testing.T) {
	ctx := testContext(t)
	servers, addrs := startServers(t, 1)
	s := servers[0]
	s.SetDelay(sharedCallTime)
	cl := newCluster(t, addrs, sharedOptions()...)

	l := startLoad(ctx, cl, sharedWorkers, sharedCallsEach, sharedCalls/3)
	select {
	case <-l.reached:
	case <-ctx.Done():
		l.wait()
		t.Fatal("the first third of the calls never finished")
	}
	require.True(t, s.DropOneSession(), "no session to drop")
	doneAtDrop := l.done.Load()
	failed, errs := l.wait()

	assert.Zero(t, failed, "failed calls, of %d; first errors: %v", sharedCalls, errs)
	assert.Less(t, doneAtDrop, int64(sharedCalls), "calls were still running after the drop")
	assert.LessOrEqual(t, s.PeakSessions(), sharedConns, "connections the server saw at once")
	assert.LessOrEqual(t, s.PeakCallsPerSession(), sharedPerConn, "calls one connection carried at once")
	st := cl.Stats()
	d := destination(st, s.Addr())
	assert.Positive(t, st.Retries, "calls retried after the drop")
	assert.EqualValues(t, sharedConns+1, d.Dials, "one connection redialed after the drop")
	assert.GreaterOrEqual(t, s.Calls(), int64(sharedCalls), "calls served")
	waitSessionsMatch(t, cl, s)
}
