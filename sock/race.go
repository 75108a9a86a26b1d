//go:build race

package sock

import "syscall"

// The race detector learns from package syscall that a read of a file or
// socket comes after the writes that came before it (syscall.Write
// releases, and a successful syscall.Read acquires, one variable that
// package syscall keeps for the purpose): code that hands data from one
// goroutine to another through a socket relies on it, as a test that
// changes a setting and then sends a request does. sendto, recvfrom and
// io_uring made raw tell it nothing, so under -race each send and each
// receive that got bytes also makes a zero-length write or read, which
// moves no byte and does what package syscall tells the detector. Not
// built without -race.

const raceEnabled = true

func raceWrote(fd uintptr) { _, _ = syscall.Write(int(fd), nil) }

func raceRead(fd uintptr) { _, _ = syscall.Read(int(fd), nil) }
