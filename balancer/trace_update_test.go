package balancer_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool/balancer"
)

// The Readmitted hook of an Update that re-admits an endpoint runs after
// Pool.Update released the Pool's lock: a hook may call Update again.
func TestReadmittedHookOfAPoolUpdateRunsOutsideItsLock(t *testing.T) {
	p := fakeBackends(t)
	var bp *balancer.Pool
	reentered := make(chan struct{})
	tr := &balancer.Trace{
		Readmitted: func(addr string, _ time.Duration) {
			// Outside every lock, as documented: calling the Pool again
			// must not block.
			bp.Update([]balancer.Endpoint{{Address: "dead"}})
			close(reentered)
		},
	}
	rr := balancer.NewRoundRobin(nil, balancer.WithEjection(1, time.Hour, time.Hour))
	bp = balancer.NewPool(p, rr, balancer.WithTrace(tr))
	bp.Update([]balancer.Endpoint{{Address: "a"}, {Address: "dead"}})
	// One failed dial to "dead" ejects it (1 of 2 is within the 0.5 cap).
	for range 2 {
		if c, err := bp.Get(context.Background()); err == nil {
			c.Close()
		}
	}
	require.True(t, state(rr.States(), "dead").Ejected, "dead ejected")
	// Removing "a" leaves 1 of 1 ejected: the Update re-admits "dead".
	go bp.Update([]balancer.Endpoint{{Address: "dead"}})
	select {
	case <-reentered:
	case <-time.After(3 * time.Second):
		t.Fatal("deadlock: Readmitted hook called while Pool.Update holds its lock")
	}
}

// A Readmitted hook that panics during Pool.Update leaves the Pool's lock
// free: later Updates go on.
func TestPanickingReadmittedHookLeavesPoolUpdateUsable(t *testing.T) {
	p := fakeBackends(t)
	var armed = true
	tr := &balancer.Trace{
		Readmitted: func(string, time.Duration) {
			if armed {
				armed = false
				panic("hook")
			}
		},
	}
	rr := balancer.NewRoundRobin(nil, balancer.WithEjection(1, time.Hour, time.Hour))
	bp := balancer.NewPool(p, rr, balancer.WithTrace(tr))
	bp.Update([]balancer.Endpoint{{Address: "a"}, {Address: "dead"}})
	for range 2 {
		if c, err := bp.Get(context.Background()); err == nil {
			c.Close()
		}
	}
	require.True(t, state(rr.States(), "dead").Ejected, "dead ejected")
	func() {
		defer func() { require.Equal(t, "hook", recover()) }()
		bp.Update([]balancer.Endpoint{{Address: "dead"}})
	}()
	done := make(chan struct{})
	go func() {
		bp.Update([]balancer.Endpoint{{Address: "a"}, {Address: "dead"}})
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("Pool.Update blocks for ever after a Readmitted hook panicked in an earlier Update")
	}
}
