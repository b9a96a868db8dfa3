// Package testnet holds loopback servers and fake conns shared by the tests,
// benchmarks and examples of connpool.
package testnet

import (
	"bufio"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// EchoServer is a line echo server on 127.0.0.1 with a port chosen by the
// kernel. It counts the sessions it has open, so tests can compare them with
// a pool's counts.
type EchoServer struct {
	addr string

	// Faults, set at start.
	idleClose time.Duration // close a session idle this long; 0 never
	silent    bool          // read requests, never answer
	delay     time.Duration // wait this long before each reply

	open     atomic.Int64
	maxOpen  atomic.Int64
	accepted atomic.Int64
	// dropEvery, if > 0, makes the server close a session after every
	// dropEvery-th reply, without warning, as a server's idle or request
	// limit would.
	dropEvery int64
	replies   atomic.Int64

	mu      sync.Mutex // protects the fields below
	ln      net.Listener
	stopped bool // Close ran; sessions accepted since are closed at once
	conns   map[net.Conn]struct{}
	wg      sync.WaitGroup
}

// Faults configures the misbehaviour of a server from StartFault.
type Faults struct {
	// IdleClose closes a session that has sent nothing for this long, as a
	// server's idle or wait_timeout does. 0 means never.
	IdleClose time.Duration
	// Silent makes the server accept and read but never answer.
	Silent bool
	// Delay makes every reply wait this long, like a slow backend.
	Delay time.Duration
}

// StartFault starts an echo server with faults and stops it when the test
// ends. Its methods inject more: ResetAll, InjectAll, Refuse and Restart.
func StartFault(tb testing.TB, f Faults) *EchoServer {
	tb.Helper()
	s, err := ListenFault("127.0.0.1:0", f)
	if err != nil {
		tb.Fatalf("testnet: %v", err)
	}
	tb.Cleanup(s.Close)
	return s
}

// ListenFault starts an echo server with faults on address, for code
// without a testing.TB such as the demo. The caller must Close it.
func ListenFault(address string, f Faults) (*EchoServer, error) {
	s := &EchoServer{idleClose: f.IdleClose, silent: f.Silent, delay: f.Delay, conns: make(map[net.Conn]struct{})}
	if err := s.listen(address); err != nil {
		return nil, err
	}
	return s, nil
}

// StartEcho starts an echo server and stops it, with all its sessions, when
// the test ends.
func StartEcho(tb testing.TB) *EchoServer {
	tb.Helper()
	return startEcho(tb, 0)
}

// ListenEcho starts an echo server for code without a testing.TB, such as
// examples. The caller must Close it.
func ListenEcho() (*EchoServer, error) {
	return listen("127.0.0.1:0", 0)
}

// ListenEchoOn starts an echo server on address, which a stopped server
// used, to play a backend restart. The caller must Close it.
func ListenEchoOn(address string) (*EchoServer, error) {
	return listen(address, 0)
}

// StartFlakyEcho is like StartEcho, but the server closes a session right
// after every dropEvery-th reply it sends (across all sessions).
func StartFlakyEcho(tb testing.TB, dropEvery int) *EchoServer {
	tb.Helper()
	return startEcho(tb, int64(dropEvery))
}

func startEcho(tb testing.TB, dropEvery int64) *EchoServer {
	tb.Helper()
	s, err := listen("127.0.0.1:0", dropEvery)
	if err != nil {
		tb.Fatalf("testnet: %v", err)
	}
	tb.Cleanup(s.Close)
	return s
}

func listen(address string, dropEvery int64) (*EchoServer, error) {
	s := &EchoServer{dropEvery: dropEvery, conns: make(map[net.Conn]struct{})}
	if err := s.listen(address); err != nil {
		return nil, err
	}
	return s, nil
}

// listen starts accepting on address and remembers the address it got.
func (s *EchoServer) listen(address string) error {
	ln, err := net.Listen("tcp", address)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.ln = ln
	s.stopped = false
	s.addr = ln.Addr().String()
	s.mu.Unlock()
	s.wg.Add(1)
	go s.serve(ln)
	return nil
}

// Addr returns the server's address, host:port. It stays the same across
// Refuse and Restart.
func (s *EchoServer) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// ResetAll aborts every open session with a TCP reset (SO_LINGER 0).
func (s *EchoServer) ResetAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		c.Close()
	}
}

// CloseAll ends every open session with an orderly close (a FIN), as a
// server's idle timeout does, and keeps accepting new ones. Unlike
// Faults.IdleClose, the caller picks the moment: a test calls it while the
// sessions' clients sit between requests, so that no request can meet a
// close already under way. It returns once every session's socket is
// closed; on loopback, the peers have the FIN by then.
func (s *EchoServer) CloseAll() {
	s.mu.Lock()
	conns := make([]net.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		// Close returns only once the socket is closed, after the
		// session's blocked read has let go of it. It fails only for a
		// session ending on its own meanwhile, which needs nothing more.
		c.Close()
	}
}

// InjectAll writes msg, unasked, to every open session.
func (s *EchoServer) InjectAll(msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.Write([]byte(msg))
	}
}

// Refuse stops the server, so that dials to its address are refused, and
// closes its sessions. Restart brings it back on the same address.
func (s *EchoServer) Refuse() { s.Close() }

// Restart stops the server if it runs, closing its sessions, and starts it
// again on the same address, as a backend restart does.
func (s *EchoServer) Restart() error {
	s.Close()
	return s.listen(s.Addr())
}

// Open returns the number of sessions the server has open now.
func (s *EchoServer) Open() int64 { return s.open.Load() }

// MaxOpen returns the most sessions the server has had open at once.
func (s *EchoServer) MaxOpen() int64 { return s.maxOpen.Load() }

// Accepted returns the number of sessions the server has accepted so far.
func (s *EchoServer) Accepted() int64 { return s.accepted.Load() }

// Close stops the server and closes its sessions, and waits for its
// goroutines to end. It may be called more than once.
func (s *EchoServer) Close() {
	s.mu.Lock()
	s.ln.Close()
	s.stopped = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *EchoServer) serve(ln net.Listener) {
	defer s.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.stopped {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.accepted.Add(1)
		raiseTo(&s.maxOpen, s.open.Add(1))
		s.wg.Add(1)
		go s.session(c)
	}
}

func (s *EchoServer) session(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
		s.open.Add(-1)
	}()
	r := bufio.NewReader(c)
	for {
		if s.idleClose > 0 {
			c.SetReadDeadline(time.Now().Add(s.idleClose))
		}
		line, err := r.ReadBytes('\n')
		if err != nil {
			return
		}
		if s.silent {
			continue
		}
		if s.delay > 0 {
			time.Sleep(s.delay)
		}
		if _, err := c.Write(line); err != nil {
			return
		}
		if s.dropEvery > 0 && s.replies.Add(1)%s.dropEvery == 0 {
			return
		}
	}
}

// RoundTrip writes msg and a newline to c and reads the echoed line back. It
// returns an error if the echo differs.
func RoundTrip(c net.Conn, msg string) error {
	if _, err := c.Write([]byte(msg + "\n")); err != nil {
		return err
	}
	buf := make([]byte, len(msg)+1)
	n := 0
	for n < len(buf) {
		m, err := c.Read(buf[n:])
		n += m
		if err != nil {
			return err
		}
	}
	if string(buf[:len(msg)]) != msg {
		return errors.New("testnet: echo mismatch")
	}
	return nil
}

// raiseTo raises m to v if v is larger.
func raiseTo(m *atomic.Int64, v int64) {
	for {
		old := m.Load()
		if v <= old || m.CompareAndSwap(old, v) {
			return
		}
	}
}
