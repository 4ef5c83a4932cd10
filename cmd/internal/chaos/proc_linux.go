package chaos

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// dialerPID finds which of pids owns the TCP socket that connected to us
// on c: the socket whose local address is c's remote address and whose
// remote address is c's local address, found in /proc/net/tcp by its
// inode, then among each pid's open files.
func dialerPID(c net.Conn, pids []int) (int, error) {
	local, ok1 := c.RemoteAddr().(*net.TCPAddr)
	remote, ok2 := c.LocalAddr().(*net.TCPAddr)
	if !ok1 || !ok2 {
		return 0, fmt.Errorf("not a TCP connection")
	}
	inode, err := socketInode(local, remote)
	if err != nil {
		return 0, err
	}
	want := "socket:[" + inode + "]"
	for _, pid := range pids {
		dir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
		fds, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if target, err := os.Readlink(filepath.Join(dir, fd.Name())); err == nil && target == want {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("no member process owns socket %s (%v -> %v)", inode, local, remote)
}

// socketInode returns the inode of the IPv4 TCP socket local -> remote.
func socketInode(local, remote *net.TCPAddr) (string, error) {
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return "", err
	}
	defer f.Close()
	l, r := procAddr(local), procAddr(remote)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || fields[1] != l || fields[2] != r {
			continue
		}
		return fields[9], nil
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("no socket %v -> %v in /proc/net/tcp", local, remote)
}

// procAddr renders an IPv4 address as /proc/net/tcp does: the address's
// four bytes as a little-endian word in hex, a colon, the port in hex.
func procAddr(a *net.TCPAddr) string {
	ip := a.IP.To4()
	if ip == nil {
		return ""
	}
	b := []byte{ip[3], ip[2], ip[1], ip[0]}
	return strings.ToUpper(hex.EncodeToString(b)) + fmt.Sprintf(":%04X", a.Port)
}
