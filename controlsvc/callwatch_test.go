package controlsvc

import "testing"

func TestCallPrefix(t *testing.T) {
	for reply, want := range map[string]string{
		"_INBOX_cc.UKEY.nuid.all":   "_INBOX_cc.UKEY.nuid", // workbench broadcast
		"_INBOX_cc.UKEY.nuid.12":    "_INBOX_cc.UKEY.nuid", // workbench direct
		"_INBOX_cc.UKEY.nuid.12.2":  "_INBOX_cc.UKEY.nuid", // its second re-send
		"_INBOX_cc.UKEY.mux.tok123": "_INBOX_cc.UKEY.mux",  // nats.go request mux
		"_INBOX_cc.UKEY.nuid":       "_INBOX_cc.UKEY",      // an old-style request
		"inbox":                     "inbox",
	} {
		if got := callPrefix(reply); got != want {
			t.Errorf("callPrefix(%q) = %q, want %q", reply, got, want)
		}
	}
}
