package connpool

import (
	"context"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The engine pools values of any io.Closer for the clientpool package.
// These tests run it with such values, on the fake clock of the other
// internal tests.

// liveClient is a pooled value that is not a net.Conn and tells when its
// server closed it, through a Closed channel.
type liveClient struct {
	dead   chan struct{}
	closed bool // guarded by valueDialer.mu
}

func (c *liveClient) Closed() <-chan struct{} { return c.dead }

func (c *liveClient) Close() error { return nil }

// valueDialer makes liveClients, or refuses while refuse is set.
type valueDialer struct {
	mu      sync.Mutex
	clients []*liveClient
	refuse  bool
	calls   int
}

func (d *valueDialer) dial(context.Context, string) (io.Closer, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls++
	if d.refuse {
		return nil, errRefusedValue
	}
	c := &liveClient{dead: make(chan struct{})}
	d.clients = append(d.clients, c)
	return c, nil
}

var errRefusedValue = io.ErrClosedPipe

// kill closes the Closed channels of the first n clients still alive, as
// a server closing them would.
func (d *valueDialer) kill(n int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.clients {
		if n == 0 {
			return
		}
		if !c.closed {
			close(c.dead)
			c.closed = true
			n--
		}
	}
}

func (d *valueDialer) dials() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.calls
}

func withValueDial(dial func(context.Context, string) (io.Closer, error)) Option {
	return func(o *options) { o.dialValue = dial }
}

// TestMinIdleReplacesKilledValues: the server kills the three idle
// clients the pool keeps at an address; within two sweeps the pool has
// three live ones ready again.
func TestMinIdleReplacesKilledValues(t *testing.T) {
	var d valueDialer
	p, clock := newMinIdlePool(t, nil, 8, 3, withValueDial(d.dial))
	require.NoError(t, p.Warm(context.Background(), "a", 1))
	sweepAndWait(p, clock)
	require.EqualValues(t, 3, destination(t, p, "a").Idle)

	d.kill(3)
	for range 2 {
		clock.advance(time.Second)
		sweepAndWait(p, clock)
	}
	dst := destination(t, p, "a")
	assert.EqualValues(t, 3, dst.ClosedDeadWhileIdle)
	assert.EqualValues(t, 3, dst.Idle)
	assert.Equal(t, 6, d.dials())
	b := p.buckets.lookup("a")
	b.mu.Lock()
	for _, ic := range b.idleCopyLocked() {
		assert.NoError(t, ic.pc.probe.check(ic.pc.v), "a ready value is alive")
	}
	b.mu.Unlock()
}

// TestMinIdleValuesBackOff: against a server that refuses every dial, a
// second of sweeps every 10 ms dials a handful of times, not at every
// sweep.
func TestMinIdleValuesBackOff(t *testing.T) {
	d := valueDialer{refuse: true}
	p, clock := newMinIdlePool(t, nil, 8, 3, withValueDial(d.dial))
	_, err := p.GetContext(context.Background(), "a")
	require.ErrorIs(t, err, errRefusedValue)
	start := d.dials()
	for range 100 {
		clock.advance(10 * time.Millisecond)
		sweepAndWait(p, clock)
	}
	n := d.dials() - start
	assert.GreaterOrEqual(t, n, 3)
	assert.LessOrEqual(t, n, 6, "dials against a refusing server in 1 s of 10 ms sweeps")
}
