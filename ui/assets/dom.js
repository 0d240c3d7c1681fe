// h builds an element: h('a', {href: '#/x', class: 'name'}, 'text', child).
// Text is always set as text, never parsed as HTML.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'value') el.value = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// render replaces root's content.
export function render(root, ...children) {
  root.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
}

export function tags(list) {
  if (!list || list.length === 0) return null;
  return h('span', { class: 'tags' }, list.map((t) => h('span', { class: 'tag' }, t)));
}

export function badge(status) {
  return h('span', { class: `badge ${status}`, 'data-status': status }, status);
}

// worst is the aggregated status of checks, as the API computes it.
export function worst(checks) {
  let s = 'passing';
  for (const c of checks || []) {
    if (c.Status === 'critical' || c.Status === 'maintenance') return 'critical';
    if (c.Status === 'warning') s = 'warning';
  }
  return s;
}

export function checkItem(c) {
  return h('div', { class: 'check', 'data-check': c.CheckID },
    badge(c.Status), ' ', h('strong', {}, c.Name || c.CheckID),
    c.ServiceName ? h('span', { class: 'meta' }, ` (service ${c.ServiceName})`) : null,
    c.Notes ? h('div', { class: 'meta' }, c.Notes) : null,
    c.Output ? h('pre', { class: 'output' }, c.Output) : null);
}
