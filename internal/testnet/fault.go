package testnet

import (
	"bufio"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// Step is one thing a ScriptedServer does on a connection. Steps that read
// take one request, a line ending in '\n'.
type Step uint8

const (
	// Echo reads a request and writes it back whole.
	Echo Step = iota
	// Swallow reads a request and answers nothing, as a server that took
	// the request and died before replying.
	Swallow
	// EchoHalf reads a request and writes back its first half (len/2
	// bytes, so at least one for a request of two bytes or more, and never
	// the newline): a response cut off.
	EchoHalf
	// Hangup closes the connection in an orderly way (a FIN): the client
	// reads io.EOF. If request bytes the server has not read wait in the
	// socket, the kernel sends a reset instead, as it would for any server.
	Hangup
	// Reset aborts the connection (SO_LINGER 0, then close), so that the
	// client's next read or write fails with ECONNRESET.
	Reset
)

// A Script tells a ScriptedServer what to do on each connection: the
// steps of the n-th accepted connection, counting from 0. A connection
// whose steps run out without closing it echoes every further request
// until the client closes it.
type Script func(n int) []Step

// Sessions returns a Script under which the n-th accepted connection
// follows sessions[n], and connections after those echo.
func Sessions(sessions ...[]Step) Script {
	return func(n int) []Step {
		if n < len(sessions) {
			return sessions[n]
		}
		return nil
	}
}

// Always returns a Script under which every connection follows steps.
func Always(steps ...Step) Script {
	return func(int) []Step { return steps }
}

// ScriptedServer is a line server on 127.0.0.1, with a port chosen by the
// kernel, whose connections each follow the steps its Script gives them:
// it answers, stays silent, cuts a response short, hangs up or resets the
// connection at the points a test chooses. Each connection runs its steps
// in order, on a goroutine of its own, so what a client sees depends only
// on the order of its own requests, never on timing.
type ScriptedServer struct {
	ln     net.Listener
	script Script

	accepted atomic.Int64
	requests atomic.Int64
	ended    atomic.Int64

	mu     sync.Mutex // protects the fields below
	closed bool
	conns  map[net.Conn]struct{}

	wg sync.WaitGroup
}

// StartScripted starts a ScriptedServer following script and closes it
// when the test ends.
func StartScripted(tb testing.TB, script Script) *ScriptedServer {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("testnet: %v", err)
	}
	s := &ScriptedServer{ln: ln, script: script, conns: make(map[net.Conn]struct{})}
	s.wg.Add(1)
	go s.serve()
	tb.Cleanup(s.Close)
	return s
}

// Addr returns the server's address, host:port.
func (s *ScriptedServer) Addr() string { return s.ln.Addr().String() }

// Accepted returns how many connections the server has accepted.
func (s *ScriptedServer) Accepted() int64 { return s.accepted.Load() }

// Requests returns how many requests the server has read, across all
// connections, whether it answered them or not.
func (s *ScriptedServer) Requests() int64 { return s.requests.Load() }

// Ended returns how many connections the server has closed, by a step or
// because the client went away. A connection is counted once its socket is
// closed; on loopback, the client has the FIN or the reset by then.
func (s *ScriptedServer) Ended() int64 { return s.ended.Load() }

// Close stops the server, closes its connections and waits for its
// goroutines to end. It may be called more than once.
func (s *ScriptedServer) Close() {
	s.mu.Lock()
	s.closed = true
	s.ln.Close()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *ScriptedServer) serve() {
	defer s.wg.Done()
	for n := 0; ; n++ {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		s.accepted.Add(1)
		go s.session(c, s.script(n))
	}
}

// session runs steps on c, then echoes until the client goes away.
func (s *ScriptedServer) session(c net.Conn, steps []Step) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.ended.Add(1)
	}()
	defer c.Close() // runs first: a step may have closed c already
	r := bufio.NewReader(c)
	read := func() ([]byte, bool) {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return nil, false
		}
		s.requests.Add(1)
		return line, true
	}
	for _, step := range steps {
		switch step {
		case Echo, Swallow, EchoHalf:
			line, ok := read()
			if !ok {
				return
			}
			if step == Swallow {
				continue
			}
			if step == EchoHalf {
				line = line[:len(line)/2]
			}
			if _, err := c.Write(line); err != nil {
				return
			}
		case Hangup:
			return
		case Reset:
			if tc, ok := c.(*net.TCPConn); ok {
				tc.SetLinger(0)
			}
			return
		default:
			panic("testnet: unknown Step")
		}
	}
	for {
		line, ok := read()
		if !ok {
			return
		}
		if _, err := c.Write(line); err != nil {
			return
		}
	}
}

// DeadAddr returns an address on 127.0.0.1 where nothing listens, so that
// dials to it are refused at once, as they are to a crashed backend, and
// closes what holds it when the test ends.
//
// Unlike the address of a listener that was closed, whose port the kernel
// may hand to the next listener on 127.0.0.1:0 (of this test binary, or of
// another package's, which go test runs in parallel), a DeadAddr stays
// dead: its port is the local port of a connected socket that the test
// keeps open, which no listener can bind.
func DeadAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("testnet: %v", err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatalf("testnet: %v", err)
	}
	s, err := ln.Accept()
	if err != nil {
		c.Close()
		tb.Fatalf("testnet: %v", err)
	}
	tb.Cleanup(func() {
		c.Close()
		s.Close()
	})
	return c.LocalAddr().String()
}
