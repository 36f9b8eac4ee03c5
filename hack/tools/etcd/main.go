// Command etcd is etcd's own server entrypoint, built from the Go module proxy at the version
// kube-apiserver is tested with. Debian's etcd-server (3.4.23) is older than the 3.5.11+/3.6
// that kube-apiserver 1.31+ expects for its health checks.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
