package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// AppsAdd registers an app whose sessions may join (admin). For a signed
// app the reply's Seed is the app's signing key, shown this once: the
// control service keeps only its public half, so keep the seed where the
// app's backend signs session tokens with it ([fleet.SignSessionToken]).
func (c *Client) AppsAdd(ctx context.Context, req fleet.AppRequest) (fleet.AppCreated, error) {
	var r fleet.AppCreated
	err := c.Control(ctx, fleet.OpAppsAdd, req, &r)
	return r, err
}

// AppsList lists the registered apps, each with how many of its sessions
// are ONLINE (admin).
func (c *Client) AppsList(ctx context.Context) ([]fleet.App, error) {
	var raw json.RawMessage
	if err := c.Control(ctx, fleet.OpAppsList, nil, &raw); err != nil {
		return nil, err
	}
	return decodeApps(raw)
}

// decodeApps reads the apps.list reply: the contract fixes the entries,
// not the envelope, so both a bare array and {"apps": […]} are read.
func decodeApps(raw json.RawMessage) ([]fleet.App, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	if raw[0] == '[' {
		var apps []fleet.App
		if err := json.Unmarshal(raw, &apps); err != nil {
			return nil, fmt.Errorf("%s: malformed reply: %w", fleet.OpAppsList, err)
		}
		return apps, nil
	}
	var l struct {
		Apps []fleet.App `json:"apps"`
	}
	if err := json.Unmarshal(raw, &l); err != nil {
		return nil, fmt.Errorf("%s: malformed reply: %w", fleet.OpAppsList, err)
	}
	return l.Apps, nil
}

// AppsRemove deletes app name (admin); the broker closes its sessions at
// once and the reply says how many.
func (c *Client) AppsRemove(ctx context.Context, name string) (fleet.AppRemoved, error) {
	var r fleet.AppRemoved
	err := c.Control(ctx, fleet.OpAppsRemove, fleet.AppRequest{Name: name}, &r)
	return r, err
}
