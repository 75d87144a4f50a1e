// CoreDNS as the node's cluster DNS (ci/node.sh), built from its Go module
// with only the plugins the node's Corefile names: the full set (plugin.cfg)
// pulls in the AWS, Azure and Google Cloud SDKs, which no test needs.
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() {
	coremain.Run()
}
