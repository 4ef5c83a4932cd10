//go:build unix

package sim

import "syscall"

// processCPUNs is the CPU time this process has used (user and system): the
// benchmark's figure per CPU second does not move with what else the
// machine runs, as its figure per wall second does.
func processCPUNs() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
