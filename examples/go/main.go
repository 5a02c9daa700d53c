// An app that reacts to oomhero: SIGUSR1 (warning) drops its cache and stops taking new work,
// SIGUSR2 (critical) fails readiness and sheds the work it has. Go delivers signals on a
// channel, so the reaction runs in ordinary code, not in a handler.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"
)

func main() {
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGUSR1, syscall.SIGUSR2)
	cache := map[int][]byte{}
	accepting, ready := true, true
	fmt.Println("started")
	tick := time.NewTicker(50 * time.Millisecond)
	for {
		select {
		case s := <-signals:
			switch s {
			case syscall.SIGUSR1:
				if accepting {
					accepting = false
					dropped := len(cache)
					cache = map[int][]byte{}
					debug.FreeOSMemory() // give the freed pages back to the kernel now
					fmt.Printf("warning: dropped %d cache entries, not accepting new work\n", dropped)
				}
			case syscall.SIGUSR2:
				if ready {
					ready = false
					// A real app would answer 500 on its readiness endpoint and drain its queue.
					fmt.Println("critical: readiness failing, shedding load")
				}
			}
		case <-tick.C:
			if accepting {
				cache[len(cache)] = make([]byte, 4096) // stands in for serving a request
			}
		}
	}
}
