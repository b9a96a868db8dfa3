package connpool_test

import (
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/internal/testnet"
)

func TestNetConnGivesTheDialedConnWhileHeld(t *testing.T) {
	srv := testnet.StartEcho(t)
	p := newPool(t, tcpDial, 1, time.Minute)
	c, err := p.Get(srv.Addr())
	require.NoError(t, err)
	conn := c.(*connpool.Conn)

	tcp, ok := conn.NetConn().(*net.TCPConn)
	require.True(t, ok, "the dialed *net.TCPConn")
	assert.NoError(t, tcp.SetNoDelay(false))
	assert.NoError(t, tcp.SetKeepAlive(true))
	assert.Equal(t, conn.LocalAddr(), tcp.LocalAddr())

	require.NoError(t, c.Close())
	assert.Nil(t, conn.NetConn(), "an ended handle gives nothing")
	c, err = p.Get(srv.Addr())
	require.NoError(t, err)
	assert.Same(t, tcp, c.(*connpool.Conn).NetConn(), "the same socket, under a new handle")
	require.NoError(t, c.(*connpool.Conn).Release())
	assert.Nil(t, c.(*connpool.Conn).NetConn())
}
