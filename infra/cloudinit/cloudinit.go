// Package cloudinit renders the user-data that makes a new VM ready for
// task deploy: the deploy user with the operators' SSH keys, the packages
// its roles need, the UDP buffer sysctls, and a firewall-free base that
// the provider's own firewall completes.
package cloudinit

import (
	"fmt"
	"os"
	"strings"

	"github.com/goccy/go-yaml"

	"github.com/quiccast/quiccast/infra/inventory"
	"github.com/quiccast/quiccast/infra/render"
)

type file struct {
	Path        string `yaml:"path"`
	Content     string `yaml:"content"`
	Permissions string `yaml:"permissions"`
	Owner       string `yaml:"owner"`
}

type user struct {
	Name              string   `yaml:"name"`
	Groups            []string `yaml:"groups,omitempty"`
	Shell             string   `yaml:"shell"`
	Sudo              string   `yaml:"sudo,omitempty"`
	LockPasswd        bool     `yaml:"lock_passwd"`
	SSHAuthorizedKeys []string `yaml:"ssh_authorized_keys"`
}

type config struct {
	Hostname          string     `yaml:"hostname"`
	FQDN              string     `yaml:"fqdn,omitempty"`
	PackageUpdate     bool       `yaml:"package_update"`
	PackageUpgrade    bool       `yaml:"package_upgrade"`
	Packages          []string   `yaml:"packages"`
	SSHPwauth         bool       `yaml:"ssh_pwauth"`
	DisableRoot       bool       `yaml:"disable_root"`
	SSHAuthorizedKeys []string   `yaml:"ssh_authorized_keys,omitempty"`
	Users             []any      `yaml:"users"`
	WriteFiles        []file     `yaml:"write_files"`
	Runcmd            [][]string `yaml:"runcmd"`
}

// UserData returns the #cloud-config document for h.
func UserData(inv *inventory.Inventory, h *inventory.Host) ([]byte, error) {
	var keys []string
	for _, f := range inv.SSH.AuthorizedKeys {
		b, err := os.ReadFile(inv.Path(f))
		if err != nil {
			return nil, fmt.Errorf("ssh.authorized_keys: %w", err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
				keys = append(keys, l)
			}
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("ssh.authorized_keys: no public key to put on %s (list your .pub files)", h.Name)
	}
	c := config{
		Hostname:       h.Name,
		FQDN:           h.DNS,
		PackageUpdate:  true,
		PackageUpgrade: true,
		Packages:       []string{"ca-certificates"},
		Users:          []any{"default"},
		WriteFiles: []file{{
			Path:        render.Sysctl,
			Permissions: "0644",
			Owner:       "root:root",
			Content:     fmt.Sprintf("# quiccast: UDP buffers for QUIC (quic-go wants 7 MiB)\nnet.core.rmem_max = %d\nnet.core.wmem_max = %d\n", render.UDPBuffer, render.UDPBuffer),
		}},
		Runcmd: [][]string{{"sysctl", "--system"}},
	}
	if h.Has(inventory.Redis) {
		c.Packages = append(c.Packages, "redis-server")
	}
	if h.User == "root" {
		c.DisableRoot = false
		c.SSHAuthorizedKeys = keys
	} else {
		c.DisableRoot = true
		c.Users = append(c.Users, user{
			Name:              h.User,
			Groups:            []string{"adm"},
			Shell:             "/bin/bash",
			Sudo:              "ALL=(ALL) NOPASSWD:ALL",
			LockPasswd:        true,
			SSHAuthorizedKeys: keys,
		})
	}
	b, err := yaml.MarshalWithOptions(c, yaml.IndentSequence(true), yaml.UseLiteralStyleIfMultiline(true))
	if err != nil {
		return nil, err
	}
	head := fmt.Sprintf("#cloud-config\n# quiccast host %s (%s): rendered from the inventory by `go tool task cloud-init HOST=%s`.\n", h.Name, strings.Join(h.Roles, ", "), h.Name)
	return append([]byte(head), b...), nil
}
