package testnet

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RedisServer is a redis-server process on 127.0.0.1, on a port chosen at
// run time, started by StartRedis. It runs without persistence (no RDB
// snapshots, no append-only file) from a temporary directory, and never
// touches the system's Redis service. It can be killed and started again
// on the same port, to stand for a crashed or restarted backend.
type RedisServer struct {
	tb   testing.TB
	bin  string
	dir  string
	addr string

	mu   sync.Mutex // protects proc
	proc *process   // the running process, or nil once stopped
}

// redisStartAttempts is how many ports StartRedis tries, and how many times
// Start tries the server's own port.
const redisStartAttempts = 5

// StartRedis starts redis-server on a free loopback port, waits until it
// answers PING, and kills it (and waits for it) when the test ends. The
// port is found by listening on 127.0.0.1:0 and closing the listener; if
// another process takes it in between, redis-server exits at once and
// StartRedis tries again with a new one. The test fails, naming the
// package to install, if redis-server is not on PATH.
func StartRedis(tb testing.TB) *RedisServer {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		tb.Fatalf("testnet: redis-server is not installed; install it (Debian: apt-get install redis-server) to run this test: %v", err)
	}
	s := &RedisServer{tb: tb, bin: bin, dir: tb.TempDir()}
	tb.Cleanup(s.Kill) // after TempDir's cleanup is registered, so it runs before it
	for attempt := 1; ; attempt++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatalf("testnet: finding a free port: %v", err)
		}
		s.addr = ln.Addr().String()
		ln.Close()
		err = s.start()
		if err == nil {
			return s
		}
		if !errors.Is(err, errPortTaken) || attempt == redisStartAttempts {
			tb.Fatalf("testnet: %v", err)
		}
	}
}

// Addr returns the address the server listens on, 127.0.0.1:port. It stays
// the same across Kill, Restart and Start.
func (s *RedisServer) Addr() string { return s.addr }

// Kill sends SIGKILL to the server, as a crash or the OOM killer would, and
// waits until the process has exited, so that the kernel has closed its
// sockets. It does nothing if the server is not running.
func (s *RedisServer) Kill() { s.stop(os.Kill) }

// Shutdown sends SIGTERM to the server, as an orderly stop does, and waits
// until the process has exited. It does nothing if the server is not
// running.
func (s *RedisServer) Shutdown() { s.stop(syscall.SIGTERM) }

// Restart stops the server with sig (os.Kill or syscall.SIGTERM) and
// starts it again on the same port, with no data (nothing is persisted).
// It returns once the new process answers PING.
func (s *RedisServer) Restart(sig os.Signal) {
	s.tb.Helper()
	s.stop(sig)
	s.Start()
}

// Start starts the server again on its port after Kill or Shutdown, and
// waits until it answers PING. It fails the test if the server is running
// or the port cannot be had.
func (s *RedisServer) Start() {
	s.tb.Helper()
	s.mu.Lock()
	running := s.proc != nil
	s.mu.Unlock()
	if running {
		s.tb.Fatalf("testnet: redis-server on %s is already running", s.addr)
	}
	var err error
	for attempt := 1; attempt <= redisStartAttempts; attempt++ {
		if err = s.start(); !errors.Is(err, errPortTaken) {
			break
		}
	}
	if err != nil {
		s.tb.Fatalf("testnet: %v", err)
	}
}

// start runs redis-server on s.addr and waits until it answers PING or
// exits.
func (s *RedisServer) start() error {
	_, port, err := net.SplitHostPort(s.addr)
	if err != nil {
		return err
	}
	p, err := startProcess("redis-server on "+s.addr, s.dir, filepath.Join(s.dir, "redis.out"), s.bin,
		"--port", port, "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no",
		"--dir", s.dir, "--daemonize", "no", "--loglevel", "notice")
	if err != nil {
		return err
	}
	ping := func() error {
		reply, err := RedisCallAddr(s.addr, "PING")
		if err == nil && reply.Str != "PONG" {
			err = fmt.Errorf("PING answered %+v", reply)
		}
		return err
	}
	if err := p.waitReady(ping, s.Logs); err != nil {
		return err
	}
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
	return nil
}

// stop signals the running process, if any, and waits for it to exit.
func (s *RedisServer) stop(sig os.Signal) {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p == nil {
		return
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		s.tb.Errorf("testnet: signalling redis-server on %s: %v", s.addr, err)
		_ = p.cmd.Process.Kill()
	}
	<-p.exited
}

// Logs returns the output of the server's last run, for failure messages.
func (s *RedisServer) Logs() string {
	data, err := os.ReadFile(filepath.Join(s.dir, "redis.out"))
	if err != nil {
		return err.Error()
	}
	return string(data)
}

// Call sends one command to the server on a connection of its own, not a
// pooled one, and returns the reply. An error reply is a *RedisError.
func (s *RedisServer) Call(args ...string) (RedisReply, error) {
	return RedisCallAddr(s.addr, args...)
}

// RedisCallAddr dials addr, sends one command, reads its reply and closes
// the connection, all within a few seconds.
func RedisCallAddr(addr string, args ...string) (RedisReply, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return RedisReply{}, err
	}
	defer c.Close()
	return RedisCall(c, 5*time.Second, args...)
}

// RedisError is an error reply of Redis, such as "-ERR unknown command":
// the server answered, and the connection is still in step.
type RedisError struct {
	// Msg is the reply without its leading '-'.
	Msg string
}

func (e *RedisError) Error() string { return "redis: " + e.Msg }

// RedisReply is one RESP2 reply, or one element of an array reply.
type RedisReply struct {
	// Type is the reply's first byte: '+' (simple string), '-' (error;
	// only for an element of an array: a whole error reply is a
	// *RedisError), ':' (integer), '$' (bulk string) or '*' (array).
	Type byte
	// Str is the text of a simple string, error or bulk string.
	Str string
	// Int is the value of an integer.
	Int int64
	// Array holds the elements of an array.
	Array []RedisReply
	// Nil is set for a null bulk string ($-1) or null array (*-1).
	Nil bool
}

// Limits on what ReadRedisReply accepts, so that a garbled stream fails
// instead of allocating without bound.
const (
	redisMaxBulk  = 64 << 20
	redisMaxArray = 1 << 20
	redisMaxDepth = 16
)

// RedisCall sends one command on rw and reads its reply, within timeout
// when rw is a net.Conn, whose deadline it then clears. It writes the
// whole command with one Write and reads through a bufio.Reader of its
// own, which cannot read past the reply since nothing else was asked for.
// An error reply is returned as a *RedisError, with a zero RedisReply.
func RedisCall(rw io.ReadWriter, timeout time.Duration, args ...string) (RedisReply, error) {
	if c, ok := rw.(net.Conn); ok && timeout > 0 {
		if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
			return RedisReply{}, err
		}
		defer c.SetDeadline(time.Time{})
	}
	if _, err := rw.Write(AppendRedisCommand(nil, args...)); err != nil {
		return RedisReply{}, err
	}
	return ReadRedisReply(bufio.NewReader(rw))
}

// AppendRedisCommand appends args to buf as a RESP array of bulk strings,
// the form in which clients send commands.
func AppendRedisCommand(buf []byte, args ...string) []byte {
	buf = append(buf, '*')
	buf = strconv.AppendInt(buf, int64(len(args)), 10)
	buf = append(buf, '\r', '\n')
	for _, a := range args {
		buf = append(buf, '$')
		buf = strconv.AppendInt(buf, int64(len(a)), 10)
		buf = append(buf, '\r', '\n')
		buf = append(buf, a...)
		buf = append(buf, '\r', '\n')
	}
	return buf
}

// ReadRedisReply reads one RESP2 reply from r. An error reply is returned
// as a *RedisError; a stream that ends inside the reply gives
// io.ErrUnexpectedEOF, and one that ends before it io.EOF, so that
// connpool.IsConnError sees both as a broken connection.
func ReadRedisReply(r *bufio.Reader) (RedisReply, error) {
	reply, err := readRedisValue(r, 0)
	if err != nil {
		return RedisReply{}, err
	}
	if reply.Type == '-' {
		return RedisReply{}, &RedisError{Msg: reply.Str}
	}
	return reply, nil
}

// readRedisValue reads one value, nested depth arrays deep.
func readRedisValue(r *bufio.Reader, depth int) (RedisReply, error) {
	line, err := readRedisLine(r)
	if err != nil {
		if depth > 0 && errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return RedisReply{}, err
	}
	if len(line) == 0 {
		return RedisReply{}, errors.New("testnet: empty RESP line")
	}
	reply := RedisReply{Type: line[0]}
	body := line[1:]
	switch reply.Type {
	case '+', '-':
		reply.Str = body
	case ':':
		if reply.Int, err = strconv.ParseInt(body, 10, 64); err != nil {
			return RedisReply{}, fmt.Errorf("testnet: bad RESP integer %q", body)
		}
	case '$':
		n, err := strconv.Atoi(body)
		switch {
		case err != nil || n < -1 || n > redisMaxBulk:
			return RedisReply{}, fmt.Errorf("testnet: bad RESP bulk length %q", body)
		case n == -1:
			reply.Nil = true
			return reply, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return RedisReply{}, noEOF(err)
		}
		if buf[n] != '\r' || buf[n+1] != '\n' {
			return RedisReply{}, errors.New("testnet: RESP bulk string not ended by CRLF")
		}
		reply.Str = string(buf[:n])
	case '*':
		n, err := strconv.Atoi(body)
		switch {
		case err != nil || n < -1 || n > redisMaxArray:
			return RedisReply{}, fmt.Errorf("testnet: bad RESP array length %q", body)
		case depth >= redisMaxDepth:
			return RedisReply{}, errors.New("testnet: RESP arrays nested too deep")
		case n == -1:
			reply.Nil = true
			return reply, nil
		}
		reply.Array = make([]RedisReply, n)
		for i := range reply.Array {
			if reply.Array[i], err = readRedisValue(r, depth+1); err != nil {
				return RedisReply{}, err
			}
		}
	default:
		return RedisReply{}, fmt.Errorf("testnet: unknown RESP type %q", reply.Type)
	}
	return reply, nil
}

// redisMaxLine bounds a RESP line, which holds a type and a length or a
// short string.
const redisMaxLine = 64 << 10

// readRedisLine reads one CRLF-ended line and returns it without the CRLF.
// It gives io.EOF if the stream ends before the line's first byte, and
// io.ErrUnexpectedEOF if it ends inside it.
func readRedisLine(r *bufio.Reader) (string, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		switch {
		case err == nil:
			if len(line) < 2 || line[len(line)-2] != '\r' {
				return "", errors.New("testnet: RESP line not ended by CRLF")
			}
			return string(line[:len(line)-2]), nil
		case errors.Is(err, bufio.ErrBufferFull):
			if len(line) > redisMaxLine {
				return "", errors.New("testnet: RESP line too long")
			}
		case errors.Is(err, io.EOF) && len(line) > 0:
			return "", io.ErrUnexpectedEOF
		default:
			return "", err
		}
	}
}
