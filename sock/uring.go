package sock

import (
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// The sends and receives of one round of the scheduler, made in one
// system call (io_uring).
//
// On bench's virtual machine a system call costs far more than the work
// it asks for: a small send and a small receive on loopback TCP take
// 6.4 µs as two system calls, 3.2 µs as two of a batch of 8 in one
// io_uring_enter and 2.6 µs in a batch of 64 (BenchmarkCalls;
// bench/README.md, step 13). A proxy makes four such calls per request,
// about two thirds of its CPU time. On one P, the goroutines that one
// poll of epoll readied run one after another and each makes one send or
// one receive and then waits, so the round's calls can go in together:
// each queues its call and parks, and a flusher goroutine that runs after
// every goroutine already runnable hands the whole queue to the kernel in
// one io_uring_enter and wakes them with their results.
//
// Every call is made with MSG_DONTWAIT, so the kernel completes it within
// io_uring_enter, as sendto or recvfrom on a non-blocking socket would
// return, with a count, or with EAGAIN instead of waiting: the caller sees
// exactly what the system call would have told it, and no buffer is left
// with the kernel after io_uring_enter returns. Waiting for readiness
// stays with Go's poller.
//
// The ring is set up once, the first time a connection opens while Go
// runs on one P. Where io_uring is unavailable (an older kernel, a
// seccomp profile that refuses it, as Docker's default does, or
// VEER_IO_URING=off in the environment), each call is its own system call
// as before.

// io_uring's ABI (include/uapi/linux/io_uring.h).
const (
	sysIOURingSetup = 425
	sysIOURingEnter = 426

	opSend = 26 // IORING_OP_SEND
	opRecv = 27 // IORING_OP_RECV

	setupSubmitAll = 1 << 7  // IORING_SETUP_SUBMIT_ALL: an op that fails at submission does not stop the rest
	setupNoSQArray = 1 << 16 // IORING_SETUP_NO_SQARRAY

	featSingleMmap = 1 << 0 // IORING_FEAT_SINGLE_MMAP

	enterGetEvents = 1 << 0 // IORING_ENTER_GETEVENTS

	offSQRing = 0
	offSQEs   = 0x10000000

	ringEntries = 256
)

type uringParams struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
	resv                                                                   [3]uint32
	sqOff                                                                  [10]uint32 // head, tail, ring_mask, ring_entries, flags, dropped, array, resv1, user_addr (u64)
	cqOff                                                                  [10]uint32 // head, tail, ring_mask, ring_entries, overflow, cqes, flags, resv1, user_addr (u64)
}

type uringSQE struct {
	opcode, flags uint8
	ioprio        uint16
	fd            int32
	off, addr     uint64
	len, msgFlags uint32
	userData      uint64
	_             [3]uint64
}

type uringCQE struct {
	userData uint64
	res      int32
	flags    uint32
}

// ring is an io_uring's two queues.
type ring struct {
	mu     sync.Mutex // one run at a time
	fd     int
	sqHead *uint32
	sqTail *uint32
	sqMask uint32
	sqes   []uringSQE
	cqHead *uint32
	cqTail *uint32
	cqMask uint32
	cqes   []uringCQE
}

func newRing() (*ring, error) {
	var p uringParams
	p.flags = setupSubmitAll | setupNoSQArray
	fd, _, e := syscall.Syscall(sysIOURingSetup, ringEntries, uintptr(unsafe.Pointer(&p)), 0)
	array := false
	if e == syscall.EINVAL { // before Linux 6.6: no IORING_SETUP_NO_SQARRAY
		p = uringParams{flags: setupSubmitAll}
		fd, _, e = syscall.Syscall(sysIOURingSetup, ringEntries, uintptr(unsafe.Pointer(&p)), 0)
		array = true
	}
	if e != 0 {
		return nil, os.NewSyscallError("io_uring_setup", e)
	}
	r := &ring{fd: int(fd)}
	if p.features&featSingleMmap == 0 {
		syscall.Close(r.fd)
		return nil, os.NewSyscallError("io_uring_setup", syscall.ENOTSUP)
	}
	size := int(p.cqOff[5]) + int(p.cqEntries)*int(unsafe.Sizeof(uringCQE{}))
	if array {
		size = max(size, int(p.sqOff[6])+int(p.sqEntries)*4)
	}
	rb, err := syscall.Mmap(r.fd, offSQRing, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED|syscall.MAP_POPULATE)
	if err != nil {
		syscall.Close(r.fd)
		return nil, os.NewSyscallError("mmap", err)
	}
	sb, err := syscall.Mmap(r.fd, offSQEs, int(p.sqEntries)*int(unsafe.Sizeof(uringSQE{})), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED|syscall.MAP_POPULATE)
	if err != nil {
		syscall.Munmap(rb)
		syscall.Close(r.fd)
		return nil, os.NewSyscallError("mmap", err)
	}
	base := unsafe.Pointer(unsafe.SliceData(rb))
	r.sqHead = (*uint32)(unsafe.Add(base, p.sqOff[0]))
	r.sqTail = (*uint32)(unsafe.Add(base, p.sqOff[1]))
	r.sqMask = *(*uint32)(unsafe.Add(base, p.sqOff[2]))
	r.cqHead = (*uint32)(unsafe.Add(base, p.cqOff[0]))
	r.cqTail = (*uint32)(unsafe.Add(base, p.cqOff[1]))
	r.cqMask = *(*uint32)(unsafe.Add(base, p.cqOff[2]))
	r.cqes = unsafe.Slice((*uringCQE)(unsafe.Add(base, p.cqOff[5])), p.cqEntries)
	r.sqes = unsafe.Slice((*uringSQE)(unsafe.Pointer(unsafe.SliceData(sb))), p.sqEntries)
	if array { // slot i of the queue is SQE i, for good
		a := unsafe.Slice((*uint32)(unsafe.Add(base, p.sqOff[6])), p.sqEntries)
		for i := range a {
			a[i] = uint32(i)
		}
	}
	return r, nil
}

// ioOp is one queued send or receive, and then its result: a count, or
// an errno as the system call would have returned it.
type ioOp struct {
	code uint8
	fd   int32
	buf  []byte
	n    int
	err  syscall.Errno
	done chan struct{}

	pending bool // handed to the kernel, no completion read yet
}

// direct makes o's call as its own system call, as send and recv do.
func (o *ioOp) direct() {
	if o.code == opSend {
		o.n, o.err = sendFlags(uintptr(o.fd), o.buf, syscall.MSG_NOSIGNAL|syscall.MSG_DONTWAIT)
	} else {
		o.n, o.err = recvFlags(uintptr(o.fd), o.buf, syscall.MSG_DONTWAIT)
	}
}

// run makes the calls of ops, in as few io_uring_enter calls as the
// ring's size allows, and fills in their results. It returns how many
// io_uring_enter calls it made.
func (r *ring) run(ops []*ioOp) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	enters := 0
	for len(ops) > 0 {
		k := min(len(ops), len(r.sqes))
		head, tail := atomic.LoadUint32(r.sqHead), *r.sqTail
		for i, o := range ops[:k] {
			s := &r.sqes[(tail+uint32(i))&r.sqMask]
			*s = uringSQE{opcode: o.code, fd: o.fd, addr: uint64(uintptr(unsafe.Pointer(unsafe.SliceData(o.buf)))), len: uint32(len(o.buf)), userData: uint64(i)}
			if o.code == opSend {
				s.msgFlags = syscall.MSG_NOSIGNAL | syscall.MSG_DONTWAIT
			} else {
				s.msgFlags = syscall.MSG_DONTWAIT
			}
			o.pending = true
		}
		atomic.StoreUint32(r.sqTail, tail+uint32(k))
		enters++
		syscall.RawSyscall6(sysIOURingEnter, uintptr(r.fd), uintptr(k), 0, 0, 0, 0)
		// The kernel moves the head past each SQE it takes. Those it did
		// not take (the call failed or was interrupted) are taken back and
		// made one by one: without SQPOLL, nothing else takes them.
		taken := int(atomic.LoadUint32(r.sqHead) - head)
		if taken < k {
			atomic.StoreUint32(r.sqTail, head+uint32(taken))
		}
		for r.reap(ops[:taken]) > 0 {
			// A call taken did not complete within the enter, which
			// MSG_DONTWAIT rules out. Wait for it rather than leave a
			// buffer with the kernel.
			enters++
			_, _, e := syscall.Syscall6(sysIOURingEnter, uintptr(r.fd), 0, 1, enterGetEvents, 0, 0)
			switch e {
			case 0, syscall.EINTR, syscall.EAGAIN, syscall.EBUSY:
			default:
				panic(os.NewSyscallError("io_uring_enter", e))
			}
		}
		for _, o := range ops[taken:k] {
			o.direct()
		}
		ops = ops[k:]
	}
	return enters
}

// reap reads the completions of ops and returns how many ops still have
// none.
func (r *ring) reap(ops []*ioOp) int {
	head := *r.cqHead
	for tail := atomic.LoadUint32(r.cqTail); head != tail; head++ {
		c := r.cqes[head&r.cqMask]
		if c.userData >= uint64(len(ops)) {
			continue
		}
		o := ops[c.userData]
		if c.res < 0 {
			o.n, o.err = 0, syscall.Errno(-c.res)
		} else {
			o.n, o.err = int(c.res), 0
		}
		o.pending = false
	}
	atomic.StoreUint32(r.cqHead, head)
	pending := 0
	for _, o := range ops {
		if o.pending {
			pending++
		}
	}
	return pending
}

// batcher queues the calls of one round and has a flusher make them.
type batcher struct {
	ring *ring

	mu        sync.Mutex
	queue     []*ioOp
	spare     []*ioOp
	scheduled bool          // the flusher has been told of the queue
	wake      chan struct{} // to the flusher

	// Counts, for BatchCounts: batches flushed, calls made.
	flushes, calls atomic.Int64
}

var (
	theBatcher     atomic.Pointer[batcher]
	theBatcherOnce sync.Once
)

// batching returns the process's batcher, setting it up the first time;
// nil where io_uring cannot be used.
func batching() *batcher {
	theBatcherOnce.Do(func() {
		if v := os.Getenv("VEER_IO_URING"); v == "off" || v == "0" || v == "false" {
			return
		}
		r, err := newRing()
		if err != nil {
			return
		}
		b := &batcher{ring: r, wake: make(chan struct{}, 1)}
		go b.flusher()
		theBatcher.Store(b)
	})
	return theBatcher.Load()
}

// Batching reports whether connections opened on one P batch their calls
// with io_uring in this process (setting the ring up if no connection
// did yet).
func Batching() bool { return batching() != nil }

// BatchCounts returns how many sends and receives waited for their
// round's batch, and how many batches went to the kernel (each in one
// io_uring_enter, or as a plain system call when alone): both 0 until a
// connection opens on one P with io_uring there. Their ratio is the
// average batch.
func BatchCounts() (calls, batches int64) {
	if b := theBatcher.Load(); b != nil {
		return b.calls.Load(), b.flushes.Load()
	}
	return 0, 0
}

// do queues o's call for the flusher and waits for its result.
func (b *batcher) do(o *ioOp) {
	b.mu.Lock()
	b.queue = append(b.queue, o)
	tell := !b.scheduled
	b.scheduled = true
	b.mu.Unlock()
	if tell {
		b.wake <- struct{}{}
	}
	<-o.done
}

func (b *batcher) flusher() {
	for range b.wake {
		// Let every goroutine already runnable queue its call first: a
		// yield puts this one behind them (on one P, the global run queue
		// is taken once the local one is empty, before the poller looks).
		runtime.Gosched()
		b.mu.Lock()
		ops := b.queue
		b.queue, b.spare = b.spare[:0], nil
		b.scheduled = false
		b.mu.Unlock()
		b.flushes.Add(1)
		b.calls.Add(int64(len(ops)))
		if len(ops) == 1 {
			ops[0].direct() // alone, the ring only adds its own cost
		} else {
			b.ring.run(ops)
		}
		for i, o := range ops {
			ops[i] = nil
			o.done <- struct{}{}
		}
		b.mu.Lock()
		if b.spare == nil {
			b.spare = ops[:0]
		}
		b.mu.Unlock()
	}
}
