//go:build unix && !aix

package connpool

import (
	"crypto/tls"
	"errors"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool/internal/testnet"
)

// loopbackConn returns a TCP conn to an echo server, closed when the test
// ends.
func loopbackConn(tb testing.TB) *net.TCPConn {
	tb.Helper()
	srv := testnet.StartEcho(tb)
	c, err := net.Dial("tcp", srv.Addr())
	require.NoError(tb, err)
	tb.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

func TestProbeAppliesOnlyToConnsWithADescriptor(t *testing.T) {
	var d testnet.FakeDialer
	fake, _ := d.Dial("a:1")
	assert.False(t, newProbe(fake).applies(), "a fake conn has no descriptor")
	type wrapped struct{ *net.TCPConn }
	tcp := loopbackConn(t)
	assert.True(t, newProbe(tcp).applies())
	assert.True(t, newProbe(wrapped{tcp}).applies(), "a wrapper embedding a TCP conn is checked")
	tlsConn := tls.Client(tcp, &tls.Config{InsecureSkipVerify: true})
	assert.Equal(t, probe{fd: newProbe(tcp).fd, kind: probeFD, tls: true}, newProbe(tlsConn), "a TLS conn is checked on its socket")
	assert.Equal(t, probe{fd: newProbe(tcp).fd, kind: probeFD, tls: true}, newProbe(netConnWrapper{tcp}),
		"any wrapper with a NetConn method is checked on its socket, as TLS is")
	assert.False(t, newProbe(netConnWrapper{nil}).applies(), "a wrapper with no conn under it")
}

// netConnWrapper is a net.Conn over another that tells it with NetConn, as
// *tls.Conn does, and is no syscall.Conn itself.
type netConnWrapper struct{ nc net.Conn }

func (w netConnWrapper) NetConn() net.Conn                  { return w.nc }
func (w netConnWrapper) Read(p []byte) (int, error)         { return w.nc.Read(p) }
func (w netConnWrapper) Write(p []byte) (int, error)        { return w.nc.Write(p) }
func (w netConnWrapper) Close() error                       { return w.nc.Close() }
func (w netConnWrapper) LocalAddr() net.Addr                { return w.nc.LocalAddr() }
func (w netConnWrapper) RemoteAddr() net.Addr               { return w.nc.RemoteAddr() }
func (w netConnWrapper) SetDeadline(t time.Time) error      { return w.nc.SetDeadline(t) }
func (w netConnWrapper) SetReadDeadline(t time.Time) error  { return w.nc.SetReadDeadline(t) }
func (w netConnWrapper) SetWriteDeadline(t time.Time) error { return w.nc.SetWriteDeadline(t) }

// TestPackageDoesNotLinkCryptoTLS: TLS conns are recognised by a method,
// so a program using the pool without TLS does not link crypto/tls.
func TestPackageDoesNotLinkCryptoTLS(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if errors.Is(err, exec.ErrNotFound) {
		t.Skip("no go tool")
	}
	require.NoError(t, err)
	assert.NotContains(t, strings.Fields(string(out)), "crypto/tls")
}

func TestProbeSeesDataAndClose(t *testing.T) {
	tcp := loopbackConn(t)
	pr := newProbe(tcp)
	require.True(t, pr.applies())
	assert.NoError(t, pr.check(tcp), "an idle live conn")

	_, err := tcp.Write([]byte("hi\n"))
	require.NoError(t, err)
	eventuallyErr(t, func() error { return pr.check(tcp) }, errUnexpectedData) // the echo comes back unread

	buf := make([]byte, 3)
	_, err = tcp.Read(buf)
	require.NoError(t, err)
	assert.NoError(t, pr.check(tcp), "nothing unread again")

	_, err = tcp.Write([]byte("hi\n"))
	require.NoError(t, err)
	eventuallyErr(t, func() error { return pr.check(tcp) }, errUnexpectedData) // the echo is back
	asTLS := pr
	asTLS.tls = true
	assert.NoError(t, asTLS.check(tcp), "on a TLS conn, unread bytes are fine")
}

// eventuallyErr polls f until it returns want, for up to 10 s.
func eventuallyErr(t *testing.T, f func() error, want error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for f() != want {
		if time.Now().After(deadline) {
			t.Fatalf("never got %v", want)
		}
		time.Sleep(time.Millisecond)
	}
}

// BenchmarkLivenessCheck compares the built-in check with the bare system
// call it makes, on an idle loopback TCP conn.
func BenchmarkLivenessCheck(b *testing.B) {
	tcp := loopbackConn(b)
	b.Run("BarePeek", func(b *testing.B) {
		rc, err := tcp.SyscallConn()
		require.NoError(b, err)
		var fd uintptr
		require.NoError(b, rc.Control(func(f uintptr) { fd = f }))
		buf := make([]byte, 1)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := peekFD(fd, buf); !wouldBlock(err) {
				b.Fatal(err)
			}
		}
	})
	b.Run("Check", func(b *testing.B) {
		pr := newProbe(tcp)
		b.ReportAllocs()
		for b.Loop() {
			if err := pr.check(tcp); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("NaiveRawConnRead", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			rc, _ := tcp.SyscallConn()
			var n int
			var perr error
			buf := make([]byte, 1)
			rc.Read(func(fd uintptr) bool {
				n, _, perr = syscall.Recvfrom(int(fd), buf, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
				return true
			})
			if !wouldBlock(perr) {
				b.Fatal(n, perr)
			}
		}
	})
}

// BenchmarkGetCloseTCP measures the hit path over a real loopback TCP conn,
// with the liveness check on (the default) and off.
func BenchmarkGetCloseTCP(b *testing.B) {
	srv := testnet.StartEcho(b)
	dial := func(address string) (net.Conn, error) { return net.Dial("tcp", address) }
	for _, tt := range []struct {
		name string
		opts []Option
	}{
		{"Check=on", nil},
		{"Check=off", []Option{WithoutLivenessCheck()}},
	} {
		b.Run(tt.name, func(b *testing.B) {
			p, err := New(dial, 4, 0, tt.opts...)
			require.NoError(b, err)
			defer p.Close()
			b.ReportAllocs()
			for b.Loop() {
				c, err := p.Get(srv.Addr())
				if err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
}

func TestProbeDetectsAClosedUnixSocket(t *testing.T) {
	ln, err := net.Listen("unix", t.TempDir()+"/s")
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	c, err := net.Dial("unix", ln.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	server := <-accepted
	require.NotNil(t, server)

	pr := newProbe(c)
	require.NotNil(t, pr, "a Unix socket is checked")
	assert.NoError(t, pr.check(c))
	require.NoError(t, server.Close())
	eventuallyErr(t, func() error { return pr.check(c) }, errPeerClosed)
}
