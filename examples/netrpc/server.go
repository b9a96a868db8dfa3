package netrpc

import (
	"errors"
	"net"
	"net/rpc"
	"sync"
	"sync/atomic"
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

// arith is the Arith service. Its methods count the calls they serve.
type arith struct {
	calls *atomic.Int64
}

// Add sets *sum to A+B.
func (a *arith) Add(args Args, sum *int) error {
	a.calls.Add(1)
	*sum = args.A + args.B
	return nil
}

// Div sets *quo to A/B, or fails if B is 0.
func (a *arith) Div(args Args, quo *int) error {
	a.calls.Add(1)
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
	ln    net.Listener
	rpc   *rpc.Server
	calls atomic.Int64
	wg    sync.WaitGroup // the accept loop and one per session

	mu       sync.Mutex                 // protects the fields below
	sessions map[net.Conn]chan struct{} // open sessions; each channel closes when its session ended
	accepted int64                      // sessions ever opened
	killed   bool                       // Kill was called: no new session opens
}

// NewServer starts a Server on 127.0.0.1 at a port the system chooses.
// Stop it with [Server.Kill].
func NewServer() (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{ln: ln, rpc: rpc.NewServer(), sessions: map[net.Conn]chan struct{}{}}
	if err := s.rpc.RegisterName("Arith", &arith{calls: &s.calls}); err != nil {
		_ = ln.Close() // the registration error says more
		return nil, err
	}
	s.wg.Go(s.acceptLoop)
	return s, nil
}

// acceptLoop opens a session for each connection, until Accept fails: the
// listener was closed by Kill (or, outside of loopback tests, the process
// ran out of descriptors; a real server would back off and go on).
func (s *Server) acceptLoop() {
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			return
		}
		done := make(chan struct{})
		s.mu.Lock()
		killed := s.killed
		if !killed {
			s.sessions[conn] = done
			s.accepted++
			s.wg.Add(1) // the counter is not zero: acceptLoop holds one
		}
		s.mu.Unlock()
		if killed {
			_ = conn.Close() // accepted as Kill ran; the client sees a closed conn
			continue
		}
		go s.serve(conn, done)
	}
}

// serve runs the session of conn until the connection fails or is closed.
func (s *Server) serve(conn net.Conn, done chan struct{}) {
	defer s.wg.Done()
	s.rpc.ServeConn(conn) // closes conn when it returns
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
	return len(s.sessions)
}

// Calls returns how many calls the server has served, answered or not.
func (s *Server) Calls() int64 { return s.calls.Load() }

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
