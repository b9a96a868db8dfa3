package netrpc

import (
	"errors"
	"net"
	"net/rpc"
	"sync"
	"sync/atomic"
	"time"
)

// ErrServerKilled is returned by a second [Server.Kill].
var ErrServerKilled = errors.New("netrpc: server already killed")

// Args are the arguments of the methods of the Arith service.
type Args struct {
	A, B int
}

// errDivideByZero is the error of Arith.Div for B == 0; a client receives
// its text as an rpc.ServerError.
var errDivideByZero = errors.New("divide by zero")

// arith is the Arith service of one session. Its methods count the calls
// they serve, and those running at once on the session, and take the
// server's delay before they answer.
type arith struct {
	s       *Server
	running atomic.Int32 // calls of the session running now
}

// start counts a call of the session and waits out the server's delay; the
// caller calls the function it returns when the call is done.
func (a *arith) start() (done func()) {
	a.s.calls.Add(1)
	n := a.running.Add(1)
	for {
		peak := a.s.peakCalls.Load()
		if n <= peak || a.s.peakCalls.CompareAndSwap(peak, n) {
			break
		}
	}
	if d := time.Duration(a.s.delay.Load()); d > 0 {
		time.Sleep(d) // the work a real service would do
	}
	return func() { a.running.Add(-1) }
}

// Add sets *sum to A+B.
func (a *arith) Add(args Args, sum *int) error {
	defer a.start()()
	*sum = args.A + args.B
	return nil
}

// Div sets *quo to A/B, or fails if B is 0.
func (a *arith) Div(args Args, quo *int) error {
	defer a.start()()
	if args.B == 0 {
		return errDivideByZero
	}
	*quo = args.A / args.B
	return nil
}

// Server serves the Arith service (Arith.Add and Arith.Div) with net/rpc
// on a loopback port, one session per accepted connection. It counts its
// sessions and calls, so that tests can compare them with the pool's
// counts, and it can drop its sessions or be killed, as a server that
// restarts or dies would be.
type Server struct {
	ln        net.Listener
	calls     atomic.Int64
	peakCalls atomic.Int32 // the most calls one session ran at once
	delay     atomic.Int64 // nanoseconds each call takes; see SetDelay
	wg        sync.WaitGroup

	mu           sync.Mutex                 // protects the fields below
	sessions     map[net.Conn]chan struct{} // running sessions; each channel closes when its session ended
	accepted     int64                      // sessions ever opened
	open         int                        // sessions whose connection has not failed or been closed
	peakSessions int                        // the most sessions open at once
	killed       bool                       // Kill was called: no new session opens
}

// trackedConn is the connection of a session. The session's connection
// counts as open until a read from it fails or it is closed, which is
// when the server sees it go; the session itself may run a little longer,
// finishing the calls it had read.
type trackedConn struct {
	net.Conn
	s    *Server
	once sync.Once
}

// ended counts the connection as closed, once.
func (c *trackedConn) ended() {
	c.once.Do(func() {
		c.s.mu.Lock()
		c.s.open--
		c.s.mu.Unlock()
	})
}

func (c *trackedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.ended()
	}
	return n, err
}

func (c *trackedConn) Close() error {
	c.ended()
	return c.Conn.Close()
}

// NewServer starts a Server on 127.0.0.1 at a port the system chooses.
// Stop it with [Server.Kill].
func NewServer() (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{ln: ln, sessions: map[net.Conn]chan struct{}{}}
	s.wg.Go(s.acceptLoop)
	return s, nil
}

// acceptLoop opens a session for each connection, until Accept fails: the
// listener was closed by Kill (or, outside of loopback tests, the process
// ran out of descriptors; a real server would back off and go on).
func (s *Server) acceptLoop() {
	for {
		raw, err := s.ln.Accept()
		if err != nil {
			return
		}
		conn := &trackedConn{Conn: raw, s: s}
		done := make(chan struct{})
		s.mu.Lock()
		killed := s.killed
		if !killed {
			s.sessions[conn] = done
			s.accepted++
			s.open++
			s.peakSessions = max(s.peakSessions, s.open)
			s.wg.Add(1) // the counter is not zero: acceptLoop holds one
		}
		s.mu.Unlock()
		if killed {
			_ = raw.Close() // accepted as Kill ran; the client sees a closed conn
			continue
		}
		go s.serve(conn, done)
	}
}

// serve runs the session of conn until the connection fails or is closed
// and the calls it read have ended.
// Each session has an rpc.Server of its own, so that its service counts
// the calls of this connection alone.
func (s *Server) serve(conn net.Conn, done chan struct{}) {
	defer s.wg.Done()
	srv := rpc.NewServer()
	if err := srv.RegisterName("Arith", &arith{s: s}); err != nil {
		panic(err) // arith has the methods net/rpc asks for: a bug
	}
	srv.ServeConn(conn) // closes conn when it returns
	s.mu.Lock()
	delete(s.sessions, conn)
	s.mu.Unlock()
	close(done)
}

// Addr returns the address the server listens on, host:port.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Accepted returns how many sessions the server has opened, one per
// accepted connection.
func (s *Server) Accepted() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted
}

// Open returns how many sessions are open: their connection has not failed
// or been closed yet, as the server sees it.
func (s *Server) Open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.open
}

// Calls returns how many calls the server has served, answered or not.
func (s *Server) Calls() int64 { return s.calls.Load() }

// PeakSessions returns the most sessions that were open at once.
func (s *Server) PeakSessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peakSessions
}

// PeakCallsPerSession returns the most calls that one session ran at once.
func (s *Server) PeakCallsPerSession() int { return int(s.peakCalls.Load()) }

// SetDelay makes every call take d before it answers, as real work would.
func (s *Server) SetDelay(d time.Duration) { s.delay.Store(int64(d)) }

// DropOneSession closes the connection of one open session, as a server
// shedding a connection would, and returns once that session ended. It
// reports false if no session was open.
func (s *Server) DropOneSession() bool {
	s.mu.Lock()
	var (
		conn net.Conn
		done chan struct{}
	)
	for c, d := range s.sessions {
		conn, done = c, d
		break
	}
	s.mu.Unlock()
	if conn == nil {
		return false
	}
	_ = conn.Close() // the session may have closed it already
	<-done
	return true
}

// DropSessions closes the connection of every open session, as a server
// restarting behind the same address, or closing idle connections, would,
// and returns once those sessions ended. The server goes on accepting new
// sessions.
func (s *Server) DropSessions() {
	s.mu.Lock()
	open := make(map[net.Conn]chan struct{}, len(s.sessions))
	for conn, done := range s.sessions {
		open[conn] = done
	}
	s.mu.Unlock()

	for conn := range open {
		_ = conn.Close() // the session may have closed it already
	}
	for _, done := range open {
		<-done
	}
}

// Kill stops the server as a crash would, without waiting for its clients:
// it closes the listener, so that new connections are refused, and the
// connection of every open session, so that calls in flight fail. It
// returns once every goroutine of the server ended, with the error of
// closing the listener. A second Kill returns [ErrServerKilled] and does
// nothing else.
func (s *Server) Kill() error {
	s.mu.Lock()
	if s.killed {
		s.mu.Unlock()
		return ErrServerKilled
	}
	s.killed = true
	s.mu.Unlock()

	err := s.ln.Close()
	s.DropSessions() // no session opens once killed is set
	s.wg.Wait()
	return err
}
