// Command kube-apiserver runs the upstream API server command unchanged; it exists only so that the
// binary can be built from Go modules (see go.mod).
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
