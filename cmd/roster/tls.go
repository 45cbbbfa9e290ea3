package main

import (
	"fmt"

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
