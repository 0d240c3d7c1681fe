// Tribune's web UI: a hash router over pages that each follow the API
// with blocking queries. No framework and no build step: the files served
// are the files in this directory.
import { get, put, del, request, watch, setToken, token, b64decode, encKey } from './api.js';
import { h, render, tags, badge, worst, checkItem } from './dom.js';

const app = document.getElementById('app');
const errorBox = document.getElementById('error');
let settings = { Datacenter: '', ACLsEnabled: false };
let current = null; // the AbortController of the page shown

function showError(err) {
  if (!err) { errorBox.hidden = true; errorBox.textContent = ''; return; }
  errorBox.hidden = false;
  errorBox.textContent = err.status === 403 || err.status === 401
    ? `${err.message} - log in with a token that allows this.` : err.message;
}

// follow renders the page from each result of a blocking query on path.
function follow(signal, path, draw) {
  watch(path, signal, (data) => { if (!signal.aborted) draw(data); }, showError);
}

function healthSummary(s) {
  return h('span', { class: 'health' },
    h('span', { class: 'passing', title: 'passing checks' }, `✓ ${s.ChecksPassing}`),
    h('span', { class: 'warning', title: 'warning checks' }, `! ${s.ChecksWarning}`),
    h('span', { class: 'critical', title: 'critical checks' }, `✕ ${s.ChecksCritical}`));
}

// ---- services ----

function servicesPage(signal) {
  follow(signal, '/v1/internal/ui/services', (list) => {
    render(app, h('h1', {}, 'Services'),
      !list || list.length === 0 ? h('p', { class: 'muted' }, 'No services registered.') :
        h('ul', { class: 'list', id: 'services' }, list.map((s) =>
          h('li', { 'data-service': s.Name },
            h('a', { class: 'name', href: `#/services/${encodeURIComponent(s.Name)}` }, s.Name),
            healthSummary(s),
            h('span', { class: 'meta' }, `${s.InstanceCount} instance${s.InstanceCount === 1 ? '' : 's'}`),
            tags(s.Tags)))));
  });
}

function servicePage(signal, name) {
  follow(signal, `/v1/health/service/${encodeURIComponent(name)}`, (list) => {
    list = list || [];
    render(app, h('div', { class: 'crumbs' }, h('a', { href: '#/services' }, 'Services'), ' / ', name),
      h('h1', {}, name),
      list.length === 0 ? h('p', { class: 'muted' }, 'No instances.') :
        h('ul', { class: 'list', id: 'instances' }, list.map((i) => {
          const svc = i.Service;
          const addr = svc.Address || i.Node.Address;
          return h('li', { 'data-instance': svc.ID, 'data-status': worst(i.Checks) },
            h('span', { class: 'name' }, svc.ID), badge(worst(i.Checks)),
            h('span', { class: 'meta' }, 'on ', h('a', { href: `#/nodes/${encodeURIComponent(i.Node.Node)}` }, i.Node.Node),
              ` ${addr}${svc.Port ? ':' + svc.Port : ''}`),
            tags(svc.Tags),
            (i.Checks || []).map(checkItem));
        })));
  });
}

// ---- nodes ----

function nodesPage(signal) {
  follow(signal, '/v1/internal/ui/nodes', (list) => {
    list = list || [];
    render(app, h('h1', {}, 'Nodes'),
      h('ul', { class: 'list', id: 'nodes' }, list.map((n) =>
        h('li', { 'data-node': n.Node },
          h('a', { class: 'name', href: `#/nodes/${encodeURIComponent(n.Node)}` }, n.Node),
          badge(worst(n.Checks)),
          h('span', { class: 'meta' }, n.Address),
          h('span', { class: 'tags' }, n.Services.map((s) => h('span', { class: 'tag' }, s.Service)))))));
  });
}

function nodePage(signal, name) {
  follow(signal, `/v1/internal/ui/node/${encodeURIComponent(name)}`, (n) => {
    const head = [h('div', { class: 'crumbs' }, h('a', { href: '#/nodes' }, 'Nodes'), ' / ', name), h('h1', {}, name)];
    if (!n) { render(app, head, h('p', { class: 'muted' }, 'No such node.')); return; }
    render(app, head,
      h('p', { class: 'meta' }, `Address ${n.Address} · datacenter ${n.Datacenter || settings.Datacenter}`),
      h('h2', {}, 'Services'),
      n.Services.length === 0 ? h('p', { class: 'muted' }, 'None.') :
        h('ul', { class: 'list' }, n.Services.map((s) => h('li', {},
          h('a', { class: 'name', href: `#/services/${encodeURIComponent(s.Service)}` }, s.ID),
          h('span', { class: 'meta' }, s.Port ? `port ${s.Port}` : ''), tags(s.Tags)))),
      h('h2', {}, 'Checks'),
      n.Checks.length === 0 ? h('p', { class: 'muted' }, 'None.') :
        h('ul', { class: 'list', id: 'checks' }, n.Checks.map((c) => h('li', {}, checkItem(c)))));
  });
}

// ---- key/value ----

function kvPage(signal, path) {
  if (path !== '' && !path.endsWith('/')) { kvEditPage(signal, path); return; }
  const crumbs = [h('a', { href: '#/kv/' }, 'Key/Value')];
  let acc = '';
  for (const part of path.split('/').filter(Boolean)) {
    acc += part + '/';
    crumbs.push(' / ', h('a', { href: `#/kv/${encKey(acc)}` }, part));
  }
  const list = h('div', { id: 'kv-list' }, h('p', { class: 'muted' }, 'Loading…'));
  render(app, h('div', { class: 'crumbs' }, crumbs), h('h1', {}, path || 'Key/Value'), kvCreateForm(path), list);
  follow(signal, `/v1/kv/${encKey(path)}?keys&separator=/`, (keys) => {
    keys = (keys || []).filter((k) => k !== path);
    render(list,
      keys.length === 0 ? h('p', { class: 'muted' }, 'No keys.') :
        h('ul', { class: 'list', id: 'keys' }, keys.map((k) => {
          const folder = k.endsWith('/');
          return h('li', { 'data-key': k },
            h('a', { class: 'name', href: `#/kv/${encKey(k)}` }, (folder ? '📁 ' : '') + k.slice(path.length)),
            folder ? h('button', { class: 'danger', type: 'button', onclick: async () => {
              if (!confirm(`Delete ${k} and everything under it?`)) return;
              try { await del(`/v1/kv/${encKey(k)}?recurse`); } catch (e) { showError(e); }
            } }, 'Delete folder') : null);
        })));
  });
}

function kvCreateForm(prefix) {
  const key = h('input', { name: 'key', id: 'kv-new-key', placeholder: 'name (end with / for a folder)', required: true });
  const value = h('textarea', { name: 'value', id: 'kv-new-value' });
  return h('form', { id: 'kv-create', onsubmit: async (e) => {
    e.preventDefault();
    const full = prefix + key.value;
    try {
      await put(`/v1/kv/${encKey(full)}`, full.endsWith('/') ? '' : value.value);
      location.hash = full.endsWith('/') ? `#/kv/${encKey(full)}` : `#/kv/${encKey(full)}`;
    } catch (err) { showError(err); }
  } }, h('label', {}, `Create in ${prefix || '/'}`, key), h('label', {}, 'Value', value),
  h('div', { class: 'buttons' }, h('button', { type: 'submit', id: 'kv-create-save' }, 'Create')));
}

function kvEditPage(signal, key) {
  const parent = key.includes('/') ? key.slice(0, key.lastIndexOf('/') + 1) : '';
  const value = h('textarea', { id: 'kv-value', name: 'value' });
  const flags = h('input', { id: 'kv-flags', name: 'flags', type: 'number', min: '0', value: '0' });
  const status = h('p', { class: 'meta', id: 'kv-status' });
  let modifyIndex = 0;
  let dirty = false;
  let saved = false;
  value.addEventListener('input', () => { dirty = true; saved = false; });
  const form = h('form', { id: 'kv-edit', onsubmit: async (e) => {
    e.preventDefault();
    try {
      const ok = await put(`/v1/kv/${encKey(key)}?cas=${modifyIndex}&flags=${Number(flags.value) || 0}`, value.value);
      if (ok === false) { showError(new Error('The key changed since it was loaded: reload to see it before saving.')); return; }
      dirty = false;
      saved = true;
      status.textContent = 'Saved.';
    } catch (err) { showError(err); }
  } }, h('label', {}, 'Value', value), h('label', {}, 'Flags', flags),
  h('div', { class: 'buttons' },
    h('button', { type: 'submit', id: 'kv-save' }, 'Save'),
    h('button', { type: 'button', class: 'danger', id: 'kv-delete', onclick: async () => {
      if (!confirm(`Delete ${key}?`)) return;
      try { await del(`/v1/kv/${encKey(key)}`); location.hash = `#/kv/${encKey(parent)}`; } catch (err) { showError(err); }
    } }, 'Delete')));
  render(app, h('div', { class: 'crumbs' }, h('a', { href: `#/kv/${encKey(parent)}` }, parent || 'Key/Value'), ' / ', key.slice(parent.length)),
    h('h1', {}, key), form, status);
  follow(signal, `/v1/kv/${encKey(key)}`, (entries) => {
    if (!entries || entries.length === 0) { status.textContent = 'This key does not exist (saving creates it).'; modifyIndex = 0; return; }
    const e = entries[0];
    modifyIndex = e.ModifyIndex;
    if (!dirty) { value.value = b64decode(e.Value); flags.value = e.Flags; }
    status.textContent = `${saved ? 'Saved. ' : ''}Modify index ${e.ModifyIndex}${e.Session ? ` · locked by session ${e.Session}` : ''}${dirty ? ' · changed elsewhere while you edit' : ''}`;
  });
}

// ---- sessions ----

function sessionsPage(signal) {
  follow(signal, '/v1/session/list', (list) => {
    list = list || [];
    render(app, h('h1', {}, 'Sessions'),
      list.length === 0 ? h('p', { class: 'muted' }, 'No sessions.') :
        h('ul', { class: 'list', id: 'sessions' }, list.map((s) => h('li', { 'data-session': s.ID },
          h('span', { class: 'name' }, s.Name || s.ID),
          h('span', { class: 'meta' }, `node ${s.Node} · ${s.Behavior}${s.TTL ? ` · TTL ${s.TTL}` : ''} · lock delay ${Math.round((s.LockDelay || 0) / 1e9)}s`),
          h('span', { class: 'meta' }, s.ID),
          h('button', { class: 'danger', type: 'button', onclick: async () => {
            try { await put(`/v1/session/destroy/${encodeURIComponent(s.ID)}`); } catch (e) { showError(e); }
          } }, 'Invalidate')))));
  });
}

// ---- intentions ----

function intentionForm(existing) {
  const src = h('input', { id: 'int-source', required: true, value: existing ? existing.SourceName : '', readonly: !!existing });
  const dst = h('input', { id: 'int-destination', required: true, value: existing ? existing.DestinationName : '', readonly: !!existing });
  const action = h('select', { id: 'int-action' }, h('option', { value: 'allow' }, 'allow'), h('option', { value: 'deny' }, 'deny'));
  action.value = existing ? existing.Action : 'allow';
  const desc = h('input', { id: 'int-description', value: existing ? existing.Description || '' : '' });
  return h('form', { id: 'intention-form', onsubmit: async (e) => {
    e.preventDefault();
    try {
      await put(`/v1/connect/intentions/exact?source=${encodeURIComponent(src.value)}&destination=${encodeURIComponent(dst.value)}`,
        { SourceName: src.value, DestinationName: dst.value, Action: action.value, Description: desc.value });
      location.hash = '#/intentions';
    } catch (err) { showError(err); }
  } }, h('label', {}, 'Source service', src), h('label', {}, 'Destination service', dst),
  h('label', {}, 'Action', action), h('label', {}, 'Description', desc),
  h('div', { class: 'buttons' }, h('button', { type: 'submit' }, existing ? 'Save' : 'Create'),
    h('a', { href: '#/intentions' }, 'Cancel')));
}

function intentionsPage(signal, sub) {
  if (sub === 'new') {
    render(app, h('div', { class: 'crumbs' }, h('a', { href: '#/intentions' }, 'Intentions'), ' / new'), h('h1', {}, 'New intention'), intentionForm(null));
    return;
  }
  if (sub) {
    const [src, dst] = sub.split('/').map(decodeURIComponent);
    get(`/v1/connect/intentions/exact?source=${encodeURIComponent(src)}&destination=${encodeURIComponent(dst)}`, { signal })
      .then((it) => render(app, h('div', { class: 'crumbs' }, h('a', { href: '#/intentions' }, 'Intentions'), ` / ${src} → ${dst}`),
        h('h1', {}, `${src} → ${dst}`), intentionForm(it),
        h('button', { class: 'danger', type: 'button', onclick: async () => {
          try {
            await del(`/v1/connect/intentions/exact?source=${encodeURIComponent(src)}&destination=${encodeURIComponent(dst)}`);
            location.hash = '#/intentions';
          } catch (e) { showError(e); }
        } }, 'Delete')))
      .catch((e) => { if (!signal.aborted) showError(e); });
    return;
  }
  follow(signal, '/v1/connect/intentions', (list) => {
    list = list || [];
    render(app, h('h1', {}, 'Intentions'), h('p', {}, h('a', { href: '#/intentions/new' }, '+ New intention')),
      list.length === 0 ? h('p', { class: 'muted' }, 'No intentions.') :
        h('ul', { class: 'list', id: 'intentions' }, list.map((i) => h('li', {},
          h('a', { class: 'name', href: `#/intentions/${encodeURIComponent(i.SourceName)}/${encodeURIComponent(i.DestinationName)}` },
            `${i.SourceName} → ${i.DestinationName}`),
          h('span', { class: `badge ${i.Action === 'allow' ? 'passing' : 'critical'}` }, i.Action || 'L7'),
          i.Description ? h('span', { class: 'meta' }, i.Description) : null))));
  });
}

// ---- ACL ----

function tokensPage(signal) {
  follow(signal, '/v1/acl/tokens', (list) => {
    list = list || [];
    render(app, h('h1', {}, 'ACL tokens'),
      h('ul', { class: 'list', id: 'tokens' }, list.map((t) => h('li', {},
        h('span', { class: 'name' }, t.Description || t.AccessorID),
        h('span', { class: 'meta' }, t.AccessorID),
        h('span', { class: 'tags' }, (t.Policies || []).map((p) => h('span', { class: 'tag' }, p.Name))),
        t.Local ? h('span', { class: 'tag' }, 'local') : null))));
  });
}

function policiesPage(signal, id) {
  if (id) {
    get(`/v1/acl/policy/${encodeURIComponent(id)}`, { signal }).then((p) => {
      const rules = h('textarea', { id: 'policy-rules', value: p.Rules || '' });
      const desc = h('input', { id: 'policy-description', value: p.Description || '' });
      render(app, h('div', { class: 'crumbs' }, h('a', { href: '#/acl/policies' }, 'Policies'), ` / ${p.Name}`), h('h1', {}, p.Name),
        h('form', { onsubmit: async (e) => {
          e.preventDefault();
          try { await put(`/v1/acl/policy/${encodeURIComponent(id)}`, { ID: id, Name: p.Name, Description: desc.value, Rules: rules.value, Datacenters: p.Datacenters }); location.hash = '#/acl/policies'; } catch (err) { showError(err); }
        } }, h('label', {}, 'Description', desc), h('label', {}, 'Rules', rules),
        h('div', { class: 'buttons' }, h('button', { type: 'submit' }, 'Save'))));
    }).catch((e) => { if (!signal.aborted) showError(e); });
    return;
  }
  follow(signal, '/v1/acl/policies', (list) => {
    list = list || [];
    render(app, h('h1', {}, 'ACL policies'),
      h('ul', { class: 'list', id: 'policies' }, list.map((p) => h('li', {},
        h('a', { class: 'name', href: `#/acl/policies/${encodeURIComponent(p.ID)}` }, p.Name),
        h('span', { class: 'meta' }, p.Description || '')))));
  });
}

function loginPage() {
  const input = h('input', { id: 'token', type: 'password', autocomplete: 'off', placeholder: 'secret ID' });
  const out = h('p', { class: 'meta', id: 'login-status' }, token() ? 'A token is stored in this browser.' : 'No token stored: requests are anonymous.');
  render(app, h('h1', {}, 'Log in'),
    h('form', { id: 'login', onsubmit: async (e) => {
      e.preventDefault();
      setToken(input.value.trim());
      try {
        const self = await get('/v1/acl/token/self');
        out.textContent = `Logged in as ${self.Description || self.AccessorID}.`;
        updateNav();
      } catch (err) { setToken(''); out.textContent = ''; showError(err); }
    } }, h('label', {}, 'Token', input),
    h('div', { class: 'buttons' }, h('button', { type: 'submit' }, 'Log in'),
      h('button', { type: 'button', class: 'secondary', onclick: () => { setToken(''); out.textContent = 'Logged out.'; updateNav(); } }, 'Log out'))),
    out);
}

// ---- router ----

const routes = [
  [/^services$/, servicesPage],
  [/^services\/(.+)$/, (s, m) => servicePage(s, decodeURIComponent(m[1]))],
  [/^nodes$/, nodesPage],
  [/^nodes\/(.+)$/, (s, m) => nodePage(s, decodeURIComponent(m[1]))],
  [/^kv\/(.*)$/, (s, m) => kvPage(s, m[1].split('/').map(decodeURIComponent).join('/'))],
  [/^sessions$/, sessionsPage],
  [/^intentions(?:\/(.+))?$/, (s, m) => intentionsPage(s, m[1])],
  [/^acl\/tokens$/, tokensPage],
  [/^acl\/policies(?:\/(.+))?$/, (s, m) => policiesPage(s, m[1] && decodeURIComponent(m[1]))],
  [/^login$/, loginPage],
];

function route() {
  if (current) current.abort();
  current = new AbortController();
  showError(null);
  // Nothing of the page left shows while the next one loads (or is refused).
  render(app, h('p', { class: 'muted' }, 'Loading…'));
  const path = location.hash.replace(/^#\/?/, '') || 'services';
  const page = path.split('/')[0];
  for (const a of document.querySelectorAll('nav a')) {
    a.classList.toggle('active', a.dataset.page === page || (page === 'acl' && a.dataset.page === (path.startsWith('acl/policies') ? 'acl-policies' : 'acl')));
  }
  for (const [re, fn] of routes) {
    const m = path.match(re);
    if (m) { fn(current.signal, m); return; }
  }
  render(app, h('h1', {}, 'Not found'), h('p', {}, h('a', { href: '#/services' }, 'Back to services')));
}

function updateNav() {
  for (const a of document.querySelectorAll('[data-acl]')) a.hidden = !settings.ACLsEnabled;
  const link = document.getElementById('login-link');
  link.textContent = token() ? 'Token' : 'Log in';
}

async function start() {
  try {
    settings = await get('settings.json');
  } catch (e) { showError(e); }
  document.getElementById('dc').textContent = settings.Datacenter || '';
  updateNav();
  window.addEventListener('hashchange', route);
  route();
}

start();
// request is re-exported for the browser console.
window.tribune = { request };
