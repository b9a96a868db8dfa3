package testnet_test

import (
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool/internal/testnet"
)

// dialScripted dials srv and closes the conn when the test ends. Reads
// and writes time out after 10 s, so that a step that never comes fails
// the test instead of hanging it.
func dialScripted(t testing.TB, srv *testnet.ScriptedServer) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", srv.Addr())
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	return c
}

func TestScriptedServerFollowsEachStep(t *testing.T) {
	tests := []struct {
		name  string
		steps []testnet.Step
		// client runs against a conn following steps and checks what it
		// sees.
		client func(t *testing.T, c net.Conn)
	}{
		{
			name:  "EchoThenHangup",
			steps: []testnet.Step{testnet.Echo, testnet.Hangup},
			client: func(t *testing.T, c net.Conn) {
				require.NoError(t, testnet.RoundTrip(c, "ping"))
				_, err := c.Read(make([]byte, 1))
				assert.ErrorIs(t, err, io.EOF)
			},
		},
		{
			name:  "HangupOnAccept",
			steps: []testnet.Step{testnet.Hangup},
			client: func(t *testing.T, c net.Conn) {
				_, err := c.Read(make([]byte, 1))
				assert.ErrorIs(t, err, io.EOF)
			},
		},
		{
			name:  "SwallowThenHangup",
			steps: []testnet.Step{testnet.Swallow, testnet.Hangup},
			client: func(t *testing.T, c net.Conn) {
				_, err := c.Write([]byte("ping\n"))
				require.NoError(t, err)
				n, err := c.Read(make([]byte, 1))
				assert.Zero(t, n, "no byte of a response")
				assert.ErrorIs(t, err, io.EOF)
			},
		},
		{
			name:  "SwallowThenReset",
			steps: []testnet.Step{testnet.Swallow, testnet.Reset},
			client: func(t *testing.T, c net.Conn) {
				_, err := c.Write([]byte("ping\n"))
				require.NoError(t, err)
				n, err := c.Read(make([]byte, 1))
				assert.Zero(t, n, "no byte of a response")
				assert.ErrorIs(t, err, syscall.ECONNRESET)
			},
		},
		{
			name:  "EchoHalfThenHangup",
			steps: []testnet.Step{testnet.EchoHalf, testnet.Hangup},
			client: func(t *testing.T, c net.Conn) {
				_, err := c.Write([]byte("abcd\n"))
				require.NoError(t, err)
				got, err := io.ReadAll(c)
				require.NoError(t, err, "ReadAll stops at the FIN")
				assert.Equal(t, "ab", string(got))
			},
		},
		{
			name:  "StepsRunOutThenEcho",
			steps: []testnet.Step{testnet.Swallow},
			client: func(t *testing.T, c net.Conn) {
				_, err := c.Write([]byte("swallowed\n"))
				require.NoError(t, err)
				require.NoError(t, testnet.RoundTrip(c, "one"))
				require.NoError(t, testnet.RoundTrip(c, "two"))
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := testnet.StartScripted(t, testnet.Always(tt.steps...))
			tt.client(t, dialScripted(t, srv))
		})
	}
}

// The retry tests of connpool rely on this: once the server has ended a
// session with Reset, the client's next write fails at once, having sent
// nothing, and not only its next read.
func TestScriptedServerResetWhileIdleFailsTheNextWrite(t *testing.T) {
	srv := testnet.StartScripted(t, testnet.Always(testnet.Echo, testnet.Reset))
	c := dialScripted(t, srv)
	require.NoError(t, testnet.RoundTrip(c, "ping"), "the echo comes before the reset")
	waitFor(t, func() bool { return srv.Ended() == 1 })
	n, err := c.Write([]byte("ping\n"))
	assert.Zero(t, n)
	assert.ErrorIs(t, err, syscall.ECONNRESET)
}

func TestScriptedServerSessionsScriptEachConnThenEcho(t *testing.T) {
	srv := testnet.StartScripted(t, testnet.Sessions(
		[]testnet.Step{testnet.Hangup},
		[]testnet.Step{testnet.Echo, testnet.Hangup},
	))
	first := dialScripted(t, srv)
	_, err := first.Read(make([]byte, 1))
	require.ErrorIs(t, err, io.EOF, "the first conn hangs up at once")

	second := dialScripted(t, srv)
	require.NoError(t, testnet.RoundTrip(second, "a"))
	_, err = second.Read(make([]byte, 1))
	require.ErrorIs(t, err, io.EOF, "the second conn hangs up after one echo")

	third := dialScripted(t, srv)
	for _, msg := range []string{"x", "y", "z"} {
		require.NoError(t, testnet.RoundTrip(third, msg), "later conns echo")
	}
	assert.EqualValues(t, 3, srv.Accepted())
	assert.EqualValues(t, 4, srv.Requests())
	// The client may see the hangup before the server counts it.
	waitFor(t, func() bool { return srv.Ended() == 2 })
}

func TestScriptedServerCloseEndsOpenSessions(t *testing.T) {
	srv := testnet.StartScripted(t, testnet.Always())
	c := dialScripted(t, srv)
	require.NoError(t, testnet.RoundTrip(c, "ping"))
	srv.Close()
	assert.EqualValues(t, 1, srv.Ended(), "Close waited for the session")
	assert.Error(t, testnet.RoundTrip(c, "ping"))
	srv.Close() // a second Close does nothing more
	assert.EqualValues(t, 1, srv.Ended())
	// No dial checks that the listener is closed: its port may already be
	// another test process's.
}

func TestDeadAddrRefusesDialsAndCannotBeTaken(t *testing.T) {
	addr := testnet.DeadAddr(t)
	for range 3 {
		_, err := net.Dial("tcp", addr)
		require.ErrorIs(t, err, syscall.ECONNREFUSED)
	}
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		ln.Close()
	}
	assert.ErrorIs(t, err, syscall.EADDRINUSE, "no listener can take the port")
}
