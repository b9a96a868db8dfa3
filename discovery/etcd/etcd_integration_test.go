//go:build integration

package etcd

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/seed73091bf1/connpool/balancer"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// etcdServer is an etcd process on loopback ports chosen at run time, with
// its data in a temporary directory.
type etcdServer struct {
	t                 *testing.T
	dir, client, peer string
	cmd               *exec.Cmd
	exited            chan struct{}
}

func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

func startEtcd(t *testing.T) *etcdServer {
	t.Helper()
	if _, err := exec.LookPath("etcd"); err != nil {
		t.Fatalf("etcd is not installed; install it (Debian: apt-get install etcd-server): %v", err)
	}
	s := &etcdServer{t: t, dir: t.TempDir(), client: freePort(t), peer: freePort(t)}
	t.Cleanup(s.stop)
	s.start()
	return s
}

func (s *etcdServer) start() {
	s.t.Helper()
	out, err := os.OpenFile(filepath.Join(s.dir, "etcd.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	require.NoError(s.t, err)
	c, p := "http://"+s.client, "http://"+s.peer
	s.cmd = exec.Command("etcd", "--name", "test", "--data-dir", filepath.Join(s.dir, "data"),
		"--listen-client-urls", c, "--advertise-client-urls", c,
		"--listen-peer-urls", p, "--initial-advertise-peer-urls", p,
		"--initial-cluster", "test="+p, "--log-level", "error")
	s.cmd.Stdout, s.cmd.Stderr = out, out
	require.NoError(s.t, s.cmd.Start())
	s.exited = make(chan struct{})
	go func() {
		_ = s.cmd.Wait()
		out.Close()
		close(s.exited)
	}()
	cli := s.newClient()
	defer cli.Close()
	require.Eventually(s.t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := cli.Get(ctx, "ready")
		return err == nil
	}, 20*time.Second, 20*time.Millisecond, "etcd never answered: %s", s.logs())
}

func (s *etcdServer) stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

func (s *etcdServer) logs() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "etcd.out"))
	return string(b)
}

func (s *etcdServer) newClient(endpoints ...string) *clientv3.Client {
	s.t.Helper()
	if len(endpoints) == 0 {
		endpoints = []string{s.client}
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 2 * time.Second})
	require.NoError(s.t, err)
	return cli
}

// recorder is an Updater that keeps the last set.
type recorder struct {
	mu   sync.Mutex
	last []balancer.Endpoint
	n    int
}

func (r *recorder) Update(eps []balancer.Endpoint) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.last, r.n = eps, r.n+1
}

func (r *recorder) addresses() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.last {
		out = append(out, e.Address)
	}
	return out
}

const prefix = "/services/echo/"

func TestWatcherFollowsRegistrations(t *testing.T) {
	s := startEtcd(t)
	cli := s.newClient()
	defer cli.Close()
	ctx := context.Background()
	r1, err := Register(ctx, cli, prefix, "127.0.0.2:80", 3, 2*time.Second)
	require.NoError(t, err)
	r2, err := Register(ctx, cli, prefix, "127.0.0.3:80", 1, 2*time.Second)
	require.NoError(t, err)
	defer r2.Close(ctx)

	var u recorder
	w, err := NewWatcher(ctx, cli, prefix, &u)
	require.NoError(t, err)
	defer w.Close()
	assert.Equal(t, []balancer.Endpoint{{Address: "127.0.0.2:80", Weight: 3}, {Address: "127.0.0.3:80", Weight: 1}}, u.last)

	start := time.Now()
	require.NoError(t, r1.Close(ctx))
	require.Eventually(t, func() bool { return len(u.addresses()) == 1 }, 10*time.Second, 5*time.Millisecond)
	assert.Less(t, time.Since(start), 2*time.Second, "the revoked backend stayed longer than its lease TTL")
	assert.Equal(t, []string{"127.0.0.3:80"}, u.addresses())
	assert.ErrorIs(t, r1.Close(ctx), ErrClosed)
}

func TestWatcherRecoversFromARestart(t *testing.T) {
	s := startEtcd(t)
	cli := s.newClient()
	defer cli.Close()
	ctx := context.Background()
	_, err := cli.Put(ctx, prefix+"127.0.0.2:80", `{"weight": 1}`)
	require.NoError(t, err)
	_, err = cli.Put(ctx, prefix+"127.0.0.3:80", `{"weight": 1}`)
	require.NoError(t, err)
	var u recorder
	w, err := NewWatcher(ctx, cli, prefix, &u)
	require.NoError(t, err)
	defer w.Close()

	s.stop()
	s.start()
	assert.Equal(t, []string{"127.0.0.2:80", "127.0.0.3:80"}, u.addresses(), "the set changed across the restart")
	// The watch works again: a new backend shows up.
	_, err = cli.Put(ctx, prefix+"127.0.0.4:80", `{"weight": 1}`)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(u.addresses()) == 3 }, 20*time.Second, 10*time.Millisecond)
}

// proxy forwards TCP connections to target until paused; pausing closes
// every connection and refuses new ones until resumed.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	paused bool
	conns  []net.Conn
	wg     sync.WaitGroup
}

func startProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &proxy{ln: ln, target: target}
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		ln.Close()
		p.pause()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.paused {
			p.mu.Unlock()
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		p.wg.Go(func() { _, _ = io.Copy(up, c); up.Close() })
		p.wg.Go(func() { _, _ = io.Copy(c, up); c.Close() })
	}
}

func (p *proxy) pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused = true
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused = false
}

func TestWatcherResyncsAfterACompaction(t *testing.T) {
	s := startEtcd(t)
	admin := s.newClient()
	defer admin.Close()
	ctx := context.Background()
	_, err := admin.Put(ctx, prefix+"127.0.0.2:80", `{"weight": 1}`)
	require.NoError(t, err)

	px := startProxy(t, s.client)
	cli := s.newClient(px.ln.Addr().String())
	defer cli.Close()
	var u recorder
	w, err := NewWatcher(ctx, cli, prefix, &u)
	require.NoError(t, err)
	defer w.Close()

	px.pause()
	_, err = admin.Delete(ctx, prefix+"127.0.0.2:80")
	require.NoError(t, err)
	for i := 3; i <= 5; i++ {
		_, err = admin.Put(ctx, prefix+fmt.Sprintf("127.0.0.%d:80", i), `{"weight": 1}`)
		require.NoError(t, err)
	}
	resp, err := admin.Get(ctx, "x")
	require.NoError(t, err)
	_, err = admin.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical())
	require.NoError(t, err)
	px.resume()

	require.Eventually(t, func() bool { return len(u.addresses()) == 3 }, 30*time.Second, 10*time.Millisecond)
	assert.Equal(t, []string{"127.0.0.3:80", "127.0.0.4:80", "127.0.0.5:80"}, u.addresses())
	assert.Positive(t, w.Stats().Resyncs, "the watcher did not list again")
}
