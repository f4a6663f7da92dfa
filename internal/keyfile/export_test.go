package keyfile

// SetLink replaces os.Link for Create until the returned restore runs.
func SetLink(f func(oldname, newname string) error) (restore func()) {
	old := link
	link = f
	return func() { link = old }
}
