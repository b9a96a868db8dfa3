package clientpool_test

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool/clientpool"
)

// A share of a value that is in use did not come from the idle stack and
// is not counted in Reuses: GotConnInfo.WasIdle is false for it.
func TestShareOfAValueInUseIsNotWasIdle(t *testing.T) {
	var mu sync.Mutex
	var infos []clientpool.GotConnInfo
	var d dialer
	p := newPool(t, &d, clientpool.WithShared(2),
		clientpool.WithTrace(&clientpool.Trace{
			GotConn: func(i clientpool.GotConnInfo) { mu.Lock(); infos = append(infos, i); mu.Unlock() },
		}))
	ctx := context.Background()
	l1, err := p.Get(ctx, "a") // dialed
	require.NoError(t, err)
	l2, err := p.Get(ctx, "a") // a share of l1's value, which is in use
	require.NoError(t, err)
	require.Same(t, l1.Value(), l2.Value())
	reuses := p.Stats().Reuses
	require.NoError(t, l2.Close())
	require.NoError(t, l1.Close())

	mu.Lock()
	defer mu.Unlock()
	require.Len(t, infos, 2)
	assert.Equal(t, int64(0), reuses, "no idle value was reused")
	assert.False(t, infos[1].WasIdle, "a share of a value in use did not come from the idle stack (Reuses=%d)", reuses)
}

// The last lease's Close puts the value back on the idle stack, and
// PutConn reports it.
func TestSharedLastLeaseCloseReportsPutConn(t *testing.T) {
	var mu sync.Mutex
	var events []string
	add := func(e string) { mu.Lock(); events = append(events, e); mu.Unlock() }
	var d dialer
	p := newPool(t, &d, clientpool.WithShared(2),
		clientpool.WithTrace(&clientpool.Trace{
			PutConn:    func(a string) { add("put " + a) },
			ConnClosed: func(a string, r clientpool.CloseReason) { add("closed " + a + " " + r.String()) },
		}))
	l, err := p.Get(context.Background(), "a")
	require.NoError(t, err)
	require.NoError(t, l.Close())
	require.Equal(t, int64(1), p.Stats().Idle, "the value went back onto the idle stack")
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []string{"put a"}, events, "the holder's Close gave the value back to the pool")
}
