package main

import (
	"fmt"
	"os"

	"github.com/nats-io/nats.go"
)

// tlsFiles are the PEM files of a TLS connection to NATS: the CAs its server
// certificate is checked against (the system's when empty) and the client
// certificate it presents, when the servers require one.
type tlsFiles struct{ ca, cert, key string }

// options returns the connection options for f; prefix names its flags in errors.
func (f tlsFiles) options(prefix string) ([]nats.Option, error) {
	if (f.cert == "") != (f.key == "") {
		return nil, usageError{fmt.Errorf("%s-cert and %s-key go together", prefix, prefix)}
	}
	for _, file := range []struct{ flag, path string }{{prefix + "-ca", f.ca}, {prefix + "-cert", f.cert}, {prefix + "-key", f.key}} {
		if err := checkReadable(file.flag, file.path); err != nil {
			return nil, err
		}
	}
	var opts []nats.Option
	if f.ca != "" {
		opts = append(opts, nats.RootCAs(f.ca))
	}
	if f.cert != "" {
		opts = append(opts, nats.ClientCert(f.cert, f.key))
	}
	return opts, nil
}

func (f tlsFiles) set() bool { return f.ca != "" || f.cert != "" || f.key != "" }

// checkReadable fails with a usage error naming flag when the file it names, if
// any, cannot be read. nats.go reads such files only when it connects, and reports
// a missing one as a failed connection: the client commands then exited 7
// (unavailable) and serve --nats-url retried for its start timeout as if NATS were
// not up yet.
func checkReadable(flag, path string) error {
	if path == "" {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return usageError{fmt.Errorf("%s: %w", flag, err)}
	}
	return f.Close()
}
