package connpool

import (
	"testing"
	"unsafe"
)

// TestConnStateIsAlignedForAtomics: Conn.state is accessed with
// atomic.LoadUint64/OrUint64, which on 386, arm and mips32 panic unless the
// word is 8-byte aligned. Handles are carved from a [handleBatch]Conn array;
// run with GOARCH=386 to check a 32-bit layout.
func TestConnStateIsAlignedForAtomics(t *testing.T) {
	var batch [handleBatch]Conn
	for i := range batch {
		if a := uintptr(unsafe.Pointer(&batch[i].state)); a%8 != 0 {
			t.Fatalf("handle %d: Conn.state at offset %d (addr %#x) is not 8-byte aligned (unsafe.Offsetof(state)=%d, sizeof(Conn)=%d)",
				i, uintptr(unsafe.Pointer(&batch[i].state))-uintptr(unsafe.Pointer(&batch[0])), a, unsafe.Offsetof(batch[i].state), unsafe.Sizeof(batch[i]))
		}
	}
	// Exercise the real path: the atomics on a carved handle.
	for i := range batch {
		batch[i].mark(sentBit)
		if !batch[i].Sent() {
			t.Fatal("sent bit lost")
		}
	}
}
