//go:build unix

package connpool

import (
	"errors"
	"syscall"
)

const canPeek = true

func wouldBlock(err error) bool {
	return errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK)
}
