package connpool_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/internal/testnet"
)

// The tests in this file check that Get hands out only live conns, against
// servers that close, reset, restart, chatter or hang. None of them retries
// in the caller: every request must work on the conn Get returned.

// roundTrips runs requests cycles of Get, one round trip and Close from
// clients goroutines, and fails the test on any error.
func roundTrips(t *testing.T, p *connpool.Pool, addr string, clients, requests int) {
	t.Helper()
	addrs := make([]string, clients)
	for i := range addrs {
		addrs[i] = addr
	}
	roundTripsTo(t, p, addrs, requests, nil)
}

// roundTripsTo is roundTrips with one client per address in addrs. If
// before is not nil, client cl calls before(cl, i) ahead of its request i,
// while it holds no conn.
func roundTripsTo(t *testing.T, p *connpool.Pool, addrs []string, requests int, before func(cl, i int)) {
	t.Helper()
	var wg sync.WaitGroup
	for cl, addr := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range requests {
				if before != nil {
					before(cl, i)
				}
				c, err := p.Get(addr)
				if !assert.NoError(t, err) {
					return
				}
				if !assert.NoError(t, testnet.RoundTrip(c, fmt.Sprintf("c%d-%d", cl, i)), "request %d of client %d", i, cl) {
					c.(*connpool.Conn).Release()
					return
				}
				assert.NoError(t, c.Close())
			}
		}()
	}
	wg.Wait()
}

// Regression: go-redis #25 and go-sql-driver/mysql #1120 handed out conns
// the server had closed for idleness, failing the next request with EOF.
func TestServerIdleCloseNeverFailsARequest(t *testing.T) {
	// Each backend has one client, so the pool holds one conn to it, idle
	// between that client's requests. The backend plays its idle timeout
	// with CloseAll at moments the client picks, while the conn sits in the
	// pool; on loopback the FIN has arrived when CloseAll returns. A timer
	// would instead let the close race a request already being sent, which
	// no check can win (see the README), and would make the test depend on
	// how fast a busy machine schedules it.
	const clients, requests = 4, 250
	servers := make([]*testnet.EchoServer, clients)
	addrs := make([]string, clients)
	closeBefore := make([][]bool, clients) // the server closes ahead of request i
	closes := make([]int64, clients)
	r := mrand.New(mrand.NewPCG(1, 7))
	for cl := range clients {
		servers[cl] = testnet.StartFault(t, testnet.Faults{})
		addrs[cl] = servers[cl].Addr()
		closeBefore[cl] = make([]bool, requests)
		for i := 1; i < requests; i++ { // ahead of request 0 there is no conn yet
			if r.IntN(10) == 0 {
				closeBefore[cl][i] = true
				closes[cl]++
			}
		}
	}
	p := newPool(t, tcpDial, 8, 0)
	roundTripsTo(t, p, addrs, requests, func(cl, i int) {
		if closeBefore[cl][i] {
			servers[cl].CloseAll()
		}
	})
	s := p.Stats()
	for cl, addr := range addrs {
		assert.Equal(t, closes[cl], destination(s, addr).ClosedDeadAtCheckout,
			"client %d: each conn the server closed is caught at checkout", cl)
	}
	t.Logf("%d requests: %d dials, %d reuses, %d dead conns caught", clients*requests, s.Dials, s.Reuses, s.ClosedDeadAtCheckout)
}

func TestServerResetsNeverFailARequest(t *testing.T) {
	srv := testnet.StartFault(t, testnet.Faults{})
	p := newPool(t, tcpDial, 8, 0)

	for round := range 10 {
		roundTrips(t, p, srv.Addr(), 4, 25)
		// Every conn is idle now; the server aborts them all.
		srv.ResetAll()
		eventually(t, func() bool { return srv.Open() == 0 }, "round %d: sessions survive the reset", round)
	}
	assert.Positive(t, p.Stats().ClosedDeadAtCheckout)
}

func TestBackendRestartDiscardsEveryStaleConn(t *testing.T) {
	srv := testnet.StartFault(t, testnet.Faults{})
	p := newPool(t, tcpDial, 16, 0)
	require.NoError(t, p.Warm(context.Background(), srv.Addr(), 12))
	require.EqualValues(t, 12, destination(p.Stats(), srv.Addr()).Idle)

	require.NoError(t, srv.Restart())
	roundTrips(t, p, srv.Addr(), 4, 50)
	s := destination(p.Stats(), srv.Addr())
	assert.EqualValues(t, 12, s.ClosedDeadAtCheckout, "each stale conn is found dead exactly once")
	assert.Equal(t, s.Idle, srv.Open())
}

func TestUnsolicitedBytesKeepAConnOutOfService(t *testing.T) {
	srv := testnet.StartFault(t, testnet.Faults{})
	p := newPool(t, tcpDial, 8, 0)

	conns := checkout(t, p, srv.Addr(), 3)
	for _, c := range conns {
		require.NoError(t, testnet.RoundTrip(c, "warm"))
	}
	giveBack(t, conns...)
	srv.InjectAll("late reply\n") // on loopback, written means arrived

	// Every conn now has a stray line waiting; none may be handed out.
	for i := range 5 {
		c, err := p.Get(srv.Addr())
		require.NoError(t, err)
		assert.False(t, c.(*connpool.Conn).Reused(), "Get %d handed out a conn with unread bytes", i)
		require.NoError(t, testnet.RoundTrip(c, fmt.Sprintf("req %d", i)))
		defer c.Close()
	}
	assert.EqualValues(t, 3, p.Stats().ClosedDeadAtCheckout)
}

func TestHangingDialReturnsAtTheDeadline(t *testing.T) {
	p, err := connpool.New(nil, 8, 0, connpool.WithDialContext(testnet.DelayDial(-1)))
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	c, err := p.GetContext(ctx, "127.0.0.1:9") // never dialed: the dial hangs first
	assert.Nil(t, c)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	// Close cancels the dial still hanging; goleak checks that its goroutine
	// ends.
	require.NoError(t, p.Close())
	eventually(t, func() bool { return destination(p.Stats(), "127.0.0.1:9").DialErrors == 1 },
		"the hanging dial did not end with the pool")
}

func TestSilentServerIsNotMistakenForADeadOne(t *testing.T) {
	srv := testnet.StartFault(t, testnet.Faults{Silent: true})
	p := newPool(t, tcpDial, 8, 0)
	c := checkout(t, p, srv.Addr(), 1)[0]
	giveBack(t, c)
	c2 := checkout(t, p, srv.Addr(), 1)[0]
	assert.True(t, c2.(*connpool.Conn).Reused(), "a quiet live conn passes the check")
	require.NoError(t, c2.SetReadDeadline(time.Now().Add(20*time.Millisecond)))
	_, err := c2.Write([]byte("ping\n"))
	require.NoError(t, err)
	_, err = c2.Read(make([]byte, 8))
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	assert.True(t, ne.Timeout(), "the silent server never answers")
	require.NoError(t, c2.(*connpool.Conn).Release())
}

func TestReusedAndIdleTimeTellTheHolderWhatItGot(t *testing.T) {
	srv := testnet.StartEcho(t)
	p := newPool(t, tcpDial, 8, 0)

	c := checkout(t, p, srv.Addr(), 1)[0]
	assert.False(t, c.(*connpool.Conn).Reused())
	assert.Zero(t, c.(*connpool.Conn).IdleTime())
	start := time.Now()
	giveBack(t, c)

	c = checkout(t, p, srv.Addr(), 1)[0]
	took := time.Since(start)
	pc := c.(*connpool.Conn)
	assert.True(t, pc.Reused())
	// A pool with no time limit measures idle time to within a second
	// (the tick of its coarse clock); clock_internal_test.go checks the
	// bounds exactly.
	assert.LessOrEqual(t, pc.IdleTime(), took+time.Second)
	giveBack(t, c)
}

func TestValidatorRejectsConnsAndIsCounted(t *testing.T) {
	var d testnet.FakeDialer
	var mu sync.Mutex
	rejected := map[string]bool{}
	validate := func(nc net.Conn) error {
		mu.Lock()
		defer mu.Unlock()
		if rejected[nc.LocalAddr().String()] {
			return errors.New("ping failed")
		}
		return nil
	}
	p := newPool(t, d.Dial, 8, 0, connpool.WithValidator(validate, 0))

	conns := checkout(t, p, "a:1", 2)
	giveBack(t, conns...)
	mu.Lock()
	rejected[id(conns[1])] = true // the newest, which Get tries first
	mu.Unlock()

	c := checkout(t, p, "a:1", 1)[0]
	assert.Equal(t, id(conns[0]), id(c), "the rejected conn is skipped")
	s := destination(p.Stats(), "a:1")
	assert.EqualValues(t, 1, s.ClosedValidatorFailed)
	assert.EqualValues(t, 1, s.Total)
	eventually(t, func() bool { return d.Conns()[1].Closes.Load() == 1 }, "the rejected conn is closed, in the background")
	giveBack(t, c)
}

func TestValidatorRunsOnlyPastItsMinimumIdleTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var d testnet.FakeDialer
		calls := 0
		validate := func(net.Conn) error { calls++; return nil }
		p, err := connpool.New(d.Dial, 8, 0, connpool.WithValidator(validate, time.Second))
		require.NoError(t, err)
		defer p.Close()

		giveBack(t, checkout(t, p, "a:1", 1)...)
		time.Sleep(500 * time.Millisecond)
		giveBack(t, checkout(t, p, "a:1", 1)...)
		assert.Equal(t, 0, calls, "idle for half a second: not validated")
		time.Sleep(time.Second)
		giveBack(t, checkout(t, p, "a:1", 1)...)
		assert.Equal(t, 1, calls, "idle for a second: validated")
	})
}

func TestWithoutLivenessCheckHandsOutDeadConns(t *testing.T) {
	srv := testnet.StartFault(t, testnet.Faults{})
	p := newPool(t, tcpDial, 8, 0, connpool.WithoutLivenessCheck())
	first := checkout(t, p, srv.Addr(), 1)[0]
	require.NoError(t, testnet.RoundTrip(first, "x")) // the server has the session now
	giveBack(t, first)
	srv.ResetAll()
	eventually(t, func() bool { return srv.Open() == 0 }, "the reset did not happen")
	c := checkout(t, p, srv.Addr(), 1)[0]
	assert.True(t, c.(*connpool.Conn).Reused(), "with the check off, the dead conn is handed out")
	assert.Error(t, testnet.RoundTrip(c, "x"))
	require.NoError(t, c.(*connpool.Conn).Release())
}

// tlsPair returns a server config with a certificate made for this test and
// a client config that trusts it.
func tlsPair(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	server = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		MinVersion:   tls.VersionTLS13,
	}
	client = &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13}
	return server, client
}

// startTLSEcho runs a TLS 1.3 line echo server. TLS 1.3 servers send session
// tickets after the handshake, so a client that has not read yet has bytes
// waiting on a healthy conn. closeAll ends every session with close_notify.
func startTLSEcho(t *testing.T, cfg *tls.Config) (addr string, closeAll func()) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	require.NoError(t, err)
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				buf := make([]byte, 256)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
			}()
		}
	}()
	closeAll = func() {
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		conns = nil
		mu.Unlock()
	}
	t.Cleanup(func() {
		ln.Close()
		closeAll()
		wg.Wait()
	})
	return ln.Addr().String(), closeAll
}

func TestTLSSessionTicketsDoNotMakeHealthyConnsLookDead(t *testing.T) {
	serverCfg, clientCfg := tlsPair(t)
	addr, closeAll := startTLSEcho(t, serverCfg)
	dial := func(ctx context.Context, address string) (net.Conn, error) {
		d := tls.Dialer{Config: clientCfg}
		c, err := d.DialContext(ctx, "tcp", address)
		if err != nil {
			return nil, err
		}
		return c, nil
	}
	p := newPool(t, nil, 8, 0, connpool.WithDialContext(dial))

	// Return a fresh conn without reading: its session tickets stay unread.
	giveBack(t, checkout(t, p, addr, 1)...)
	c := checkout(t, p, addr, 1)[0]
	assert.True(t, c.(*connpool.Conn).Reused(), "a healthy TLS conn with unread tickets must be reused")
	require.NoError(t, testnet.RoundTrip(c, "over tls"))
	giveBack(t, c)
	assert.EqualValues(t, 0, p.Stats().ClosedDeadAtCheckout)

	// The server closes its sessions, sending close_notify and then its FIN:
	// bytes wait on the conn, yet it is dead.
	closeAll()
	c2 := checkout(t, p, addr, 1)[0]
	assert.False(t, c2.(*connpool.Conn).Reused(), "a closed TLS conn was handed out")
	require.NoError(t, testnet.RoundTrip(c2, "fresh"))
	giveBack(t, c2)
	assert.EqualValues(t, 1, p.Stats().ClosedDeadAtCheckout)
}
