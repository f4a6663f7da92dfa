package functions

import (
	"context"

	"github.com/commandcontrol/commandcontrol/agent/pkgdb"
	"github.com/commandcontrol/commandcontrol/fleet"
)

func init() { Register(fleet.FnSwList, newSwList) }

// SwListReply answers sw-list.
type SwListReply struct {
	Manager  string          `json:"manager"`
	Count    int             `json:"count"`
	Packages []pkgdb.Package `json:"packages"`
}

type swList struct{ db *pkgdb.DB }

func newSwList(env *Env) (Function, error) {
	return &swList{db: env.packageDB()}, nil
}

func (f *swList) Spec() Spec {
	return Spec{
		Name:     fleet.FnSwList,
		Help:     "installed software (dpkg, rpm, apk; Windows Uninstall keys; macOS apps and Homebrew) with version, arch, source, vendor and install time",
		ReadOnly: fleet.ReadOnlyBuiltin(fleet.FnSwList),
		Args:     []Arg{nameArg(" (lib*ssl*)")},
	}
}

func (f *swList) Call(ctx context.Context, args Args) (any, error) {
	filter, manager, pkgs, err := packagesNamed(f.db, args)
	if err != nil {
		return nil, err
	}
	out := make([]pkgdb.Package, 0, len(pkgs))
	for _, p := range pkgs {
		if filter.match(p.Name) {
			out = append(out, p)
		}
	}
	return &SwListReply{Manager: manager, Count: len(out), Packages: out}, nil
}
