package agent

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/agent/config"
	"github.com/tribune-mesh/tribune/catalog"
)

// advertiseHost is the address the agent registers its node with.
func (a *Agent) advertiseHost() string {
	if a.cfg.AdvertiseAddrLAN != "" {
		return a.cfg.AdvertiseAddrLAN
	}
	if a.cfg.BindAddr != "" && a.cfg.BindAddr != "0.0.0.0" {
		return a.cfg.BindAddr
	}
	return "127.0.0.1"
}

func (a *Agent) taggedAddresses() map[string]string {
	h := a.advertiseHost()
	return map[string]string{"lan": h, "lan_ipv4": h, "wan": h, "wan_ipv4": h}
}

// loadConfigDefinitions registers the services and checks of the config files.
func (a *Agent) loadConfigDefinitions() error {
	for i := range a.cfg.Services {
		if err := a.local.AddServiceDefinition(&a.cfg.Services[i], true); err != nil {
			return fmt.Errorf("service %q from config: %w", a.cfg.Services[i].Name, err)
		}
		a.configServices[a.cfg.Services[i].ServiceID()] = true
	}
	for i := range a.cfg.Checks {
		c, err := a.local.CheckFromDefinition(&a.cfg.Checks[i], "", true)
		if err != nil {
			return fmt.Errorf("check %q from config: %w", a.cfg.Checks[i].Name, err)
		}
		if err := a.local.AddCheck(c); err != nil {
			return fmt.Errorf("check %q from config: %w", a.cfg.Checks[i].Name, err)
		}
		a.configChecks[c.Health.CheckID] = true
	}
	return nil
}

// decodeMap reads a JSON object body.
func decodeMap(r *http.Request) (map[string]any, error) {
	var m map[string]any
	if err := decodeBody(r, &m); err != nil {
		return nil, err
	}
	if m == nil {
		return nil, badRequest("Request decode failed: body must be a JSON object")
	}
	return m, nil
}

func (h *httpHandler) agentServiceRegister(w http.ResponseWriter, r *http.Request) (any, error) {
	m, err := decodeMap(r)
	if err != nil {
		return nil, err
	}
	def, err := config.DecodeServiceDefinition(m)
	if err != nil {
		return nil, badRequest("Invalid service definition: %v", err)
	}
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	if authz.ServiceWrite(def.Name) != acl.Allow {
		return nil, errPermissionDenied
	}
	if err := h.agent.local.AddServiceDefinition(def, false); err != nil {
		return nil, err
	}
	return nil, nil
}

func (h *httpHandler) agentServiceDeregister(w http.ResponseWriter, r *http.Request) (any, error) {
	id := strings.TrimPrefix(r.URL.Path, "/v1/agent/service/deregister/")
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	s := h.agent.local.Service(id)
	if s == nil {
		return nil, notFound("Unknown service ID %q. Ensure that the service ID is passed, not the service name.", id)
	}
	if authz.ServiceWrite(s.Service) != acl.Allow {
		return nil, errPermissionDenied
	}
	h.agent.local.RemoveService(id)
	return nil, nil
}

func (h *httpHandler) agentServices(w http.ResponseWriter, r *http.Request) (any, error) {
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	svcs := h.agent.local.Services()
	list := make([]*catalog.Service, 0, len(svcs))
	for _, s := range svcs {
		if authz.ServiceRead(s.Service) == acl.Allow {
			list = append(list, s)
		}
	}
	list, err = filter(r.URL.Query().Get("filter"), list)
	if err != nil {
		return nil, err
	}
	out := make(map[string]*catalog.Service, len(list))
	for _, s := range list {
		out[s.ID] = s
	}
	return out, nil
}

func (h *httpHandler) agentService(w http.ResponseWriter, r *http.Request) (any, error) {
	id := strings.TrimPrefix(r.URL.Path, "/v1/agent/service/")
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	s := h.agent.local.Service(id)
	if s == nil {
		return nil, notFound("unknown service ID: %s", id)
	}
	if authz.ServiceRead(s.Service) != acl.Allow {
		return nil, errPermissionDenied
	}
	return s, nil
}

func (h *httpHandler) agentChecks(w http.ResponseWriter, r *http.Request) (any, error) {
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	checks := h.agent.local.Checks()
	list := make([]*catalog.HealthCheck, 0, len(checks))
	for _, c := range checks {
		if c.ServiceName != "" && authz.ServiceRead(c.ServiceName) != acl.Allow {
			continue
		}
		if c.ServiceName == "" && authz.NodeRead(c.Node) != acl.Allow {
			continue
		}
		list = append(list, c)
	}
	list, err = filter(r.URL.Query().Get("filter"), list)
	if err != nil {
		return nil, err
	}
	out := make(map[string]*catalog.HealthCheck, len(list))
	for _, c := range list {
		out[c.CheckID] = c
	}
	return out, nil
}

func (h *httpHandler) agentCheckRegister(w http.ResponseWriter, r *http.Request) (any, error) {
	m, err := decodeMap(r)
	if err != nil {
		return nil, err
	}
	def, err := config.DecodeCheckDefinition(m)
	if err != nil {
		return nil, badRequest("Invalid check definition: %v", err)
	}
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	if authz.NodeWrite(h.agent.cfg.NodeName) != acl.Allow {
		return nil, errPermissionDenied
	}
	c, err := h.agent.local.CheckFromDefinition(def, "", false)
	if err != nil {
		return nil, err
	}
	return nil, h.agent.local.AddCheck(c)
}

func (h *httpHandler) agentCheckDeregister(w http.ResponseWriter, r *http.Request) (any, error) {
	id := strings.TrimPrefix(r.URL.Path, "/v1/agent/check/deregister/")
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	if authz.NodeWrite(h.agent.cfg.NodeName) != acl.Allow {
		return nil, errPermissionDenied
	}
	if !h.agent.local.RemoveCheck(id) {
		return nil, notFound("Unknown check ID %q. Ensure that the check ID is passed, not the check name.", id)
	}
	return nil, nil
}

// agentCheckTTL serves /v1/agent/check/pass|warn|fail/<id>?note=.
func (h *httpHandler) agentCheckTTL(status string) handlerFunc {
	prefix := "/v1/agent/check/" + map[string]string{
		catalog.HealthPassing: "pass", catalog.HealthWarning: "warn", catalog.HealthCritical: "fail",
	}[status] + "/"
	return func(w http.ResponseWriter, r *http.Request) (any, error) {
		id := strings.TrimPrefix(r.URL.Path, prefix)
		authz, err := h.authorize(r)
		if err != nil {
			return nil, err
		}
		if authz.NodeWrite(h.agent.cfg.NodeName) != acl.Allow {
			return nil, errPermissionDenied
		}
		return nil, h.agent.local.UpdateCheck(id, status, r.URL.Query().Get("note"))
	}
}

// agentCheckUpdate serves PUT /v1/agent/check/update/<id> {Status, Output}.
func (h *httpHandler) agentCheckUpdate(w http.ResponseWriter, r *http.Request) (any, error) {
	id := strings.TrimPrefix(r.URL.Path, "/v1/agent/check/update/")
	var body struct {
		Status string
		Output string
	}
	if err := decodeBody(r, &body); err != nil {
		return nil, err
	}
	switch body.Status {
	case catalog.HealthPassing, catalog.HealthWarning, catalog.HealthCritical:
	default:
		return nil, badRequest("Invalid check status: '%s'", body.Status)
	}
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	if authz.NodeWrite(h.agent.cfg.NodeName) != acl.Allow {
		return nil, errPermissionDenied
	}
	return nil, h.agent.local.UpdateCheck(id, body.Status, body.Output)
}

func (h *httpHandler) agentSelf(w http.ResponseWriter, r *http.Request) (any, error) {
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	if authz.AgentRead(h.agent.cfg.NodeName) != acl.Allow {
		return nil, errPermissionDenied
	}
	cfg := h.agent.cfg
	return map[string]any{
		"Config": map[string]any{
			"Datacenter": cfg.Datacenter, "PrimaryDatacenter": cfg.PrimaryDatacenter, "NodeName": cfg.NodeName,
			"NodeID": cfg.NodeID, "Server": cfg.Server, "Revision": "", "Version": Version, "BuildDate": "",
		},
		"DebugConfig": map[string]any{},
		"Member":      h.agent.selfMember(),
		"Meta":        cfg.NodeMeta,
		"Stats":       map[string]any{},
		"xDS":         map[string]any{},
	}, nil
}

// member is an agent as /v1/agent/members shows it.
type member struct {
	Name        string
	Addr        string
	Port        uint16
	Tags        map[string]string
	Status      int
	ProtocolMin uint8
	ProtocolMax uint8
	ProtocolCur uint8
	DelegateMin uint8
	DelegateMax uint8
	DelegateCur uint8
}

// selfMember describes this agent as a gossip member would.
func (a *Agent) selfMember() member {
	role := "node"
	tags := map[string]string{"dc": a.cfg.Datacenter, "id": a.cfg.NodeID, "build": Version, "vsn": "2", "vsn_min": "2", "vsn_max": "3"}
	if a.cfg.Server {
		role = "consul"
		tags["port"] = fmt.Sprint(a.cfg.Ports.Server)
		if a.cfg.Bootstrap || a.cfg.DevMode {
			tags["bootstrap"] = "1"
		}
	}
	tags["role"] = role
	return member{Name: a.cfg.NodeName, Addr: a.advertiseHost(), Port: uint16(a.cfg.Ports.SerfLAN), Tags: tags,
		Status: 1, ProtocolMin: 1, ProtocolMax: 5, ProtocolCur: 2, DelegateMin: 2, DelegateMax: 5, DelegateCur: 4}
}

func (h *httpHandler) agentMembers(w http.ResponseWriter, r *http.Request) (any, error) {
	return h.agent.members(), nil
}

func (h *httpHandler) agentLeave(w http.ResponseWriter, r *http.Request) (any, error) {
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	if authz.AgentWrite(h.agent.cfg.NodeName) != acl.Allow {
		return nil, errPermissionDenied
	}
	h.agent.requestLeave()
	return nil, nil
}

// requestLeave asks the process running the agent to shut it down after
// leaving the cluster gracefully.
func (a *Agent) requestLeave() {
	a.SetLeaveOnShutdown()
	a.closeOnceLeave.Do(func() { close(a.leaveCh) })
}

// SetLeaveOnShutdown makes Shutdown leave the gossip pool gracefully first, so
// the cluster removes this node instead of marking it failed.
func (a *Agent) SetLeaveOnShutdown() {
	a.leaveMu.Lock()
	a.leaving = true
	a.leaveMu.Unlock()
}
