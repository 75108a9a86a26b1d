#!/bin/sh
# netpoll-fifo.sh DIR: copies the Go toolchain that `go env GOROOT` names to
# DIR and changes one line of its runtime, so that the goroutines one
# epoll_wait finds ready run in the order their sockets became ready.
#
# Go's netpoll (runtime/netpoll_epoll.go) pushes each ready goroutine onto
# the front of a list, so the scheduler runs a batch last-ready first: the
# request that has waited longest waits for the whole batch. Walking the
# events from the last makes the list first-ready first. veer is built with
# stock Go; this is for measuring what that order costs:
#
#   sh bench/netpoll-fifo.sh /tmp/go-fifo
#   go run ./bench -scenarios get64 -base-go /tmp/go-fifo -rounds 10
#
# (veer-base in the table is veer built with the changed toolchain.)
set -eu
dst=${1:?usage: netpoll-fifo.sh DIR}
src=$(go env GOROOT)
if [ -e "$dst" ]; then
	echo "netpoll-fifo.sh: $dst exists; give a new directory" >&2
	exit 2
fi
cp -a "$src" "$dst"
f="$dst/src/runtime/netpoll_epoll.go"
old='	for i := int32(0); i < n; i++ {'
new='	for i := n - 1; i >= 0; i-- { // netpoll-fifo.sh: toRun.push is LIFO, so walk backwards'
if [ "$(grep -cF "$old" "$f")" != 1 ]; then
	echo "netpoll-fifo.sh: $f does not have the loop this script changes (Go $(go env GOVERSION)); nothing done" >&2
	rm -rf "$dst"
	exit 1
fi
awk -v old="$old" -v new="$new" '$0 == old { print new; next } { print }' "$f" > "$f.new"
mv "$f.new" "$f"
echo "$dst: Go $(go env GOVERSION) with netpoll in readiness order; build with GOROOT=$dst GOTOOLCHAIN=local $dst/bin/go build"
