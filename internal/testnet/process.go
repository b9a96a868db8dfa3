package testnet

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// process is one run of a server that a test started: nginx, redis-server.
// Its standard output and error go to a file, so that exec starts no
// copying goroutine; one goroutine waits for it to exit.
type process struct {
	name    string // for messages, with the address: "nginx on 127.0.0.1:4711"
	cmd     *exec.Cmd
	out     *os.File      // its standard output and error
	exited  chan struct{} // closed once cmd.Wait has returned
	waitErr error         // cmd.Wait's error; read after exited is closed
}

// errPortTaken is returned by a start whose port another process took
// between the choice and the server's bind.
var errPortTaken = errors.New("the port was taken before the server could bind it")

// startProcess runs bin with args from dir, its output going to the file
// outPath.
func startProcess(name, dir, outPath, bin string, args ...string) (*process, error) {
	out, err := os.OpenFile(outPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	p := &process{name: name, cmd: cmd, out: out, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		p.out.Close()
		close(p.exited)
	}()
	return p, nil
}

// waitReady polls ready every 10 ms until it returns nil, for at most 10
// seconds. If the process exits first, it returns an error that wraps
// errPortTaken if logs() says the address was in use; if the time runs
// out, it kills the process and waits for it. logs is read only on
// failure.
func (p *process) waitReady(ready func() error, logs func() string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-p.exited:
			l := logs()
			if strings.Contains(l, "Address already in use") {
				return fmt.Errorf("%s: %w", p.name, errPortTaken)
			}
			return fmt.Errorf("%s exited at start (%v): %s", p.name, p.waitErr, l)
		default:
		}
		err := ready()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			_ = p.cmd.Process.Kill()
			<-p.exited
			return fmt.Errorf("%s never answered (%v): %s", p.name, err, logs())
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
}
