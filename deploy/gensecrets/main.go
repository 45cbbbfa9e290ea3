// Command gensecrets writes the secrets of a Roster deployment: the NATS users'
// passwords (plain for the services, bcrypt-hashed for nats-server), the cluster's
// route password, the auth callout's issuer key, an operators' nkey and a users file
// with one administrator.
//
//	go run ./deploy/gensecrets -dir deploy/secrets      # for docker compose
//	go run ./deploy/gensecrets -dir deploy/k8s/secrets  # for kustomize
//
// It refuses to overwrite an existing file unless -force is given: replacing the
// secrets of a running deployment means restarting every NATS node and service.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/seed-3c836eab/roster/deploy/internal/gensecrets"
)

func main() {
	dir := flag.String("dir", "deploy/secrets", "directory to write the secrets into")
	force := flag.Bool("force", false, "overwrite existing files")
	admin := flag.String("admin", "admin", "name of the Roster administrator written to users/users.yaml (role admin)")
	flag.Parse()
	s, err := gensecrets.Generate(*dir, gensecrets.Options{Admin: *admin, Force: *force})
	if err != nil {
		fmt.Fprintln(os.Stderr, "gensecrets:", err)
		os.Exit(1)
	}
	fmt.Printf(`wrote %[1]s:
  secrets.conf       for nats-server: bcrypt hashes, callout issuer %[2]s, operators' nkey %[3]s
  roster.env         ROSTER_NATS_PASSWORD of the services (user roster-service)
  nats.env           NATS_ROUTE_PASSWORD of the cluster's routes (user roster-route; the one
                     roster serve derives from the system password)
  callout.nk         the auth service's callout seed (--auth-callout-seed-file)
  admin.nk           operators' system-account nkey: nats --nkey %[1]s/admin.nk server list
  service.password   password of roster-service
  system.password    password of roster-system
  %[4]s.password     password of the Roster user %[4]q (role admin) in users/users.yaml
`, *dir, s.CalloutIssuer, s.AdminNkey, *admin)
}
