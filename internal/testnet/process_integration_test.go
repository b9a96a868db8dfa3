//go:build integration

package testnet

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// A server that cannot bind its port because another process holds it
// exits at start; waitReady tells that apart from other failures, so that
// StartRedis and StartNginx try a new port.
func TestProcessReportsAPortTakenByAnotherProcess(t *testing.T) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server is not installed (Debian: apt-get install redis-server): %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	_, port, err := net.SplitHostPort(ln.Addr().String())
	require.NoError(t, err)

	dir := t.TempDir()
	out := filepath.Join(dir, "out.log")
	p, err := startProcess("redis-server on "+ln.Addr().String(), dir, out, bin,
		"--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no")
	require.NoError(t, err)
	logs := func() string { data, _ := os.ReadFile(out); return string(data) }
	notYet := func() error { return errors.New("not answering yet") } // the listener above would answer a dial
	err = p.waitReady(notYet, logs)
	require.ErrorIs(t, err, errPortTaken)
	<-p.exited
}

// A server that exits at start for another reason is reported with its
// output, not as a taken port.
func TestProcessReportsAnExitAtStartWithItsOutput(t *testing.T) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server is not installed (Debian: apt-get install redis-server): %v", err)
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "out.log")
	p, err := startProcess("redis-server", dir, out, bin, "--no-such-option", "x")
	require.NoError(t, err)
	logs := func() string { data, _ := os.ReadFile(out); return string(data) }
	err = p.waitReady(func() error { return errors.New("not answering yet") }, logs)
	require.Error(t, err)
	require.NotErrorIs(t, err, errPortTaken)
	require.Contains(t, err.Error(), "exited at start")
	require.Contains(t, err.Error(), "no-such-option")
}
