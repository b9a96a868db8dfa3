package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// isTerminal reports whether f is a terminal (a character device), where
// the status can be a table redrawn in place. Pipes, files and test output
// are not.
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// ANSI escapes for redrawing the live table.
const (
	cursorUp     = "\x1b[%dA" // move the cursor up n lines
	clearToEnd   = "\x1b[J"   // erase from the cursor to the end of the screen
	carriageHome = "\r"
)

// console writes the demo's output. Events (a backend stopped, ejected,
// the first error of a kind) are lines with the time since the start.
// Status goes either as one line per interval, or, live, as a table that
// is redrawn in place, with events printed above it. It is safe for
// concurrent use: the balancer's trace hooks and the clients write events
// from their own goroutines.
type console struct {
	start time.Time

	mu     sync.Mutex // protects the fields below
	w      io.Writer
	live   bool
	table  string // the live table as on screen, or ""
	closed bool   // by Close; later writes are dropped
}

func newConsole(w io.Writer, live bool, start time.Time) *console {
	return &console{w: w, live: live, start: start}
}

// Printf writes text as is, such as the header and the final report.
func (c *console) Printf(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.eraseTableLocked()
	_, _ = fmt.Fprintf(c.w, format, args...)
	c.drawTableLocked()
}

// Event writes one line about something that just happened, stamped with
// the time since the start.
func (c *console) Event(format string, args ...any) {
	c.Printf("%s  %s\n", stamp(time.Since(c.start)), fmt.Sprintf(format, args...))
}

// Status shows the status of an interval: as a line, or by redrawing the
// live table.
func (c *console) Status(s status) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	if !c.live {
		_, _ = io.WriteString(c.w, s.line()+"\n")
		return
	}
	c.eraseTableLocked()
	c.table = s.table()
	c.drawTableLocked()
}

// EndLive removes the live table, leaving the events above it, so that the
// final report follows them.
func (c *console) EndLive() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.eraseTableLocked()
	c.table = ""
}

// Close makes later writes do nothing: a trace hook may still fire, on a
// timer of the balancer, after the demo has ended.
func (c *console) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
}

func (c *console) eraseTableLocked() {
	if n := strings.Count(c.table, "\n"); n > 0 {
		_, _ = fmt.Fprintf(c.w, cursorUp+carriageHome+clearToEnd, n)
	}
}

func (c *console) drawTableLocked() {
	_, _ = io.WriteString(c.w, c.table)
}

// stamp formats the time since the start for events and status.
func stamp(d time.Duration) string {
	return fmt.Sprintf("%6.2fs", d.Seconds())
}
