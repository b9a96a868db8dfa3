package connpool_test

import (
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/internal/testnet"
)

func TestDrainClosesIdleConnsNowAndInUseOnesOnReturn(t *testing.T) {
	var d testnet.FakeDialer
	p := newPool(t, d.Dial, 8, 0)

	conns := checkout(t, p, "a:1", 3)
	giveBack(t, conns[0], conns[1])
	keep := checkout(t, p, "b:1", 1)[0]
	giveBack(t, keep)

	require.NoError(t, p.Drain("a:1"))
	assert.EqualValues(t, 2, d.Conns()[0].Closes.Load()+d.Conns()[1].Closes.Load(), "idle conns closed at once")
	s := destination(p.Stats(), "a:1")
	assert.EqualValues(t, 1, s.InUse, "the conn in use still counts")
	assert.EqualValues(t, 0, s.Idle)

	// A later Get starts afresh: it dials rather than waiting for or
	// reusing anything of the drained state.
	fresh := checkout(t, p, "a:1", 1)[0]
	assert.Equal(t, "fake-5", id(fresh))

	giveBack(t, conns[2]) // returned after the drain: closed, not pooled
	assert.EqualValues(t, 1, d.Conns()[2].Closes.Load())
	giveBack(t, fresh)
	s = destination(p.Stats(), "a:1")
	assert.EqualValues(t, 1, s.Total, "only the fresh conn remains")
	assert.EqualValues(t, 1, s.Idle)
	assert.EqualValues(t, 3, p.Stats().ClosedDrained)

	// The other address is untouched.
	assert.EqualValues(t, 1, destination(p.Stats(), "b:1").Idle)
	assert.NoError(t, p.Drain("unknown:1"))
}

func TestDrainMovesWaitersToAFreshStart(t *testing.T) {
	var d testnet.FakeDialer
	p := newPool(t, d.Dial, 8, 0, connpool.WithMaxActive(1))

	held := checkout(t, p, "a:1", 1)[0]
	got := goGet(func() (net.Conn, error) { return p.Get("a:1") })
	waitForWaiters(t, p, "a:1", 1)
	require.NoError(t, p.Drain("a:1"))
	r := <-got
	require.NoError(t, r.err, "the waiter dials on the fresh address")
	assert.NotEqual(t, id(held), id(r.c))
	giveBack(t, held, r.c)
	assert.EqualValues(t, 1, d.Open(), "the drained conn was closed on return")
}

func TestDrainedAddressIsForgottenOnceEmpty(t *testing.T) {
	var d testnet.FakeDialer
	p := newPool(t, d.Dial, 8, 0)

	inUse := checkout(t, p, "a:1", 1)[0]
	require.NoError(t, p.Drain("a:1"))
	assert.Len(t, p.Stats().Destinations, 1, "still there while a conn is in use")
	giveBack(t, inUse)
	assert.Empty(t, p.Stats().Destinations, "forgotten once empty")
	assert.EqualValues(t, 1, p.Stats().Dials, "its counts stay in the pool-wide totals")
	assert.EqualValues(t, 1, p.Stats().ClosedDrained)
}

func TestDrainOnAClosedPool(t *testing.T) {
	var d testnet.FakeDialer
	p, err := connpool.New(d.Dial, 8, 0)
	require.NoError(t, err)
	require.NoError(t, p.Close())
	assert.ErrorIs(t, p.Drain("a:1"), connpool.ErrClosed)
}
