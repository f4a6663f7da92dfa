//go:build unix

package controlsvc

import "syscall"

// freeBytes is the space available to this user on dir's volume, or -1.
func freeBytes(dir string) int64 {
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil {
		return -1
	}
	return int64(fs.Bavail) * int64(fs.Bsize)
}
