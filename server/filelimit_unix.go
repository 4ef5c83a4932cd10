//go:build unix

package server

import "syscall"

// fileLimit is the process's file descriptor limit (Go raises the soft
// limit to the hard one at start), 0 if unknown.
func fileLimit() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	return rl.Cur
}
