// Package deploy tests the deployment files of deploy/ without a Kubernetes
// cluster: it renders the kustomize overlays and checks that the rendered
// YAML kept in deploy/rendered is up to date (go test ./test/deploy -update
// rewrites it), strict-decodes every manifest into the Kubernetes API types
// and checks the contract between them (ports, probes, env, volumes,
// selectors, the agent configuration they hold), then runs the manifests:
// one real tribune process per server pod and per DaemonSet pod, started
// with the container's command, args and environment, each on its own
// loopback address, and checks that they form one cluster.
//
// The package has no code outside its tests.
package deploy
