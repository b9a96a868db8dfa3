package connpool_test

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/internal/testnet"
)

// GotConnInfo.WaitTime is how long the checkout waited at limits: the dial
// that follows the wait is not part of it.
func TestGotConnWaitTimeLeavesOutTheDialAfterTheWait(t *testing.T) {
	const dialTime = 200 * time.Millisecond
	fd := &testnet.FakeDialer{}
	var slow atomic.Bool
	dial := func(a string) (net.Conn, error) {
		if slow.Load() {
			time.Sleep(dialTime)
		}
		return fd.Dial(a)
	}
	var mu sync.Mutex
	var waited time.Duration
	var info connpool.GotConnInfo
	p := newPool(t, dial, 1, time.Minute, connpool.WithMaxActive(1), connpool.WithTrace(&connpool.Trace{
		WaitDone: func(_ string, d time.Duration, _ error) { mu.Lock(); waited = d; mu.Unlock() },
		GotConn:  func(i connpool.GotConnInfo) { mu.Lock(); info = i; mu.Unlock() },
	}))
	held, err := p.Get("a")
	require.NoError(t, err)
	slow.Store(true)
	got := make(chan net.Conn)
	go func() {
		c, err := p.Get("a")
		assert.NoError(t, err)
		got <- c
	}()
	eventually(t, func() bool { return p.Stats().Waiting == 1 }, "Get waits")
	require.NoError(t, held.(*connpool.Conn).Release()) // a slot frees: the waiter dials
	c := <-got
	require.NoError(t, c.Close())
	mu.Lock()
	defer mu.Unlock()
	require.False(t, info.Reused)
	assert.Less(t, waited, dialTime/2, "the wait itself was short")
	assert.Less(t, info.WaitTime, waited+dialTime/2,
		"WaitTime %v should be the wait (%v), not the wait plus the dial", info.WaitTime, waited)
}
