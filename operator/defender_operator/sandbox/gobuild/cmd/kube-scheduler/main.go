// Command kube-scheduler runs the upstream scheduler unchanged; it exists only so that the binary can be built from
// Go modules (see go.mod), from the same k8s.io/kubernetes as the API server.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-scheduler/app"
)

func main() {
	os.Exit(cli.Run(app.NewSchedulerCommand()))
}
