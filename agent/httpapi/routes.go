package httpapi

import (
	"net/http"

	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/server"
)

// registerRoutes lists every endpoint of the HTTP API.
func (h *Handler) registerRoutes() {
	h.handle("/v1/status/leader", methodsGet, h.statusLeader)
	h.handle("/v1/status/peers", methodsGet, h.statusPeers)

	h.handle("/v1/kv/", methodsKV, h.kv)
	h.handle("/v1/txn", methodsPut, h.txn)

	h.handle("/v1/session/create", methodsPut, h.sessionCreate)
	h.handle("/v1/session/destroy/", methodsPut, h.sessionDestroy)
	h.handle("/v1/session/renew/", methodsPut, h.sessionRenew)
	h.handle("/v1/session/info/", methodsGet, h.sessionInfo)
	h.handle("/v1/session/node/", methodsGet, h.sessionNode)
	h.handle("/v1/session/list", methodsGet, h.sessionList)
	h.handle("/v1/snapshot", methodsGetPut, h.snapshot)
	h.handle("/v1/event/fire/", methodsPut, h.eventFire)
	h.handle("/v1/event/list", methodsGet, h.eventList)
	h.handle("/v1/query", []string{http.MethodGet, http.MethodPost}, h.queryGeneral)
	h.handle("/v1/query/", methodsGetPutDel, h.querySpecific)
	h.handle("/v1/coordinate/nodes", methodsGet, h.coordinateNodes)
	h.handle("/v1/coordinate/node/", methodsGet, h.coordinateNode)
	h.handle("/v1/coordinate/datacenters", methodsGet, h.coordinateDatacenters)
	h.handle("/v1/acl/replication", methodsGet, h.aclReplication)
	h.handle("/v1/coordinate/update", methodsPut, h.coordinateUpdate)
	h.handle("/v1/operator/raft/configuration", methodsGet, h.operator(server.OpRaftConfiguration, false))
	h.handle("/v1/operator/raft/peer", []string{http.MethodDelete}, h.operator(server.OpRemovePeer, true))
	h.handle("/v1/operator/keyring", []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete}, h.keyring)
	h.handle("/v1/operator/autopilot/health", methodsGet, h.operator(server.OpAutopilotHealth, false))
	h.handle("/v1/operator/usage", methodsGet, h.operatorUsage)
	h.handle("/v1/operator/autopilot/configuration", methodsGetPut, h.autopilotConfiguration)
	h.handle("/v1/operator/autopilot/state", methodsGet, h.operator(server.OpAutopilotState, false))
	h.handle("/v1/operator/raft/transfer-leader", []string{http.MethodPost}, h.operator(server.OpTransferLeader, true))

	h.handle("/v1/catalog/register", methodsPut, h.catalogRegister)
	h.handle("/v1/catalog/deregister", methodsPut, h.catalogDeregister)
	h.handle("/v1/catalog/datacenters", methodsGet, h.catalogDatacenters)
	h.handle("/v1/catalog/nodes", methodsGet, h.catalogNodes)
	h.handle("/v1/catalog/services", methodsGet, h.catalogServices)
	h.handle("/v1/catalog/service/", methodsGet, h.catalogService)
	h.handle("/v1/catalog/node/", methodsGet, h.catalogNode)
	h.handle("/v1/catalog/node-services/", methodsGet, h.catalogNodeServices)

	h.handle("/v1/health/node/", methodsGet, func(w http.ResponseWriter, r *http.Request) (any, error) {
		return h.healthChecks(w, r, catalog.ReadNodeChecks, "/v1/health/node/")
	})
	h.handle("/v1/health/checks/", methodsGet, func(w http.ResponseWriter, r *http.Request) (any, error) {
		return h.healthChecks(w, r, catalog.ReadServiceChecks, "/v1/health/checks/")
	})
	h.handle("/v1/health/state/", methodsGet, func(w http.ResponseWriter, r *http.Request) (any, error) {
		return h.healthChecks(w, r, catalog.ReadChecksInState, "/v1/health/state/")
	})
	h.handle("/v1/health/service/", methodsGet, h.healthService)
	h.handle("/v1/health/connect/", methodsGet, h.healthConnect)
	h.handle("/v1/catalog/connect/", methodsGet, h.catalogConnect)
	h.handle("/v1/catalog/gateway-services/", methodsGet, h.catalogGatewayServices)
	h.handle("/v1/health/ingress/", methodsGet, h.healthIngress)

	h.handle("/v1/agent/self", methodsGet, h.agentSelf)
	h.handle("/v1/agent/metrics", methodsGet, h.agentMetrics)
	h.handle("/v1/agent/members", methodsGet, h.agentMembers)
	h.handle("/v1/agent/leave", methodsPut, h.agentLeave)
	h.handle("/v1/agent/reload", methodsPut, h.agentReload)
	h.handle("/v1/agent/join/", methodsPut, h.agentJoin)
	h.handle("/v1/agent/force-leave/", methodsPut, h.agentForceLeave)
	h.handle("/v1/agent/services", methodsGet, h.agentServices)
	h.handle("/v1/agent/service/", methodsGet, h.agentService)
	h.handle("/v1/agent/service/register", methodsPut, h.agentServiceRegister)
	h.handle("/v1/agent/service/deregister/", methodsPut, h.agentServiceDeregister)
	h.handle("/v1/agent/checks", methodsGet, h.agentChecks)
	h.handle("/v1/agent/maintenance", methodsPut, h.agentNodeMaint)
	h.handle("/v1/agent/service/maintenance/", methodsPut, h.agentServiceMaint)
	h.handle("/v1/agent/check/register", methodsPut, h.agentCheckRegister)
	h.handle("/v1/agent/check/deregister/", methodsPut, h.agentCheckDeregister)
	h.handle("/v1/agent/check/pass/", methodsPut, h.agentCheckTTL(catalog.HealthPassing))
	h.handle("/v1/agent/check/warn/", methodsPut, h.agentCheckTTL(catalog.HealthWarning))
	h.handle("/v1/agent/check/fail/", methodsPut, h.agentCheckTTL(catalog.HealthCritical))
	h.handle("/v1/agent/check/update/", methodsPut, h.agentCheckUpdate)

	h.registerACLRoutes()
	h.registerUIRoutes()
	h.registerConnectRoutes()
	h.handle("/v1/agent/host", methodsGet, h.agentHost)
	h.handle("/v1/agent/monitor", methodsGet, h.agentMonitor)
	h.handle("/debug/pprof/", methodsGet, h.debugPprof)
	h.handle("/v1/agent/health/service/id/", methodsGet, h.agentHealthServiceByID)
	h.handle("/v1/agent/health/service/name/", methodsGet, h.agentHealthServiceByName)
	h.handle("/v1/agent/xds/proxies", methodsGet, h.agentXDSProxies)
}
