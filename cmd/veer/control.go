package main

import "io"

// controlCommands are the commands that talk to the admin API (cli.go):
// status, weights, switch, promote, rollback, pause, resume, history and
// undo. Each returns its exit code: 0 on success, 1 when the API refuses or
// cannot be reached, 2 on bad usage. The map is filled by cli.go's init and
// only read afterwards.
var controlCommands = map[string]func(args []string, stdout, stderr io.Writer) int{}
