package fleet

import "testing"

func TestSiteSubjects(t *testing.T) {
	if got, err := ParseSiteAuthSubject(SiteAuthSubject("dc2")); err != nil || got != "dc2" {
		t.Errorf("auth subject: %q %v", got, err)
	}
	sys := "$SYS.ACCOUNT.FLEET.CONNECT"
	if site, got, err := ParseSiteSysSubject(SiteSysSubject("dc-2_b", sys)); err != nil || site != "dc-2_b" || got != sys {
		t.Errorf("sys subject: %q %q %v", site, got, err)
	}
	for _, bad := range []string{"sys.commandControl.site.dc2.auth.x", "sys.commandControl.site..auth", "$SYS.REQ.USER.AUTH", "sys.commandControl.site.a*b.auth"} {
		if _, err := ParseSiteAuthSubject(bad); err == nil {
			t.Errorf("auth subject %q accepted", bad)
		}
	}
	for _, bad := range []string{"sys.commandControl.site.dc2.sys.", "sys.commandControl.site.d~2.sys.$SYS.X", "$SYS.ACCOUNT.FLEET.CONNECT"} {
		if _, _, err := ParseSiteSysSubject(bad); err == nil {
			t.Errorf("sys subject %q accepted", bad)
		}
	}
	for _, bad := range []string{"", "d c2", "dc2.x", string(make([]byte, MaxSiteLen+1))} {
		if ValidateSiteName(bad) == nil {
			t.Errorf("site name %q accepted", bad)
		}
	}
}
