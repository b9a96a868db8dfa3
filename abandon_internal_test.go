package connpool

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestAbandonedIdleDeliveryKeepsItsIdleStamp: an idle value that unblocks
// is handed to the oldest waiter just as that waiter's context ends. It
// goes back on the idle stack with its old stamp, so the idle timeout
// still counts from when it was returned.
func TestAbandonedIdleDeliveryKeepsItsIdleStamp(t *testing.T) {
	const timeout = 400 * time.Millisecond
	var d rvDialer
	p, err := New(nil, 4, timeout, withValueDial(d.dial), WithMaxActive(1))
	require.NoError(t, err)
	defer p.Close()

	c, err := p.checkout(context.Background(), "a", false)
	require.NoError(t, err)
	v := c.load().v.(*rvValue)
	v.unblocked = make(chan struct{}) // still cancelling its call
	idleFrom := time.Now()
	require.NoError(t, c.Close()) // idle, blocked
	b := p.buckets.lookup("a")

	time.Sleep(timeout * 3 / 4)
	ctx1, cancel1 := context.WithCancel(context.Background())
	defer cancel1()
	r1 := make(chan error, 1)
	go func() { _, err := p.checkout(ctx1, "a", false); r1 <- err }()
	rvEventually(t, func() bool { return rvWaiting(b) == 1 }, "W1 waits")
	rvEventually(t, func() bool { return rvGoroutines("connpool.(*Pool).wait(", "[select") == 1 }, "W1 parked")

	// W1's context ends; before giveUp gets b.mu, the value unblocks and
	// the watcher's step hands it to W1 (under the test's hold of b.mu).
	b.mu.Lock()
	cancel1()
	rvEventually(t, func() bool { return rvGoroutines("(*bucket).giveUp(") == 1 }, "W1 gives up")
	close(v.unblocked)
	toClose := b.serveUnblockedLocked(nil)
	b.mu.Unlock()
	require.Empty(t, toClose)
	assert.ErrorIs(t, <-r1, context.Canceled)

	// Well past the idle timeout since the value was returned.
	time.Sleep(time.Until(idleFrom.Add(timeout * 3 / 2)))
	c, err = p.checkout(context.Background(), "a", false)
	require.NoError(t, err)
	defer c.Release()
	idle := time.Since(idleFrom)
	if c.load().v.(*rvValue) == v {
		t.Errorf("value %d was reused after sitting idle %v with an idle timeout of %v", v.id, idle, timeout)
	}
}
