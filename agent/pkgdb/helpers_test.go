package pkgdb

// Fixture roots (see testdata/README.md).
const (
	debianRoot     = "testdata/debian"
	distrolessRoot = "testdata/distroless"
	alpineRoot     = "testdata/alpine"
)
