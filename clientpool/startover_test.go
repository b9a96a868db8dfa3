package clientpool_test

import (
	"context"
	"time"

	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool/clientpool"
)

// TestStartOverKeepsTheWaitTimeout: a checkout waiting at the
// WithMaxActive limit is handed an idle value that unblocked, checks it,
// finds it dead and starts over. It still waits at most WithWaitTimeout in
// all, and counts once in WaitCount.
func TestStartOverKeepsTheWaitTimeout(t *testing.T) {
	const timeout = 400 * time.Millisecond
	var d notifyingDialer
	p, err := clientpool.New(d.dial, 4, time.Minute, clientpool.WithMaxActive(1),
		clientpool.WithWaitTimeout(timeout))
	require.NoError(t, err)
	defer p.Close()
	ctx := context.Background()

	l, err := p.Get(ctx, "a")
	require.NoError(t, err)
	v := l.Value()
	// One channel: open, the value is busy and alive; closed, it is
	// unblocked and dead at once (a drpc conn whose transport broke).
	v.unblocked = v.dead
	require.NoError(t, l.Close()) // idle, blocked

	type result struct {
		l       *clientpool.Lease[*notifying]
		err     error
		elapsed time.Duration
	}
	get := func(out chan<- result) {
		start := time.Now()
		l, err := p.Get(ctx, "a")
		out <- result{l, err, time.Since(start)}
	}
	w1, w2 := make(chan result, 1), make(chan result, 1)
	start := time.Now()
	go get(w1)
	require.Eventually(t, func() bool { return p.Stats().Waiting == 1 }, 10*time.Second, time.Millisecond)
	go get(w2)
	require.Eventually(t, func() bool { return p.Stats().Waiting == 2 }, 10*time.Second, time.Millisecond)

	time.Sleep(timeout*5/8 - time.Since(start))
	close(v.dead) // W1 is handed v, finds it dead, starts over behind W2

	r2 := <-w2 // W2 gets the slot v's close frees
	require.NoError(t, r2.err)
	defer r2.l.Close()
	r1 := <-w1
	assert.ErrorIs(t, r1.err, clientpool.ErrExhausted)
	assert.Less(t, r1.elapsed, timeout+timeout/4,
		"a checkout waited %v with a wait timeout of %v", r1.elapsed, timeout)
	assert.EqualValues(t, 2, p.Stats().WaitCount, "two checkouts waited")
}
