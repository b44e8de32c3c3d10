// Package config binds command-line flags to their QC_… environment twins.
//
// Every setting of every quiccast subcommand is a flag. A flag that is not
// given on the command line takes its value from the environment variable
// named after it: the FlagSet's prefix plus the flag name in upper case with
// dashes turned into underscores (-listen in "edge" is QC_EDGE_LISTEN).
// Settings shared by all nodes (-redis-url, -log-level) are declared with
// Global and have no node prefix (QC_REDIS_URL).
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"
)

// Set is a flag.FlagSet whose flags have environment twins.
type Set struct {
	fs      *flag.FlagSet
	prefix  string
	env     map[string]string // flag name -> env var
	lookup  func(string) (string, bool)
	summary string
}

// New returns a Set for the subcommand cmd. Env twins are "QC_" + upper(cmd)
// + "_" + upper(flag); summary is printed at the top of -h.
func New(cmd, summary string) *Set {
	s := &Set{
		fs:      flag.NewFlagSet(cmd, flag.ContinueOnError),
		prefix:  "QC_" + envName(cmd) + "_",
		env:     map[string]string{},
		lookup:  os.LookupEnv,
		summary: summary,
	}
	s.fs.Usage = s.usage
	return s
}

// SetLookup replaces the environment lookup (os.LookupEnv); for tests.
func (s *Set) SetLookup(f func(string) (string, bool)) { s.lookup = f }

// SetOutput sets where usage and errors are printed.
func (s *Set) SetOutput(w io.Writer) { s.fs.SetOutput(w) }

func envName(name string) string {
	return strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

func (s *Set) bind(name string, global bool) {
	if global {
		s.env[name] = "QC_" + envName(name)
	} else {
		s.env[name] = s.prefix + envName(name)
	}
}

// String declares a string setting.
func (s *Set) String(p *string, name, def, usage string) {
	s.fs.StringVar(p, name, def, usage)
	s.bind(name, false)
}

// StringList declares a comma-separated list setting kept in *p: the flag
// may be repeated, and each value (itself a comma list) is appended; the
// first one given replaces the default.
func (s *Set) StringList(p *string, name, def, usage string) {
	*p = def
	s.fs.Var(&listValue{p: p}, name, usage)
	s.bind(name, false)
}

// listValue is a repeatable flag.Value that joins its values with commas.
type listValue struct {
	p   *string
	set bool
}

func (l *listValue) String() string {
	if l.p == nil {
		return ""
	}
	return *l.p
}

func (l *listValue) Set(v string) error {
	if !l.set || *l.p == "" {
		*l.p, l.set = v, true
		return nil
	}
	*l.p += "," + v
	return nil
}

// GlobalString declares a string setting whose env twin has no node prefix.
func (s *Set) GlobalString(p *string, name, def, usage string) {
	s.fs.StringVar(p, name, def, usage)
	s.bind(name, true)
}

// Int declares an integer setting.
func (s *Set) Int(p *int, name string, def int, usage string) {
	s.fs.IntVar(p, name, def, usage)
	s.bind(name, false)
}

// Int64 declares a 64-bit integer setting (sizes in bytes).
func (s *Set) Int64(p *int64, name string, def int64, usage string) {
	s.fs.Int64Var(p, name, def, usage)
	s.bind(name, false)
}

// Float64 declares a floating-point setting.
func (s *Set) Float64(p *float64, name string, def float64, usage string) {
	s.fs.Float64Var(p, name, def, usage)
	s.bind(name, false)
}

// Bool declares a boolean setting.
func (s *Set) Bool(p *bool, name string, def bool, usage string) {
	s.fs.BoolVar(p, name, def, usage)
	s.bind(name, false)
}

// GlobalBool declares a boolean setting whose env twin has no node prefix.
func (s *Set) GlobalBool(p *bool, name string, def bool, usage string) {
	s.fs.BoolVar(p, name, def, usage)
	s.bind(name, true)
}

// Duration declares a duration setting ("1.5s", "200ms").
func (s *Set) Duration(p *time.Duration, name string, def time.Duration, usage string) {
	s.fs.DurationVar(p, name, def, usage)
	s.bind(name, false)
}

// Env returns the environment variable bound to flag name.
func (s *Set) Env(name string) string { return s.env[name] }

// ErrHelp is returned by Parse when -h or -help was given.
var ErrHelp = flag.ErrHelp

// Parse reads args, then fills every flag not given on the command line from
// its environment twin. A malformed environment value is an error naming the
// variable.
func (s *Set) Parse(args []string) error {
	if err := s.fs.Parse(args); err != nil {
		return err
	}
	given := map[string]bool{}
	s.fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []error
	s.fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] {
			return
		}
		env, ok := s.env[f.Name]
		if !ok {
			return
		}
		v, ok := s.lookup(env)
		if !ok {
			return
		}
		if err := f.Value.Set(v); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: %w", env, v, err))
		}
	})
	return errors.Join(errs...)
}

// Args returns the arguments left after the flags.
func (s *Set) Args() []string { return s.fs.Args() }

func (s *Set) usage() {
	w := s.fs.Output()
	fmt.Fprintf(w, "usage: quiccast %s [flags]\n", s.fs.Name())
	if s.summary != "" {
		fmt.Fprintf(w, "\n%s\n", s.summary)
	}
	fmt.Fprintf(w, "\nEvery flag can also be set by the environment variable shown beside it.\n\n")
	var names []string
	s.fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	sort.Strings(names)
	for _, n := range names {
		f := s.fs.Lookup(n)
		typ, usage := flag.UnquoteUsage(f)
		if typ != "" {
			typ = " " + typ // a bool flag has none
		}
		fmt.Fprintf(w, "  -%s%s\n", n, typ)
		fmt.Fprintf(w, "        %s\n", strings.ReplaceAll(usage, "\n", "\n        "))
		fmt.Fprintf(w, "        env %s, default %q\n", s.env[n], f.DefValue)
	}
}
