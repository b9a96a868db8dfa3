package connpool_test

import (
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

func TestDrainOnAClosedPool(t *testing.T) {
	var d testnet.FakeDialer
	p, err := connpool.New(d.Dial, 8, 0)
	require.NoError(t, err)
	require.NoError(t, p.Close())
	assert.ErrorIs(t, p.Drain("a:1"), connpool.ErrClosed)
}
