package main

import "io"

// controlCommands are the commands that talk to the admin API (cli.go).
var controlCommands = map[string]func(args []string, stdout, stderr io.Writer) int{}
