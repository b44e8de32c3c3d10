package restream

import (
	"bufio"
	"fmt"
	"os"
	"path"
	"regexp"
	"strings"
)

// Rule pushes every broadcast whose name matches Pattern (path.Match:
// "cams/*") to Target.
type Rule struct {
	Pattern string
	Target  *Target
}

// envRef is a ${NAME} reference in a configured URL.
var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// ParseRules reads the -restream setting: comma-separated
// PATTERN=URL entries, where an entry @FILE reads more entries from FILE,
// one a line (blank lines and # comments skipped). In a URL, ${NAME} is
// replaced by the environment variable NAME (lookup), so that a stream
// key need not sit on the command line; a missing variable is an error
// naming it. Errors never quote a URL.
func ParseRules(spec string, lookup func(string) (string, bool)) ([]Rule, error) {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	var rules []Rule
	for _, e := range strings.Split(spec, ",") {
		e = strings.TrimSpace(e)
		switch {
		case e == "":
		case strings.HasPrefix(e, "@"):
			more, err := rulesFile(e[1:], lookup)
			if err != nil {
				return nil, err
			}
			rules = append(rules, more...)
		default:
			r, err := parseRule(e, lookup)
			if err != nil {
				return nil, fmt.Errorf("restream: -restream entry %d: %w", len(rules)+1, err)
			}
			rules = append(rules, r)
		}
	}
	return rules, nil
}

func rulesFile(name string, lookup func(string) (string, bool)) ([]Rule, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("restream: %w", err)
	}
	defer f.Close()
	var rules []Rule
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		r, err := parseRule(l, lookup)
		if err != nil {
			return nil, fmt.Errorf("restream: %s line %d: %w", name, n, err)
		}
		rules = append(rules, r)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("restream: %s: %w", name, err)
	}
	return rules, nil
}

func parseRule(e string, lookup func(string) (string, bool)) (Rule, error) {
	pat, raw, ok := strings.Cut(e, "=")
	pat = strings.TrimSpace(pat)
	if !ok || pat == "" {
		return Rule{}, fmt.Errorf("want PATTERN=rtmp://HOST/APP/KEY")
	}
	if _, err := path.Match(pat, ""); err != nil {
		return Rule{}, fmt.Errorf("pattern %q: %w", pat, err)
	}
	var missing string
	raw = envRef.ReplaceAllStringFunc(raw, func(ref string) string {
		name := ref[2 : len(ref)-1]
		v, ok := lookup(name)
		if !ok && missing == "" {
			missing = name
		}
		return v
	})
	if missing != "" {
		return Rule{}, fmt.Errorf("pattern %q: environment variable %s is not set", pat, missing)
	}
	t, err := ParseTarget(raw)
	if err != nil {
		return Rule{}, fmt.Errorf("pattern %q: %w", pat, err)
	}
	return Rule{Pattern: pat, Target: t}, nil
}

// Match reports whether the rule applies to broadcast name.
func (r Rule) Match(name string) bool {
	ok, _ := path.Match(r.Pattern, name)
	return ok
}
