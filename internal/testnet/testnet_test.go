package testnet_test

import (
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/seed73091bf1/connpool/internal/testnet"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		require.False(t, time.Now().After(deadline), "condition never held")
		time.Sleep(2 * time.Millisecond)
	}
}

func TestEchoServerEchoesAndCountsSessions(t *testing.T) {
	srv := testnet.StartEcho(t)
	c, err := net.Dial("tcp", srv.Addr())
	require.NoError(t, err)
	require.NoError(t, testnet.RoundTrip(c, "hello"))
	assert.EqualValues(t, 1, srv.Open())
	assert.EqualValues(t, 1, srv.Accepted())
	require.NoError(t, c.Close())
	waitFor(t, func() bool { return srv.Open() == 0 })
}

func TestFlakyEchoServerDropsSessionsAfterReplying(t *testing.T) {
	srv := testnet.StartFlakyEcho(t, 2)
	c, err := net.Dial("tcp", srv.Addr())
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, testnet.RoundTrip(c, "one"))
	require.NoError(t, testnet.RoundTrip(c, "two"), "the reply comes before the drop")
	assert.Error(t, testnet.RoundTrip(c, "three"), "the session was dropped")
}

func TestEchoServerCloseEndsSessions(t *testing.T) {
	srv, err := testnet.ListenEcho()
	require.NoError(t, err)
	c, err := net.Dial("tcp", srv.Addr())
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, testnet.RoundTrip(c, "x"))
	srv.Close()
	assert.Error(t, testnet.RoundTrip(c, "y"))
	assert.EqualValues(t, 0, srv.Open())
}

func TestFakeConnCountsCalls(t *testing.T) {
	var d testnet.FakeDialer
	closed := 0
	d.OnClose = func(*testnet.FakeConn) { closed++ }
	c, err := d.Dial("a:1")
	require.NoError(t, err)
	fc := c.(*testnet.FakeConn)
	_, err = c.Read(make([]byte, 4))
	require.NoError(t, err)
	_, err = c.Write([]byte("x"))
	require.NoError(t, err)
	require.NoError(t, c.SetDeadline(time.Time{}))
	assert.EqualValues(t, 1, fc.Reads.Load())
	assert.EqualValues(t, 1, fc.Writes.Load())
	assert.EqualValues(t, 1, fc.Deadlines.Load())
	assert.Equal(t, "fake-1", c.LocalAddr().String())
	assert.EqualValues(t, 1, d.Open())

	require.NoError(t, c.Close())
	assert.Error(t, c.Close())
	assert.Equal(t, 1, closed)
	assert.EqualValues(t, 0, d.Open())
	_, err = c.Read(make([]byte, 1))
	assert.Error(t, err)
}
