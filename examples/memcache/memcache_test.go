//go:build integration

package memcache_test

import (
	"context"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/seed73091bf1/connpool/examples/memcache"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// server is a memcached process on a loopback port chosen at run time.
type server struct {
	addr string
	cmd  *exec.Cmd
}

// startMemcached starts memcached on addr (or a free port if addr is
// empty) and waits until it accepts connections. The test stops it at the
// end.
func startMemcached(t *testing.T, addr string) *server {
	t.Helper()
	bin, err := exec.LookPath("memcached")
	if err != nil {
		t.Fatalf("memcached is not installed; install it (Debian: apt-get install memcached) to run this test: %v", err)
	}
	if addr == "" {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr = ln.Addr().String()
		ln.Close()
	}
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, "-l", "127.0.0.1", "-p", port, "-U", "0", "-m", "64", "-u", "root")
	require.NoError(t, cmd.Start())
	s := &server{addr: addr, cmd: cmd}
	t.Cleanup(s.stop)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
			return s
		}
		require.False(t, time.Now().After(deadline), "memcached on %s never accepted", addr)
		time.Sleep(10 * time.Millisecond)
	}
}

// stop kills the process and waits for it. It may be called twice.
func (s *server) stop() {
	if s.cmd.ProcessState == nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
	}
}

func TestShardedClientAgainstThreeMemcachedServers(t *testing.T) {
	servers := []*server{startMemcached(t, ""), startMemcached(t, ""), startMemcached(t, "")}
	addrs := []string{servers[0].addr, servers[1].addr, servers[2].addr}
	c, err := memcache.New(addrs)
	require.NoError(t, err)
	defer c.Close()
	ctx := context.Background()

	const keys = 10000
	owner := make([]string, keys)
	for i := range keys {
		key := "key:" + strconv.Itoa(i)
		require.NoError(t, c.Set(ctx, key, []byte("value "+strconv.Itoa(i))))
		owner[i], err = c.Server(key)
		require.NoError(t, err)
	}
	perServer := map[string]int{}
	for i := range keys {
		v, ok, err := c.Get(ctx, "key:"+strconv.Itoa(i))
		require.NoError(t, err)
		require.True(t, ok, "key %d", i)
		require.Equal(t, "value "+strconv.Itoa(i), string(v))
		perServer[owner[i]]++
	}
	t.Logf("keys per server: %v", perServer)
	require.Len(t, perServer, 3)

	// One server dies. Keys on the others keep working, with no error.
	dead := servers[1]
	dead.stop()
	errorsSeen := 0
	for i := range keys {
		if owner[i] == dead.addr {
			continue
		}
		v, ok, err := c.Get(ctx, "key:"+strconv.Itoa(i))
		if err != nil || !ok || string(v) != "value "+strconv.Itoa(i) {
			errorsSeen++
		}
	}
	assert.Zero(t, errorsSeen, "reads of keys on the surviving servers")

	// The client notices the dead server from its failed dials and ejects
	// it. Then only the dead server's keys map elsewhere.
	var deadKey string
	for i := range keys {
		if owner[i] == dead.addr {
			deadKey = "key:" + strconv.Itoa(i)
			break
		}
	}
	for tries := 0; ; tries++ {
		if now, err := c.Server(deadKey); err == nil && now != dead.addr {
			break
		}
		require.Less(t, tries, 50, "the dead server is never ejected")
		c.Get(ctx, deadKey) // a dial to the dead server fails
	}
	moved, movedFromOthers := 0, 0
	for i := range keys {
		now, err := c.Server("key:" + strconv.Itoa(i))
		require.NoError(t, err)
		if now != owner[i] {
			moved++
			if owner[i] != dead.addr {
				movedFromOthers++
			}
		}
	}
	assert.Zero(t, movedFromOthers, "keys remap only from the dead server")
	assert.Equal(t, perServer[dead.addr], moved)

	// It comes back on its address; once its ejection ends it serves its
	// keys again.
	back := startMemcached(t, dead.addr)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if now, err := c.Server(deadKey); err == nil && now == back.addr {
			break
		}
		require.False(t, time.Now().After(deadline), "the restarted server is never picked again")
		time.Sleep(20 * time.Millisecond) // the ejection runs out on the clock
	}
	served := 0
	for i := range keys {
		if owner[i] != back.addr {
			continue
		}
		key := "key:" + strconv.Itoa(i)
		require.NoError(t, c.Set(ctx, key, []byte("again")))
		v, ok, err := c.Get(ctx, key)
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, "again", string(v))
		if served++; served == 100 {
			break
		}
	}
	assert.Equal(t, 100, served)

	deleted, err := c.Delete(ctx, "key:0")
	require.NoError(t, err)
	assert.True(t, deleted)
	_, ok, err := c.Get(ctx, "key:0")
	require.NoError(t, err)
	assert.False(t, ok)
	t.Log(c.Stats().String())
}
