package connpool_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/internal/testnet"
)

// A ConnClosed hook that panics during Pool.Close runs after every idle
// conn of every address was closed and its slot freed.
func TestPanickingConnClosedInPoolCloseStillClosesEveryConn(t *testing.T) {
	var armed atomic.Bool
	d := &testnet.FakeDialer{}
	p, err := connpool.New(d.Dial, 4, time.Minute, connpool.WithTrace(&connpool.Trace{
		ConnClosed: func(string, connpool.CloseReason) {
			if armed.CompareAndSwap(true, false) {
				panic("hook")
			}
		},
	}))
	require.NoError(t, err)
	for _, a := range []string{"a", "b", "c", "d"} {
		c, err := p.Get(a)
		require.NoError(t, err)
		require.NoError(t, c.Close())
	}
	require.Equal(t, int64(4), d.Open())
	armed.Store(true)
	func() {
		defer func() { require.Equal(t, "hook", recover()) }()
		_ = p.Close()
	}()
	assert.Zero(t, d.Open(), "every idle conn is closed by Pool.Close, a panicking hook notwithstanding")
	s := p.Stats()
	assert.Zero(t, s.Total, "every slot freed")
}
