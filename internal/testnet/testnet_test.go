package testnet_test

import (
	"context"
	"io"
	"net"
	"syscall"
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

func dialEcho(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	require.NoError(t, testnet.RoundTrip(c, "hello")) // the server has the session now
	return c
}

func TestFaultIdleCloseEndsQuietSessions(t *testing.T) {
	srv := testnet.StartFault(t, testnet.Faults{IdleClose: 10 * time.Millisecond})
	c := dialEcho(t, srv.Addr())
	_, err := c.Read(make([]byte, 1))
	assert.Error(t, err, "the server closed the quiet session")
}

func TestFaultResetAllAbortsSessions(t *testing.T) {
	srv := testnet.StartFault(t, testnet.Faults{})
	c := dialEcho(t, srv.Addr())
	srv.ResetAll()
	_, err := c.Read(make([]byte, 1))
	assert.ErrorIs(t, err, syscall.ECONNRESET)
}

func TestFaultCloseAllEndsSessionsAndKeepsServing(t *testing.T) {
	srv := testnet.StartFault(t, testnet.Faults{})
	conns := []net.Conn{dialEcho(t, srv.Addr()), dialEcho(t, srv.Addr())}
	srv.CloseAll()
	for _, c := range conns {
		require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
		_, err := c.Read(make([]byte, 1))
		assert.ErrorIs(t, err, io.EOF, "an orderly close, not a reset or a timeout")
	}
	waitFor(t, func() bool { return srv.Open() == 0 })
	dialEcho(t, srv.Addr())
	assert.EqualValues(t, 1, srv.Open(), "the server still accepts")
	assert.EqualValues(t, 3, srv.Accepted())
}

func TestFaultInjectAllWritesUnasked(t *testing.T) {
	srv := testnet.StartFault(t, testnet.Faults{})
	c := dialEcho(t, srv.Addr())
	srv.InjectAll("junk\n")
	buf := make([]byte, 5)
	_, err := io.ReadFull(c, buf)
	require.NoError(t, err)
	assert.Equal(t, "junk\n", string(buf))
}

func TestFaultSilentNeverAnswers(t *testing.T) {
	srv := testnet.StartFault(t, testnet.Faults{Silent: true})
	c, err := net.Dial("tcp", srv.Addr())
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(20*time.Millisecond)))
	_, err = c.Write([]byte("ping\n"))
	require.NoError(t, err)
	_, err = c.Read(make([]byte, 1))
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	assert.True(t, ne.Timeout())
}

func TestFaultRefuseAndRestartKeepTheAddress(t *testing.T) {
	srv := testnet.StartFault(t, testnet.Faults{})
	addr := srv.Addr()
	old := dialEcho(t, addr)
	srv.Refuse()
	_, err := net.Dial("tcp", addr)
	assert.ErrorIs(t, err, syscall.ECONNREFUSED)
	require.NoError(t, srv.Restart())
	assert.Equal(t, addr, srv.Addr())
	dialEcho(t, addr)
	assert.Error(t, testnet.RoundTrip(old, "x"), "sessions from before the restart are gone")
}

func TestDelayDialWaitsOrHangs(t *testing.T) {
	srv := testnet.StartEcho(t)
	start := time.Now()
	c, err := testnet.DelayDial(20*time.Millisecond)(context.Background(), srv.Addr())
	require.NoError(t, err)
	c.Close()
	assert.GreaterOrEqual(t, time.Since(start), 20*time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	_, err = testnet.DelayDial(-1)(ctx, srv.Addr())
	assert.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestCountingDialerTracksLiveConns(t *testing.T) {
	d := testnet.NewCountingDialer()
	a, err := d.Dial("a:1")
	require.NoError(t, err)
	b, err := d.Dial("a:1")
	require.NoError(t, err)
	assert.EqualValues(t, 2, d.Live())
	require.NoError(t, a.Close())
	require.NoError(t, b.Close())
	assert.EqualValues(t, 0, d.Live())
	assert.EqualValues(t, 2, d.MaxLive())
	d.Refuse.Store(true)
	_, err = d.Dial("a:1")
	assert.ErrorIs(t, err, testnet.ErrRefused)
	assert.EqualValues(t, 0, d.Live())
}
