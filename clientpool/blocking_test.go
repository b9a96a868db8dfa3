package clientpool_test

import (
	"context"
	"io"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool/clientpool"
)

// TestUnblockedValueIsCheckedBeforeHandOff: a value returned while
// blocked dies (its Closed channel closes) while it sits idle, then
// unblocks. The checkout waiting at the WithMaxActive limit that the value
// is handed to checks it, as any checkout of an idle value does, and gets
// a new value instead.
func TestUnblockedValueIsCheckedBeforeHandOff(t *testing.T) {
	var d notifyingDialer
	p, err := clientpool.New(d.dial, 4, time.Minute, clientpool.WithMaxActive(1))
	require.NoError(t, err)
	defer p.Close()
	ctx := context.Background()
	l, err := p.Get(ctx, "a")
	require.NoError(t, err)
	v := l.Value()
	v.unblocked = make(chan struct{})
	require.NoError(t, l.Close()) // returned while still busy

	got := make(chan *notifying, 1)
	go func() {
		l, err := p.Get(ctx, "a")
		if err != nil {
			got <- nil
			return
		}
		got <- l.Value()
		_ = l.Release()
	}()
	require.Eventually(t, func() bool { return p.Stats().Waiting == 1 }, 10*time.Second, time.Millisecond)
	close(v.dead) // the server closed it while it sat idle
	v.unblock()   // a dead drpc conn is not blocked any more
	select {
	case w := <-got:
		require.NotNil(t, w)
		assert.True(t, v != w, "the waiter was handed a value whose Closed channel is closed")
		select {
		case <-w.dead:
			t.Errorf("handed a dead value")
		default:
		}
	case <-time.After(10 * time.Second):
		t.Fatal("waiter not served")
	}
}

// fileClient is a pooled value over a file descriptor that is not a
// socket (a pipe here; a serial port or device in real life). *os.File is
// a syscall.Conn.
type fileClient struct {
	*os.File
	peer *os.File
}

func (f *fileClient) Close() error {
	_ = f.peer.Close()
	return f.File.Close()
}

// TestNonSocketSyscallConnIsReused: the liveness check's peek applies to
// sockets only; an idle value that is a syscall.Conn over a healthy pipe
// is reused, not judged dead.
func TestNonSocketSyscallConnIsReused(t *testing.T) {
	dial := func(context.Context, string) (*fileClient, error) {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		return &fileClient{File: r, peer: w}, nil
	}
	p, err := clientpool.New(dial, 4, time.Minute)
	require.NoError(t, err)
	defer p.Close()
	ctx := context.Background()
	l, err := p.Get(ctx, "a")
	require.NoError(t, err)
	require.NoError(t, l.Close())
	l, err = p.Get(ctx, "a")
	require.NoError(t, err)
	defer l.Close()
	assert.True(t, l.Reused(), "a healthy idle value was not reused")
	assert.Zero(t, p.Stats().ClosedDeadAtCheckout, "a healthy pipe was judged dead")
}

// TestWaiterGetsUnblockedValueBeforeNewcomer: at the WithMaxActive
// limit, with two blocked values idle and a checkout waiting, the older
// value unblocks. The watcher waits on the newest value's channel (and a
// 10 ms poll), so a checkout may arrive before it sees the change; that
// checkout serves the one waiting first and queues behind it.
func TestWaiterGetsUnblockedValueBeforeNewcomer(t *testing.T) {
	var d notifyingDialer
	p, err := clientpool.New(d.dial, 4, time.Minute, clientpool.WithMaxActive(2))
	require.NoError(t, err)
	defer p.Close()
	ctx := context.Background()
	l1, err := p.Get(ctx, "a")
	require.NoError(t, err)
	l2, err := p.Get(ctx, "a")
	require.NoError(t, err)
	v1, v2 := l1.Value(), l2.Value()
	v1.unblocked = make(chan struct{})
	v2.unblocked = make(chan struct{})
	require.NoError(t, l1.Close()) // older
	require.NoError(t, l2.Close()) // newest

	get := func(got chan<- *clientpool.Lease[*notifying]) {
		l, err := p.Get(ctx, "a")
		assert.NoError(t, err)
		got <- l
	}
	waiter, newcomer := make(chan *clientpool.Lease[*notifying], 1), make(chan *clientpool.Lease[*notifying], 1)
	go get(waiter)
	require.Eventually(t, func() bool { return p.Stats().Waiting == 1 }, 10*time.Second, time.Millisecond)
	v1.unblock()
	go get(newcomer) // arrives after the waiter
	var first *clientpool.Lease[*notifying]
	select {
	case first = <-waiter:
	case l := <-newcomer:
		t.Errorf("a newcomer took the unblocked value ahead of the waiting checkout")
		first = l
		newcomer = waiter
	}
	require.NotNil(t, first)
	assert.True(t, first.Value() == v1)
	v2.unblock()
	second := <-newcomer
	require.NotNil(t, second)
	require.NoError(t, first.Close())
	require.NoError(t, second.Close())
}

// TestBalancedLeaseHasNoNetConnMethods: a balanced lease on a value that
// is not a net.Conn offers no Read, Write or deadline setters, which could
// only fail.
func TestBalancedLeaseHasNoNetConnMethods(t *testing.T) {
	var d dialer
	p := newPool(t, &d)
	bp := clientpool.NewBalanced(p, balancerRoundRobin("a"))
	l, err := bp.Get(context.Background())
	require.NoError(t, err)
	defer l.Release()
	_, isReader := any(l).(io.Reader)
	assert.False(t, isReader, "a balanced lease has a Read method")
	_, hasDeadline := any(l).(interface{ SetDeadline(time.Time) error })
	assert.False(t, hasDeadline, "a balanced lease has a SetDeadline method")
	assert.Zero(t, l.IdleTime(), "a new value sat idle")
}

// TestDeadBlockedValueFreesItsSlot: at WithMaxActive(1), the only idle
// value is blocked and then dies (Closed closes) without unblocking. The
// next checkout takes it out of service and dials in its slot rather than
// waiting for it to unblock.
func TestDeadBlockedValueFreesItsSlot(t *testing.T) {
	var d notifyingDialer
	p, err := clientpool.New(d.dial, 4, time.Minute, clientpool.WithMaxActive(1),
		clientpool.WithWaitTimeout(time.Second))
	require.NoError(t, err)
	defer p.Close()
	ctx := context.Background()
	l, err := p.Get(ctx, "a")
	require.NoError(t, err)
	v := l.Value()
	v.unblocked = make(chan struct{})
	require.NoError(t, l.Close())
	close(v.dead)

	l, err = p.Get(ctx, "a")
	require.NoError(t, err, "the dead value should have been discarded and a new one dialed")
	_ = l.Close()
}
