package functions

import (
	"errors"
	"path"
	"strings"

	"github.com/commandcontrol/commandcontrol/agent/pkgdb"
	"github.com/commandcontrol/commandcontrol/fleet"
)

// What the package functions (sw-list, installed-sec-patches) share: the
// installed packages with fleet error codes, and the `name` filter.

// loadPackages returns db's package manager and installed packages ([pkgdb.DB.Load]):
// with no supported database a [fleet.CodeUnavailable] error, with one that
// cannot be read a [fleet.CodeInternal] error.
func loadPackages(db *pkgdb.DB) (string, []pkgdb.Package, error) {
	manager, pkgs, err := db.Load()
	switch {
	case errors.Is(err, pkgdb.ErrNoDatabase):
		return "", nil, errUnavailable("%v", err)
	case err != nil:
		return "", nil, fleet.Errorf(fleet.CodeInternal, "%v", err)
	}
	return manager, pkgs, nil
}

// nameFilter matches package names against the optional `name` argument: a
// glob (path.Match) when it has *, ? or [, else a case-insensitive substring.
// An empty pattern matches everything.
type nameFilter struct {
	pattern string
	glob    bool
}

// newNameFilter validates pattern; a malformed glob is a
// [fleet.CodeBadRequest] error.
func newNameFilter(pattern string) (nameFilter, error) {
	f := nameFilter{pattern: pattern, glob: strings.ContainsAny(pattern, "*?[\\")}
	if f.glob {
		if _, err := path.Match(pattern, ""); err != nil {
			return f, fleet.Errorf(fleet.CodeBadRequest, "argument \"name\": bad glob %q: %v", pattern, err)
		}
	} else {
		f.pattern = strings.ToLower(pattern)
	}
	return f, nil
}

// match reports whether the package name matches.
func (f nameFilter) match(name string) bool {
	switch {
	case f.pattern == "":
		return true
	case f.glob:
		ok, _ := path.Match(f.pattern, name)
		return ok
	}
	return strings.Contains(strings.ToLower(name), f.pattern)
}

// errUnavailable formats a [fleet.CodeUnavailable] error.
func errUnavailable(format string, args ...any) error {
	return fleet.Errorf(fleet.CodeUnavailable, format, args...)
}

// nameArg is the optional `name` argument of the functions that list
// packages; example shows a glob.
func nameArg(example string) Arg {
	return Arg{Name: "name", Type: TypeString,
		Help: "only packages whose name contains this text, or matches this glob" + example}
}

// packagesNamed reads the installed packages and the `name` filter of
// args: what every function that lists packages starts with.
func packagesNamed(db *pkgdb.DB, args Args) (nameFilter, string, []pkgdb.Package, error) {
	filter, err := newNameFilter(args.String("name"))
	if err != nil {
		return nameFilter{}, "", nil, err
	}
	manager, pkgs, err := loadPackages(db)
	return filter, manager, pkgs, err
}
