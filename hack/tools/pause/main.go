// Command pause is the sandbox ("pause") container of every Pod on Serin's local node: it holds
// the Pod's namespaces, reaps orphans, and exits on SIGTERM or SIGINT. No registry can be reached
// here, so registry.k8s.io/pause is built from this file instead of pulled.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			if pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}
