//go:build !unix

package controlsvc

// freeBytes is unknown here.
func freeBytes(string) int64 { return -1 }
